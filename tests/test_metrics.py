"""Tests for mesojax.metrics: forecast skill per horizon, ARI, motif matching, filter usage, decoders."""

import jax.numpy as jnp
import numpy as np
import pytest

from mesojax import baselines as B
from mesojax import metrics as M
from mesojax.data import ValidationError

N = 3


@pytest.fixture(scope="module")
def ar_data():
    """Two stationary AR(1) recordings (train, test) and the fitted AR(2) forecaster."""
    rng = np.random.default_rng(0)

    def sim(t):
        x = np.zeros((t, N))
        for s in range(1, t):
            x[s] = 0.2 + 0.8 * x[s - 1] + rng.normal(size=N)
        return x.astype(np.float32)

    train, test_a, test_b = sim(600), sim(60), sim(45)
    f = B.make_baseline("ar", order=2)
    return f, f.fit(train), [test_a, test_b]


def manual_metrics(f, params, traces, horizons, stride=1):
    """Reference: python loop over starts and steps, NaN targets dropped, SST around the target mean."""
    h_max = max(horizons)
    preds, targs = {h: [] for h in horizons}, {h: [] for h in horizons}
    for x in traces:
        for t in range(f.history - 1, len(x) - h_max, stride):
            window = jnp.asarray(x[t - f.history + 1 : t + 1])
            for h in range(1, h_max + 1):
                nxt = f.step(params, window)
                window = jnp.concatenate([window[1:], nxt[None]])
                if h in horizons:
                    preds[h].append(np.asarray(nxt))
                    targs[h].append(x[t + h])
    out = {"mse": [], "r2": [], "r2_per_neuron": []}
    for h in horizons:
        p, y = np.array(preds[h], np.float64), np.array(targs[h], np.float64)
        ok = np.isfinite(y)
        err = np.where(ok, p - np.where(ok, y, 0), 0) ** 2
        ybar = np.nansum(y, 0) / ok.sum(0)
        sst = np.where(ok, y - ybar, 0) ** 2
        out["mse"].append(err.sum() / ok.sum())
        out["r2"].append(1 - err.sum() / sst.sum())
        out["r2_per_neuron"].append(1 - err.sum(0) / sst.sum(0))
    return {k: np.array(v) for k, v in out.items()}


