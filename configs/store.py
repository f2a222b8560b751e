"""Your own circuit from a store (``scripts/import_data.py`` writes one): the template config.

Run:
    python scripts/import_data.py --out stores/mine --neurons neurons.csv --synapses synapses.csv \\
        --traces traces.npy --neuron_ids ids.csv --rate_hz 30
    python scripts/train.py --config configs/store.py --config.data.path=stores/mine --workdir runs/mine

The store holds ``DIR/connectome`` and ``DIR/recording`` (``DIR/recording-<name>`` for more recordings of
the same circuit: ``--config.data.recording=<name>``). Trace columns are registered to connectome
neurons by id (``--config.data.register=position`` with ``--config.data.tol_um`` matches positions);
unregistered sources stay in the model without position. The traces are read from disk window by
window. The grid and model settings are the defaults of ``mesojax/config.py``: set
``--config.grid.diameter_um`` to your tissue's scale (a receptive field should hold a few to a few
tens of neurons). Expected cost: like the phantom of the same size (BENCHMARKS.md, train_scale);
results depend on your data.
"""

import ml_collections

from mesojax.config import base_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = base_config()
    c.data.source = "store"
    c.data.path = ""  # the store directory: --config.data.path=DIR
    c.data.recording = ""  # "" reads DIR/recording; a name reads DIR/recording-<name>
    c.data.register = "id"  # or "position"
    c.data.tol_um = 2.0  # registration by position: largest distance (µm)
    c.train.steps = 1000
    return c.lock()
