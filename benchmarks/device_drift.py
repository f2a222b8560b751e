"""How far 1 and 4 devices drift apart in training, against a 1e-7 nudge of the learning rate on 1 device.

Trains ``configs/phantom_tiny.py`` for ``--steps`` steps three times in one process (4 forced host CPU
devices): on one device; on four devices (``--space 1``: the batch split along ``data``; ``--space 4``:
locations split along ``space``); and on one device with the learning rate times ``1 + 1e-7``. It prints
the relative loss difference to the one-device run at a few steps, and how many neurons end in a
different (location, filter) pair. If four devices drift no more than the nudged run, the device count
changes only the order of float reductions: nothing in the math depends on the mesh.

Usage::

    python benchmarks/device_drift.py --steps 400 --space 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import logging  # noqa: E402

from mesojax import config, evaluate, train  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "phantom_tiny.py")


def fit(steps: int, devices: int, space: int, lr_scale: float, root: str) -> tuple[np.ndarray, np.ndarray]:
    """Losses ``[steps]`` and the hard (location, filter) pair of every neuron after training."""
    cfg = config.load_config_file(CONFIG, **{"train.steps": steps, "train.log_every": 1,
                                             "train.checkpoint_every": steps, "mesh.space": space})
    with cfg.unlocked():
        cfg.optim.learning_rate = float(cfg.optim.learning_rate) * lr_scale
    workdir = tempfile.mkdtemp(dir=root)
    mesh = train.make_mesh(space if devices > 1 else 1, jax.devices()[:devices])
    exp, state = train.train(cfg, workdir, mesh=mesh)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        losses = np.array([json.loads(line)["loss"] for line in f])
    part = evaluate.partition(exp.spec, state.params, exp.inputs, evaluate.final_temperatures(cfg))
    return losses, part["location"].astype(np.int64) * exp.spec.n_filters + part["filter"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--space", type=int, default=1, choices=(1, 4), help="mesh.space of the 4-device run")
    args = parser.parse_args()
    logging.set_verbosity(logging.WARNING)
    root = tempfile.mkdtemp(prefix="device-drift-")
    try:
        base = fit(args.steps, 1, 1, 1.0, root)
        runs = {"4 devices": fit(args.steps, 4, args.space, 1.0, root),
                "1 device, lr x (1 + 1e-7)": fit(args.steps, 1, 1, 1.0 + 1e-7, root)}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    marks = [s for s in (20, 50, 100, 200, 400, 1000) if s <= args.steps]
    print("relative loss difference to 1 device (max up to step):", "  ".join(f"{s:>8d}" for s in marks))
    for name, (losses, domain) in runs.items():
        rel = np.abs(losses - base[0]) / np.abs(base[0])
        print(f"{name:28s}", "  ".join(f"{rel[:s].max():8.1e}" for s in marks),
              f"| neurons in another pair: {int((domain != base[1]).sum())}, domains {len(np.unique(domain))} "
              f"(1 device: {len(np.unique(base[1]))})")


if __name__ == "__main__":
    main()