@pytest.mark.parametrize("stride, chunk_size", [(1, None), (2, 7)])
def test_forecast_metrics_vmap_equals_python_loop(ar_data, stride, chunk_size):
    f, params, tests = ar_data
    horizons = (1, 2, 5)
    got = M.forecast_metrics(
        f.step, params, tests, history=f.history, horizons=horizons, stride=stride, chunk_size=chunk_size
    )
    want = manual_metrics(f, params, tests, horizons, stride)
    np.testing.assert_allclose(got["mse"], want["mse"], rtol=1e-4)
    np.testing.assert_allclose(got["r2"], want["r2"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["r2_per_neuron"], want["r2_per_neuron"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["r2_median"], np.median(want["r2_per_neuron"], 1), rtol=1e-4, atol=1e-5)
    n_starts = sum(len(range(f.history - 1, len(x) - 5, stride)) for x in tests)
    assert int(got["n_starts"]) == n_starts
    np.testing.assert_array_equal(got["n_targets"], [n_starts * N] * 3)


def test_nan_targets_are_masked(ar_data):
    f, params, tests = ar_data
    holey = [x.copy() for x in tests]
    holey[0][20, 1] = np.nan  # a target (and an input, filled with the training mean)
    holey[1][44, :] = np.nan  # the last frame: a target of the final starts only
    got = M.forecast_metrics(f.step, params, holey, history=f.history, horizons=(1, 3))
    want = manual_metrics(f, params, holey, (1, 3))
    assert np.isfinite(got["mse"]).all() and np.isfinite(got["r2"]).all()
    np.testing.assert_allclose(got["mse"], want["mse"], rtol=1e-4)
    np.testing.assert_allclose(got["r2"], want["r2"], rtol=1e-4)
    clean = M.forecast_metrics(f.step, params, tests, history=f.history, horizons=(1, 3))
    assert (got["n_targets"] < clean["n_targets"]).all()


def test_nan_target_that_no_start_scores_leaves_metrics_unchanged(ar_data):
    """A NaN in the first frame (never a target, an input only of the first start) changes nothing for
    the mean baseline, which ignores its inputs."""
    f = B.make_baseline("mean")
    params = f.fit(ar_data[2][0])
    x = ar_data[2][0]
    holey = x.copy()
    holey[0, 0] = np.nan
    a = M.forecast_metrics(f.step, params, x, history=1, horizons=(1, 2))
    b = M.forecast_metrics(f.step, params, holey, history=1, horizons=(1, 2))
    for key in ("mse", "mse_per_neuron", "n_targets"):
        np.testing.assert_array_equal(a[key], b[key])
    # R² only moves by float rounding (the SST reference shift is the nanmean of all frames).
    np.testing.assert_allclose(a["r2_per_neuron"], b["r2_per_neuron"], atol=1e-6)


def _holey(tests):
    """The test recordings with missing samples: single targets, a whole frame, and a run of one neuron."""
    holey = [x.copy() for x in tests]
    holey[0][20, 1] = np.nan
    holey[1][44, :] = np.nan
    holey[1][5:15, 2] = np.nan
    return holey


def _select(params, columns):
    """Per-neuron baseline parameters (leading axis N) of `columns` only."""
    return type(params)(*(a[np.asarray(columns)] for a in params))


@pytest.mark.parametrize("baseline", ["persistence", "ar"])
@pytest.mark.parametrize("columns", [[0, 2], [1], np.array([True, False, True])], ids=["pair", "one", "mask"])
@pytest.mark.parametrize("holes", [False, True], ids=["complete", "nan"])
def test_pool_neurons_equals_metrics_of_those_columns_alone(ar_data, baseline, columns, holes):
    f, params, tests = ar_data
    if baseline == "persistence":
        f = B.make_baseline("persistence")
        params = f.fit(tests)
    traces = _holey(tests) if holes else tests
    horizons = (1, 3)
    full = M.forecast_metrics(f.step, params, traces, history=f.history, horizons=horizons)
    pooled = M.pool_neurons(full, columns)
    alone = M.forecast_metrics(f.step, _select(params, columns), [x[:, columns] for x in traces],
                               history=f.history, horizons=horizons)
    np.testing.assert_array_equal(pooled["horizons"], alone["horizons"])
    np.testing.assert_array_equal(pooled["n_targets"], alone["n_targets"])
    assert int(pooled["n_starts"]) == int(alone["n_starts"])
    for key in ("mse", "r2", "r2_median"):
        assert np.isfinite(pooled[key]).all(), key
        np.testing.assert_allclose(pooled[key], alone[key], rtol=1e-5, atol=1e-7, err_msg=key)
    if holes:
        clean_full = M.forecast_metrics(f.step, params, tests, history=f.history, horizons=horizons)
        clean = M.pool_neurons(clean_full, columns)
        assert (pooled["n_targets"] < clean["n_targets"]).all()


def test_pool_neurons_of_all_columns_is_the_pooled_result(ar_data):
    f, params, tests = ar_data
    full = M.forecast_metrics(f.step, params, _holey(tests), history=f.history, horizons=(1, 3))
    pooled = M.pool_neurons(full, np.arange(N))
    for key in ("mse", "r2", "r2_median", "n_targets"):
        np.testing.assert_allclose(pooled[key], full[key], rtol=1e-12, err_msg=key)


def test_persistence_high_on_random_walk_and_mean_near_zero_on_noise():
    rng = np.random.default_rng(1)
    walk = np.cumsum(rng.normal(size=(2000, 8)), 0).astype(np.float32)
    f = B.make_baseline("persistence")
    m = M.forecast_metrics(f.step, f.fit(walk[:1000]), walk[1000:], history=1, horizons=(1, 10))
    assert m["r2"][0] > 0.9 and m["r2_median"][0] > 0.9
    assert m["r2"][1] < m["r2"][0]

    noise = rng.normal(size=(4000, 8)).astype(np.float32)
    f = B.make_baseline("mean")
    params = f.fit(noise[:2000])
    m = M.forecast_metrics(f.step, params, noise[2000:], history=1, horizons=(1, 10))
    assert np.all(np.abs(m["r2"]) < 0.01) and np.all(m["r2"] <= 0)
    np.testing.assert_allclose(m["mse"], 1.0, atol=0.05)
    # Around the training mean, the mean baseline's SSE is its SST: R² is exactly 0.
    skill = M.forecast_metrics(
        f.step, params, noise[2000:], history=1, horizons=(1,), baseline_mean=np.asarray(params.mean)
    )
    np.testing.assert_allclose(skill["r2"], 0.0, atol=1e-6)


def test_fill_replaces_nan_inputs_for_models_without_nan_handling(ar_data):
    x = ar_data[2][0].copy()
    x[10, 2] = np.nan

    def raw_step(params, history):  # a "model" with no NaN handling of its own
        return 0.5 * history[-1]

    raw = M.forecast_metrics(raw_step, None, x, history=1, horizons=(1,))
    assert np.isnan(raw["mse"][0])  # a NaN prediction of an observed target is never hidden
    filled = M.forecast_metrics(raw_step, None, x, history=1, horizons=(1,), fill=np.zeros(N))
    assert np.isfinite(filled["mse"][0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(horizons=(0, 1)), "need horizons ≥ 1"),
        (dict(horizons=(100,)), "no recording has the 101 frames"),
        (dict(baseline_mean=np.zeros(2)), r"field 'baseline_mean'.*expected shape \[3\]"),
        (dict(stride=0), "field 'stride'"),
    ],
)
def test_forecast_metrics_bad_input(ar_data, kwargs, match):
    f, params, tests = ar_data
    with pytest.raises(ValidationError, match=match):
        M.forecast_metrics(f.step, params, tests[0], history=1, **kwargs)


def test_mse_and_r2_primitives():
    y = jnp.array([[1.0, 10.0], [2.0, jnp.nan], [3.0, 30.0]])
    p = jnp.array([[1.0, 10.0], [2.0, 0.0], [4.0, 20.0]])
    assert float(M.mse(y, p)) == pytest.approx((1 + 100) / 5)
    per = M.r2_score(y, p, per_column=True)
    np.testing.assert_allclose(per, [1 - 1 / 2, 1 - 100 / 200])
    assert float(M.r2_score(y, p)) == pytest.approx(1 - 101 / 202)
    assert np.isnan(float(M.r2_score(jnp.ones(4), jnp.ones(4))))  # zero variance: undefined


# ----------------------------------------------------------------------------- ARI
def test_ari_hand_computed_example():
    # Contingency [[2, 1, 0], [0, 1, 2]]: Σ C(n_ij) = 2, Σ C(a) = 6, Σ C(b) = 3, C(6) = 15, E = 1.2.
    assert M.adjusted_rand_index([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]) == pytest.approx(0.8 / 3.3)


def test_ari_properties():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 300)
    assert M.adjusted_rand_index(a, a) == 1.0
    relabel = np.array([7, 3, 9, 1, 0])[a]
    assert M.adjusted_rand_index(a, relabel) == pytest.approx(1.0)
    assert M.adjusted_rand_index(a.astype(str), relabel) == pytest.approx(1.0)  # any label dtype
    b = rng.integers(0, 4, 300)
    assert M.adjusted_rand_index(a, b) == pytest.approx(M.adjusted_rand_index(b, a))  # symmetric
    perm = rng.permutation(300)
    assert M.adjusted_rand_index(a[perm], b[perm]) == pytest.approx(M.adjusted_rand_index(a, b))
    random = [M.adjusted_rand_index(a, rng.integers(0, 5, 300)) for _ in range(20)]
    assert abs(np.mean(random)) < 0.01 and max(np.abs(random)) < 0.05
    noisy = np.where(rng.random(300) < 0.2, rng.integers(0, 5, 300), a)
    assert 0.3 < M.adjusted_rand_index(a, noisy) < 1.0
    assert M.adjusted_rand_index([0, 0, 0], [1, 1, 1]) == 1.0  # both trivial
    with pytest.raises(ValidationError, match="labels_pred"):
        M.adjusted_rand_index([0, 1], [0, 1, 2])


