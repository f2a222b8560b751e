"""C. elegans cross-validation: leave one animal out, one-shot transfer to it, and held-out time.

The benchmark that decides modelling defaults (issue 11). For each of the five shared animals in turn,
``configs/celegans.py`` trains on the other four (one disjoint-union circuit) and transfers the frozen
basis to the held-out one (refit on its first 70 %, scored on its last 20 %). Every fold is a normal run
in ``<out>/<animal>/`` (resumable: an interrupted benchmark continues where it stopped), so its
``metrics.json``, figures and partition stay available.

Reported, per fold and pooled over the five folds (pooled MSE = Σ SSE / Σ targets; pooled R² =
1 - Σ SSE / Σ SST, each fold's SST recovered as SSE / (1 - R²)):

* ``held_out_animal``: forecast MSE and R² per horizon 1..10 for the model and every baseline, the best
  baseline per horizon, and the model's MSE relative to it (< 1: the model wins);
* ``held_out_time``: the same on the last 20 % of the four training animals;
* ``behaviour``: the held-out animal's readout R² and reversal balanced accuracy against the ridge/LDA
  decoder (mean over folds).

Any config field can be overridden for all folds (``--set model.use_synapses=True``), so an option is
judged by running the benchmark with and without it.

Usage::

    python benchmarks/celegans_cv.py --out runs/cv --json cv.json
    python benchmarks/celegans_cv.py --out runs/cv-syn --set model.use_synapses=True --folds 2022-07-27-45
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from absl import logging  # noqa: E402

from mesojax import config as config_lib  # noqa: E402
from mesojax import evaluate, train  # noqa: E402

CONFIG = os.path.join(os.path.dirname(HERE), "configs", "celegans.py")
ANIMALS = ("2022-07-26-31", "2022-07-26-38", "2022-07-27-31", "2022-07-27-38", "2022-07-27-45")


def run_fold(animal: str, out: str, overrides: dict) -> dict:
    """Train on the four other animals, transfer to `animal`; the fold's ``metrics.json`` as a dict."""
    workdir = os.path.join(out, animal)
    path = os.path.join(workdir, "metrics.json")
    if os.path.exists(path):  # finished earlier: the run is deterministic, reuse it
        with open(path) as f:
            return json.load(f)
    cfg = config_lib.load_config_file(CONFIG, **{
        "data.animals": tuple(a for a in ANIMALS if a != animal), "transfer.animals": (animal,), **overrides})
    train.run(cfg, workdir)
    with open(path) as f:
        return json.load(f)


def pool(tables: list[dict]) -> dict:
    """Pool forecast tables (``name -> {mse, r2, n_targets}``) over folds: MSE and R² per horizon."""
    out = {}
    for name in tables[0]:
        mse = np.array([t[name]["mse"] for t in tables])
        n = np.array([t[name]["n_targets"] for t in tables], float)
        r2 = np.array([t[name]["r2"] for t in tables])
        sse = mse * n
        sst = sse / np.maximum(1.0 - r2, 1e-12)
        out[name] = {"mse": (sse.sum(0) / n.sum(0)).tolist(), "r2": (1.0 - sse.sum(0) / sst.sum(0)).tolist()}
    return out


def compare(table: dict) -> dict:
    """Best baseline per horizon and the model's MSE relative to it."""
    baselines = [n for n in table if n not in evaluate.MODEL_KEYS]
    model = np.array(table["model"]["mse"])
    stack = np.array([table[n]["mse"] for n in baselines])
    best = stack.argmin(0)
    return {"best_baseline": [baselines[b] for b in best],
            "model_over_best": (model / stack.min(0)).tolist(),
            "beats_all": (model < stack.min(0)).tolist()}


def behaviour(results: dict) -> dict:
    """Readout vs decoder on one animal: pooled R², and reversal balanced accuracy where present."""
    beh = results.get("behaviour", {})
    out = {k: beh[k] for k in ("model_r2", "linear_decoder_r2") if k in beh}
    for name, entry in beh.get("targets", {}).items():
        target = name.rsplit("/", 1)[-1]  # "<animal>/reversal" -> "reversal": pooled across folds
        if "model_balanced_accuracy" in entry:
            out[f"{target}_model_bal_acc"] = entry["model_balanced_accuracy"]
            out[f"{target}_decoder_bal_acc"] = entry["linear_decoder_balanced_accuracy"]
        out[f"{target}_model_r2"] = entry["model_r2"]
        out[f"{target}_decoder_r2"] = entry["linear_decoder_r2"]
    return out


def _table(title: str, pooled: dict, cmp: dict) -> str:
    hs = range(len(pooled["model"]["mse"]))
    lines = [f"\n{title} (MSE per horizon; R² in brackets)", "forecaster".ljust(12) + "".join(f"h={h + 1:<13}" for h in hs)]
    for name, m in pooled.items():
        lines.append(name.ljust(12) + "".join(f"{m['mse'][h]:.4f} ({m['r2'][h]:+.3f}) " for h in hs))
    lines.append("model/best".ljust(12) + "".join(f"{r:<14.3f}" for r in cmp["model_over_best"]))
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the folds' runs (resumable)")
    p.add_argument("--folds", nargs="+", default=list(ANIMALS), help="held-out animals (default: all five)")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="config overrides for every fold")
    p.add_argument("--json", default=None, help="write the per-fold and pooled results here")
    args = p.parse_args()
    logging.set_verbosity(logging.INFO)
    overrides = dict((k, config_lib.literal(v)) for k, v in (s.split("=", 1) for s in args.set))
    folds = {}
    for animal in args.folds:
        logging.info("fold: %s held out", animal)
        folds[animal] = run_fold(animal, args.out, overrides)
    animal_tables = [folds[a]["transfer"][a]["forecast"] for a in args.folds]
    time_tables = [folds[a]["forecast"] for a in args.folds]
    result = {"overrides": overrides, "folds": {}, "pooled": {}}
    for a, at, tt in zip(args.folds, animal_tables, time_tables):
        result["folds"][a] = {"held_out_animal": compare(at), "held_out_time": compare(tt),
                              "behaviour": behaviour(folds[a]["transfer"][a])}
    for key, tables in (("held_out_animal", animal_tables), ("held_out_time", time_tables)):
        pooled = pool(tables)
        result["pooled"][key] = {"forecast": pooled, **compare(pooled)}
        print(_table(f"{key}, pooled over {len(tables)} folds", pooled, result["pooled"][key]))
    beh = [result["folds"][a]["behaviour"] for a in args.folds]
    result["pooled"]["behaviour"] = {k: float(np.mean([b[k] for b in beh if k in b])) for k in beh[0]}
    print("\nbehaviour (held-out animals, mean over folds):", json.dumps(result["pooled"]["behaviour"], indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
