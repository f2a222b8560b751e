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