# ----------------------------------------------------------------------------- motif matching
def test_hungarian_recovers_planted_filter_of_each_motif():
    rng = np.random.default_rng(0)
    motif = rng.integers(0, 3, 600)
    planted = np.array([4, 0, 2])  # motif k is computed by filter planted[k]; filters 1, 3 are spare
    filt = planted[motif].copy()
    flip = rng.random(600) < 0.1
    filt[flip] = rng.integers(0, 5, flip.sum())
    m = M.match_filters_to_motifs(filt, motif)
    np.testing.assert_array_equal(m.assignment, planted)
    np.testing.assert_array_equal(m.majority, planted)
    assert m.accuracy == pytest.approx(np.mean(filt == planted[motif]))
    assert m.all_distinct and m.all_matched
    assert m.contingency.shape == (3, 5) and m.contingency.sum() == 600
    np.testing.assert_allclose(m.purity, [np.mean(filt[motif == k] == planted[k]) for k in range(3)])


def test_hungarian_reports_collapsed_and_unmatched_motifs():
    # Motifs 0 and 1 both mostly on filter 0: majority filters collide, Hungarian still gives distinct ones.
    filt = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    motif = np.array([0, 0, 0, 1, 1, 1, 1, 2])
    m = M.match_filters_to_motifs(filt, motif)
    assert not m.all_distinct and not m.all_matched  # 3 motifs, only 2 filters
    assert (m.assignment == -1).sum() == 1
    assert m.accuracy == pytest.approx(4 / 8)  # contingency [[3, 0], [3, 1], [0, 1]]: best matching sums to 4


