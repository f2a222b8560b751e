"""Columnar tissue: column receptive fields against spheres on a phantom of tall instances.

Trains ``configs/phantom.py`` on a phantom whose instances are upright cylinders
(``data.overrides.instance_height_um``, one layer side by side; ``--instances`` of them) twice: with
spheres (diameter ``--diameter``, stride ``d / 2``) and with ``grid.shape = "column"`` (same diameter,
stride ``--column_stride``, one layer of columns spanning the depth). Neither grid reads the phantom's
lattice (``grid.origin`` unset). Reports domain ARI against the planted instances,
motif accuracy, filters used and forecast MSE at h1 / h5 against the best baseline.

Usage::

    python benchmarks/columns.py --height 80 --instances 64 --out runs/columns --json columns.json
"""

from __future__ import annotations

import argparse
import json
import os

from absl import logging

from mesojax import config as config_lib
from mesojax import evaluate, train

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "phantom.py")


def run(shape: str, args: argparse.Namespace, out: str, overrides: dict) -> dict:
    """One training run; its recovery and forecast summary."""
    stride = args.column_stride if shape == "column" else args.diameter / 2
    cfg = config_lib.load_config_file(CONFIG, **{
        "data.overrides.instance_height_um": args.height, "data.overrides.n_instances": args.instances,
        "grid.shape": shape, "grid.diameter_um": args.diameter, "grid.stride_um": stride, "grid.origin": None,
        **overrides})
    return run_summary(cfg, os.path.join(out, shape))


def run_summary(cfg, workdir: str) -> dict:
    """Train `cfg` in `workdir` unless it finished there before; its phantom recovery and its forecast MSE
    at h1 and h5 with the best baseline's (``best_h1``, ``best_h5``: ``[name, MSE]``)."""
    path = os.path.join(workdir, "metrics.json")
    if not os.path.exists(path):
        train.run(cfg, workdir)
    with open(path) as f:
        res = json.load(f)
    fc = res["forecast"]
    best = {h: evaluate.best_baseline(fc, h) for h in (0, 4)}
    return {"domain_ari": res["truth"]["domain_ari"], "motif_accuracy": res["truth"]["motif_accuracy"],
            "filters_used": res["truth"]["filters_used"], "n_domains": res["truth"]["n_domains"],
            "mse_h1": fc["model"]["mse"][0], "best_h1": [best[0], fc[best[0]]["mse"][0]],
            "mse_h5": fc["model"]["mse"][4], "best_h5": [best[4], fc[best[4]]["mse"][4]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--height", type=float, default=80.0, help="instance height (µm)")
    parser.add_argument("--instances", type=int, default=64, help="columnar instances (one layer)")
    parser.add_argument("--diameter", type=float, default=40.0, help="receptive-field diameter (µm)")
    parser.add_argument("--column_stride", type=float, default=10.0, help="column lattice stride (µm)")
    parser.add_argument("--out", required=True, help="folder for the two runs (resumable)")
    parser.add_argument("--steps", type=int, default=None, help="train.steps (default: the config's)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    logging.set_verbosity(logging.WARNING)
    overrides = {} if args.steps is None else {"train.steps": args.steps}
    result = {shape: run(shape, args, args.out, overrides) for shape in ("sphere", "column")}
    for shape, r in result.items():
        print(f"{shape:7s} ARI {r['domain_ari']:.3f}  motif acc {r['motif_accuracy']:.3f}  filters {r['filters_used']}"
              f"  domains {r['n_domains']}  MSE h1 {r['mse_h1']:.4f} (best baseline {r['best_h1'][1]:.4f})"
              f"  h5 {r['mse_h5']:.4f} ({r['best_h5'][1]:.4f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
