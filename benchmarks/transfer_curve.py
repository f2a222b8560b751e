"""One-shot learning curves: a frozen basis against scratch and baselines as the new circuit's data grows.

For every held-out circuit, :func:`mesojax.analysis.learning_curve` refits the model on 2, 5, 10, 30 and
70 % of its recording with the trained basis frozen (``transfer``), trains the same model from scratch on
those frames (``scratch``), fits every baseline on them, and scores all on the same last 20 %.

* ``--dataset celegans``: each of the five animals held out in turn. The source model of a fold is the
  run of ``benchmarks/celegans_cv.py`` in ``--source/<animal>`` (restored, not retrained; missing folds
  are trained there first), trained on the four other animals.
* ``--dataset phantom``: the source is a finished run of ``configs/phantom.py`` (``--source``, e.g. README
  command 1's ``runs/phantom``); the new circuit is another phantom with the same motif types and a
  different layout (``data.seed = --seed``).

Reported per fraction: test MSE at h1 and h5 of transfer, scratch and the best baseline, pooled over
folds (Σ MSE·targets / Σ targets), each also relative to persistence's (every size is normalised with
its own training frames; persistence does not learn, so the ratios compare across sizes), and how many
folds the transfer beats scratch at h1.

Usage::

    python benchmarks/transfer_curve.py --dataset celegans --source runs/cv --out runs/curve --json curve.json
    python benchmarks/transfer_curve.py --dataset phantom --source runs/phantom --out runs/curve-ph

With ``--json F.json`` the pooled curve is also drawn in ``F.png`` (:func:`mesojax.report.figure_learning_curve`);
with ``--report`` each source run's curve is added to its own ``metrics.json`` and ``report.html``
(:func:`mesojax.train.add_to_report`).
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

from mesojax import analysis, train, transfer  # noqa: E402

ANIMALS = ("2022-07-26-31", "2022-07-26-38", "2022-07-27-31", "2022-07-27-38", "2022-07-27-45")


def source_model(folder: str):
    """The finished run in `folder`, restored: its config, experiment and parameters (nothing retrained)."""
    cfg = train.saved_config(folder)
    exp, state = train.train(cfg, folder)
    return cfg, exp, state.params


def celegans_fold(animal: str, args: argparse.Namespace) -> dict:
    folder = os.path.join(args.source, animal)
    if not os.path.exists(os.path.join(folder, "metrics.json")):
        import celegans_cv  # noqa: PLC0415 - the cross-validation's fold, trained where it is missing

        celegans_cv.run_fold(animal, args.source, {})
    cfg, exp, params = source_model(folder)
    return analysis.learning_curve(transfer.transfer_config(cfg, animal), transfer.scratch_config(cfg, animal), params,
                                   exp.recording.behaviour_names, os.path.join(args.out, animal),
                                   fractions=tuple(args.fractions))


def phantom_fold(args: argparse.Namespace) -> dict:
    cfg, exp, params = source_model(args.source)
    scratch = cfg.copy_and_resolve_references()
    with scratch.unlocked():
        scratch.data.seed = args.seed
    return analysis.learning_curve(transfer.frozen_config(cfg, seed=args.seed), scratch, params,
                                   exp.recording.behaviour_names, os.path.join(args.out, f"seed{args.seed}"),
                                   fractions=tuple(args.fractions))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=("celegans", "phantom"), required=True)
    parser.add_argument("--source", required=True, help="celegans: folder of cross-validation folds; phantom: a run")
    parser.add_argument("--out", required=True, help="folder for the curve runs (resumable)")
    parser.add_argument("--folds", nargs="*", default=list(ANIMALS), help="celegans: held-out animals")
    parser.add_argument("--seed", type=int, default=1, help="phantom: the new circuit's seed")
    parser.add_argument("--fractions", nargs="*", type=float, default=list(analysis.LEARNING_FRACTIONS))
    parser.add_argument("--json", default=None)
    parser.add_argument("--report", action="store_true",
                        help="add each source run's curve to its metrics.json and report.html")
    args = parser.parse_args()
    logging.set_verbosity(logging.WARNING)
    curves = ([celegans_fold(a, args) for a in args.folds] if args.dataset == "celegans" else [phantom_fold(args)])
    result = {"folds": curves, "pooled": analysis.pool_curves(curves)}
    p = result["pooled"]
    # MSE over persistence's (persistence does not learn, so sizes compare; < 1: better than no change).
    rel, best = p["relative_to_persistence"], np.asarray(p["best_baseline_mse"]) / np.asarray(p["mse"]["persistence"])
    print("test MSE / persistence's, pooled over folds")
    print(f"{'fraction':>8} {'frames':>7} {'transfer h1':>11} {'scratch h1':>11} {'baseline h1':>11} "
          f"{'transfer h5':>11} {'scratch h5':>11} {'baseline h5':>11}  transfer<scratch (h1, folds)")
    h5 = min(4, len(p["mse"]["transfer"][0]) - 1)
    for k, f in enumerate(p["fractions"]):
        frames = int(np.mean([t[k] for t in p["train_frames"]]))
        row = [rel["transfer"][k][0], rel["scratch"][k][0], best[k][0],
               rel["transfer"][k][h5], rel["scratch"][k][h5], best[k][h5]]
        print(f"{f:>8g} {frames:>7d} " + " ".join(f"{v:>11.4f}" for v in row)
              + f"  {p['transfer_beats_scratch_h1'][k]}/{p['n_folds']}")
    if args.report:  # each source run's own report shows how its basis transfers
        sources = ([os.path.join(args.source, a) for a in args.folds] if args.dataset == "celegans"
                   else [args.source])
        for folder, curve in zip(sources, curves):
            train.add_to_report(folder, learning_curve=curve)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1, default=float)
        from mesojax import report  # noqa: PLC0415 - matplotlib only when a figure is written

        fig = report.figure_learning_curve(result["pooled"])
        if fig is not None:  # None without the persistence baseline
            fig.savefig(os.path.splitext(args.json)[0] + ".png", dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    main()
