"""Retinotopic stimulus and trials on a columnar phantom: each against the way it was done before.

The phantom (``configs/phantom.py`` with ``data.overrides``) has ``--instances`` upright columnar
instances, each driven by its own stimulus channel placed at its centre (``retinotopic_stimulus``, like a
pixel driving its column), recorded as ``--trials`` separate trials (each from a fresh state, clocks
restarting). Column receptive fields; no ``grid.origin``. Whole trials are held out: the last trial is the
test segment (``data.split_by = "trial"``), so every variant is scored on the same frames:

* ``retinotopic``: each field reads the stimulus channels inside it (the default);
* ``whole_stimulus``: every location reads the whole stimulus vector (``data.retinotopic = False``,
  as before stimulus positions existed);
* ``trials_joined``: the training trials joined into one stretch (``data.use_trials = False``): windows
  and baseline fits cross trial boundaries, as when separate movies are concatenated.

Reported per variant: forecast MSE at h1 / h5 against the best baseline (fitted the same way), the h1
MSE of the stimulated neurons (each instance's input unit) and of the others, domain ARI and motif
accuracy.

Usage::

    python benchmarks/retinotopy_trials.py --out runs/retino --json retino.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys

import numpy as np
from absl import logging

from mesojax import config as config_lib
from mesojax.data import synthetic

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from columns import run_summary  # noqa: E402 - the columnar benchmark's run-and-summarise

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "phantom.py")
VARIANTS = {
    "retinotopic": {},
    "whole_stimulus": {"data.retinotopic": False},
    "trials_joined": {"data.use_trials": False},
}


def run(name: str, args: argparse.Namespace) -> dict:
    """One training run (resumable: a finished run is read back); its forecast and recovery summary."""
    cfg = config_lib.load_config_file(CONFIG, **{
        "data.overrides.instance_height_um": args.height, "data.overrides.n_instances": args.instances,
        "data.overrides.retinotopic_stimulus": True, "data.overrides.n_trials": args.trials,
        "data.split_by": "trial", "data.split": (1 - 1 / args.trials, 0.0, 1 / args.trials),
        "grid.shape": "column", "grid.diameter_um": args.diameter, "grid.stride_um": args.column_stride,
        "grid.origin": None, **({"train.steps": args.steps} if args.steps else {}), **VARIANTS[name]})
    workdir = os.path.join(args.out, name)
    out = run_summary(cfg, workdir)
    # The stimulated neurons: the input unit of every instance (the circuit is rebuilt from the config).
    overrides = {k: v for k, v in cfg.data.overrides.items() if v is not None}
    circuit = synthetic.make_circuit(synthetic.preset(cfg.data.preset, seed=cfg.data.seed, **overrides))
    inputs = np.asarray([circuit.motif_params[m]["input_unit"] for m in circuit.motif_names])
    stimulated = circuit.role == inputs[circuit.motif]
    with open(os.path.join(workdir, "per_neuron.csv")) as f:
        model = np.asarray([float(r["model_mse_h1"] or "nan") for r in csv.DictReader(f)])
    out["mse_h1_stimulated"] = float(np.nanmean(model[stimulated]))
    out["mse_h1_other"] = float(np.nanmean(model[~stimulated]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--height", type=float, default=80.0, help="instance height (µm)")
    parser.add_argument("--instances", type=int, default=64, help="columnar instances (one layer)")
    parser.add_argument("--trials", type=int, default=4, help="trials; the last one is the test segment")
    parser.add_argument("--diameter", type=float, default=40.0, help="receptive-field diameter (µm)")
    parser.add_argument("--column_stride", type=float, default=10.0, help="column lattice stride (µm)")
    parser.add_argument("--steps", type=int, default=None, help="train.steps (default: the config's)")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", required=True, help="folder for the runs (resumable)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    logging.set_verbosity(logging.WARNING)
    result = {name: run(name, args) for name in args.variants}
    for name, r in result.items():
        sensory = f"  stimulated h1 {r['mse_h1_stimulated']:.4f}, other {r['mse_h1_other']:.4f}"
        print(f"{name:15s} MSE h1 {r['mse_h1']:.4f} (best baseline {r['best_h1'][1]:.4f})  h5 {r['mse_h5']:.4f} "
              f"({r['best_h5'][1]:.4f}){sensory}  ARI {r['domain_ari']:.3f}  motif acc {r['motif_accuracy']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
