"""Tests for the benchmark scripts' arithmetic (their runs are recorded in BENCHMARKS.md, not tested)."""

import importlib.util
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fold(sse, sst, n):
    return {"mse": (np.asarray(sse) / n).tolist(), "r2": (1 - np.asarray(sse) / np.asarray(sst)).tolist(),
            "n_targets": [n] * len(sse)}


def test_celegans_cv_pools_folds_as_one_set_of_targets():
    cv = _load("celegans_cv")
    folds = [{"model": _fold([2.0, 4.0], [10.0, 10.0], 10), "persistence": _fold([3.0, 3.0], [10.0, 10.0], 10)},
             {"model": _fold([6.0, 9.0], [30.0, 20.0], 30), "persistence": _fold([9.0, 6.0], [30.0, 20.0], 30)}]
    pooled = cv.pool(folds)
    np.testing.assert_allclose(pooled["model"]["mse"], [8.0 / 40, 13.0 / 40])
    np.testing.assert_allclose(pooled["model"]["r2"], [1 - 8.0 / 40, 1 - 13.0 / 30])
    cmp = cv.compare(pooled)
    assert cmp["best_baseline"] == ["persistence", "persistence"]
    np.testing.assert_allclose(cmp["model_over_best"], [8.0 / 12, 13.0 / 9])
    assert cmp["beats_all"] == [True, False]


@pytest.mark.parametrize("power", [1.0, 1.5])
def test_train_scale_fits_the_cost_exponent(power):
    scale = _load("train_scale")
    rows = [{"n_neurons": n, "step_s": 0.01 * n**power} for n in (600, 2500, 10000)] + [{"error": "x"}]
    assert scale.exponent(rows) == pytest.approx(power)
    assert scale.exponent(rows[:1]) is None


def test_phantom_recovery_variants_do_not_read_the_lattice():
    rec = _load("phantom_recovery")
    for name in rec.VARIANTS:
        for seed in (0, 1):
            cfg = rec.variant_config(name, seed)
            assert cfg.seed == cfg.data.seed == seed
            origin = np.asarray(cfg.grid.origin)
            on_lattice = np.allclose(np.mod(origin, rec.SPACING_UM / 2), 0.0)
            assert on_lattice == (name in rec.REFERENCE), (name, origin)
    assert rec.random_origin(0) != rec.random_origin(1)
    cfg = rec.variant_config("unrecorded_50", 0, {"loss.cut": 1.0})
    assert cfg.data.overrides.recorded_fraction == 0.5 and cfg.loss.cut == 1.0


def test_phantom_recovery_scores_and_counts_runs():
    rec = _load("phantom_recovery")

    def metrics(ari, acc, used):
        fc = {name: {"mse": [m, m * 3, 0, 0, m * 4]} for name, m in (("model", 0.2), ("model_hard", 0.2),
                                                                       ("persistence", 0.5), ("masked_var", 0.25))}
        return {"truth": {"domain_ari": ari, "motif_accuracy": acc, "filters_used": used, "planted_k": 4,
                          "n_domains": 50, "at_init": {"motif_accuracy": 0.5}}, "forecast": fc}

    good, bad = rec.summarise(metrics(0.95, 0.92, 4)), rec.summarise(metrics(0.95, 0.92, 5))
    assert good["passes"] and not bad["passes"] and not rec.summarise(metrics(0.85, 1.0, 4))["passes"]
    assert good["best_h1"] == ["masked_var", 0.25] and good["mse_h5"] == pytest.approx(0.8)
    text = rec.table({"lattice-s0": bad, "offset-s0": good, "offset-s1": bad})
    assert "0.500 → 0.920" in text and "1 of 2 counted runs pass (50 %)" in text
