"""Tiny phantom (~200 neurons, 300 frames): the end-to-end test configuration.

Run:
    python scripts/train.py --config configs/phantom_tiny.py --workdir /tmp/mesojax_tiny
Expected: about a minute on 2 CPU cores, mostly compilation; the numbers mean little at this size.
"""

import ml_collections

from mesojax.config import base_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = base_config()
    c.data.preset = "tiny"
    c.model.n_filters = 3
    c.model.basis.max_width = 8
    c.train.steps = 20
    c.train.batch_windows = 4
    c.train.rollout = 3
    c.train.log_every = 5
    c.train.checkpoint_every = 10
    c.optim.warmup_steps = 2
    c.eval.horizons = 5
    c.eval.stride = 4
    c.eval.mlp_steps = 50
    return c.lock()