def test_filters_used():
    u = M.filters_used([50.0, 0.1, 30.0, 0.0, 20.0], threshold=0.05)
    assert u.n_used == 3
    np.testing.assert_array_equal(u.used, [True, False, True, False, True])
    assert u.fraction.sum() == pytest.approx(1.0)
    assert M.filters_used(np.zeros(4)).n_used == 0
    with pytest.raises(ValidationError, match="negative"):
        M.filters_used([1.0, -1.0])


# ----------------------------------------------------------------------------- decoders
def test_lda_decoder_on_separable_modes():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 10)) * 3
    labels = rng.integers(0, 3, 900)
    x = centers[labels] + rng.normal(size=(900, 10))
    x[5, 2] = np.nan  # filled with the training mean
    labels[:10] = -1  # unknown mode: skipped
    dec = M.linear_decoder(x[:600], labels[:600], discrete=True)
    out = M.decoder_metrics(dec, x[600:], labels[600:])
    assert out["accuracy"] > 0.97 and out["balanced_accuracy"] > 0.97
    assert out["n"] == 300
    shuffled = M.decoder_metrics(dec, x[600:], rng.permutation(labels[600:]))
    assert shuffled["accuracy"] < 0.5


@pytest.mark.parametrize("shrinkage", [0.1, 0.5, 1.0])
def test_lda_with_more_neurons_than_frames_solves_the_same_shrunk_covariance(shrinkage):
    """With N > T the weights come from a [T, T] solve (Woodbury); they equal the [N, N] solve of
    Σ = (1 - α) RᵀR / dof + α (tr / N) I."""
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 40)
    x = rng.normal(size=(3, 120))[labels] + rng.normal(size=(40, 120))
    dec = M.linear_decoder(x, labels, discrete=True, shrinkage=shrinkage)
    means = np.stack([x[labels == c].mean(0) for c in range(3)])
    resid = x - means[labels]
    cov = resid.T @ resid / (40 - 3)
    cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / 120 * np.eye(120)
    np.testing.assert_allclose(dec.weight, np.linalg.solve(cov, means.T), rtol=1e-6, atol=1e-9)


def test_ridge_decoder_on_linear_behaviour_with_missing_values():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(800, 6))
    w = rng.normal(size=(6, 2))
    y = x @ w + 1.0 + 0.1 * rng.normal(size=(800, 2))
    y[::7, 0] = np.nan
    dec = M.linear_decoder(x[:600], y[:600])
    np.testing.assert_allclose(dec.weight, w, atol=0.05)
    np.testing.assert_allclose(dec.intercept, 1.0, atol=0.05)
    out = M.decoder_metrics(dec, x[600:], y[600:])
    assert out["r2"] > 0.98 and out["r2_per_output"].shape == (2,)
    one = M.linear_decoder(x[:600], y[:600, 1], lam=0.0)  # [T] behaviour, given λ
    assert M.decode(one, x[600:]).shape == (200, 1)


def test_accuracy_and_balanced_accuracy():
    y = np.array([0, 0, 0, 0, 1, -1])
    p = np.array([0, 0, 0, 0, 0, 1])
    assert M.accuracy(y, p) == pytest.approx(4 / 5)
    assert M.balanced_accuracy(y, p) == pytest.approx((1.0 + 0.0) / 2)


@pytest.mark.parametrize("discrete", [False, True])
def test_decoder_bad_input(discrete):
    x = np.ones((10, 3))
    y = np.zeros(9, int)
    with pytest.raises(ValidationError, match="does not match train_x length 10"):
        M.linear_decoder(x, y, discrete=discrete)
