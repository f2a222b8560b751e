"""Tests for mesojax.baselines: coefficient recovery, masks, NaN handling, rollout, the MLP strawman."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mesojax import baselines as B
from mesojax.data import ValidationError

N = 4


def simulate_var(weight, intercept, t, noise=0.3, seed=0):
    """x[t+1] = intercept + Σ_k weight[k] x[t-k] + noise."""
    rng = np.random.default_rng(seed)
    p, n, _ = weight.shape
    x = np.zeros((t, n))
    for s in range(p, t):
        x[s] = intercept + sum(weight[k] @ x[s - 1 - k] for k in range(p)) + noise * rng.normal(size=n)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def var_system():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(N, N)) * (rng.random((N, N)) < 0.5)
    np.fill_diagonal(w, 0.5)
    w *= 0.8 / np.max(np.abs(np.linalg.eigvals(w)))
    b = np.array([0.5, -0.2, 0.0, 1.0])
    return w, b, simulate_var(w[None], b, 6000)


@pytest.fixture(scope="module")
def small_traces(var_system):
    return var_system[2][:400]


@pytest.mark.parametrize("order", [1, 2])
def test_ar_recovers_per_neuron_coefficients(order):
    coef = (
        np.array([[0.9], [0.5], [-0.4], [0.2]])
        if order == 1
        else np.array([[0.5, 0.3], [1.2, -0.5], [-0.3, 0.2], [0.1, 0.6]])
    )
    intercept = np.array([1.0, 0.0, -0.5, 2.0])
    weight = np.stack([np.diag(coef[:, k]) for k in range(order)])
    x = simulate_var(weight, intercept, 8000, seed=order)
    params = B.fit_ar(x, order=order)
    np.testing.assert_allclose(params.coef, coef, atol=0.03)
    np.testing.assert_allclose(params.intercept, intercept, atol=0.2)  # noisier where Σa ≈ 1
    np.testing.assert_allclose(params.mean, x.mean(0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shrink_to", ["ar", "zero"])
def test_ridge_var_recovers_weights(var_system, shrink_to):
    w, b, x = var_system
    params = B.fit_ridge_var(x, lam=0.0, shrink_to=shrink_to)
    np.testing.assert_allclose(params.weight[0], w, atol=0.04)
    np.testing.assert_allclose(params.intercept, b, atol=0.06)


def test_ridge_var_lambda_selection_and_ar_centre(small_traces):
    chosen = B.fit_ridge_var(small_traces)
    assert np.isclose(B.DEFAULT_LAM_GRID, float(chosen.lam), rtol=1e-6).sum() == 1
    # λ → ∞ with the AR centre: the VAR becomes the AR(1) baseline (diagonal = AR coefficients, rest 0).
    huge = B.fit_ridge_var(small_traces, lam=1e9, lam_grid=(1e9,), shrink_to="ar")
    ar = B.fit_ar(small_traces)
    np.testing.assert_allclose(np.diag(huge.weight[0]), ar.coef[:, 0], atol=1e-4)
    np.testing.assert_allclose(huge.weight[0] - np.diag(np.diag(huge.weight[0])), 0.0, atol=1e-4)
    zero = B.fit_ridge_var(small_traces, lam=1e9, shrink_to="zero")
    np.testing.assert_allclose(zero.weight, 0.0, atol=1e-4)


def test_masked_var_respects_mask_and_recovers_true_support(var_system):
    w, b, x = var_system
    support = w != 0
    params = B.fit_masked_var(x, support, lam=0.0)
    dense = np.asarray(B.masked_var_dense_weight(params))[0]
    np.testing.assert_allclose(dense, w, atol=0.04)
    # A wrong mask: entries outside it are exactly zero, the allowed ones are fitted.
    mask = np.zeros((N, N), bool)
    mask[0, 1] = mask[2, 3] = True
    wrong = np.asarray(B.masked_var_dense_weight(B.fit_masked_var(x, mask, lam=0.1)))[0]
    allowed = mask | np.eye(N, dtype=bool)
    assert np.all(wrong[~allowed] == 0.0)
    assert np.all(wrong[allowed] != 0.0)
    # The gather step equals the dense VAR step with the same weights.
    hist = jnp.asarray(x[10:11])
    dense_params = B.VARParams(jnp.asarray(dense)[None], params.intercept, params.mean, params.lam)
    np.testing.assert_allclose(
        B.masked_var_step(params, hist), B.var_step(dense_params, hist), rtol=1e-5, atol=1e-5
    )


def test_masked_var_sparse_mask_matches_dense_and_full_mask_matches_var(small_traces):
    import scipy.sparse

    mask = np.eye(N, k=1, dtype=bool)
    a = B.fit_masked_var(small_traces, mask, order=2, lam=0.3)
    s = B.fit_masked_var(small_traces, scipy.sparse.csr_matrix(mask), order=2, lam=0.3)
    np.testing.assert_array_equal(a.coef, s.coef)
    full = B.fit_masked_var(small_traces, np.ones((N, N)), order=2, lam=0.3)
    var = B.fit_ridge_var(small_traces, order=2, lam=0.3)
    np.testing.assert_allclose(B.masked_var_dense_weight(full), var.weight, atol=1e-4)


def test_nan_pairs_are_dropped_like_a_recording_split(small_traces):
    """A NaN frame removes exactly the pairs touching it: same fit as two separate recordings."""
    x = small_traces.copy()
    x[150] = np.nan
    split = [small_traces[:150], small_traces[151:]]
    for fit in (lambda t: B.fit_ar(t, order=2).coef, lambda t: B.fit_ridge_var(t, order=2, lam=0.1).weight):
        np.testing.assert_allclose(fit(x), fit(split), rtol=1e-4, atol=1e-5)


def test_nan_in_one_neuron_only_affects_regressions_that_use_it(small_traces):
    x = small_traces.copy()
    x[50:60, 2] = np.nan
    clean, holey = (np.asarray(B.fit_ar(t).coef) for t in (small_traces, x))
    others = [0, 1, 3]
    np.testing.assert_allclose(holey[others], clean[others], rtol=1e-5)
    assert not np.allclose(holey[2], clean[2])
    # Masked VAR: neuron 0 does not listen to neuron 2, so its regression is untouched.
    mask = np.zeros((N, N), bool)
    mask[1, 2] = True
    m_clean, m_holey = (np.asarray(B.fit_masked_var(t, mask, lam=0.1).coef) for t in (small_traces, x))
    np.testing.assert_allclose(m_holey[[0, 3]], m_clean[[0, 3]], rtol=1e-5)
    assert not np.allclose(m_holey[1], m_clean[1])


@pytest.fixture(scope="module")
def fitted(small_traces):
    mask = np.eye(N, k=1, dtype=bool)
    specs = {
        "persistence": {},
        "mean": {},
        "ar": {"order": 2},
        "ridge_var": {"order": 2},
        "masked_var": {"mask": mask, "order": 3},
        "mlp": {"history": 2, "hidden": (8,), "steps": 50},
    }
    out = {}
    for name, opts in specs.items():
        f = B.make_baseline(name, **opts)
        out[name] = (f, f.fit(small_traces))
    return out


@pytest.mark.parametrize("name", B.BASELINES)
def test_rollout_scan_equals_python_loop(fitted, small_traces, name):
    f, params = fitted[name]
    hist = jnp.asarray(small_traces[20 : 20 + f.history])
    scanned = jax.jit(B.rollout, static_argnums=(0, 3))(f.step, params, hist, 5)
    window, looped = hist, []
    for _ in range(5):
        nxt = f.step(params, window)
        looped.append(nxt)
        window = jnp.concatenate([window[1:], nxt[None]])
    np.testing.assert_allclose(scanned, jnp.stack(looped), rtol=1e-5, atol=1e-5)
    assert scanned.shape == (5, N)


@pytest.mark.parametrize("name", B.BASELINES)
def test_step_fills_nan_inputs_with_training_mean(fitted, small_traces, name):
    f, params = fitted[name]
    hist = np.array(small_traces[30 : 30 + f.history])
    hist[-1, 1] = np.nan
    filled = hist.copy()
    filled[-1, 1] = params.mean[1]
    out = f.step(params, jnp.asarray(hist))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, f.step(params, jnp.asarray(filled)), rtol=1e-6)


def test_persistence_and_mean_steps(fitted, small_traces):
    f, params = fitted["persistence"]
    np.testing.assert_array_equal(f.step(params, jnp.asarray(small_traces[:3])), small_traces[2])
    f, params = fitted["mean"]
    np.testing.assert_allclose(
        f.step(params, jnp.asarray(small_traces[:1])), small_traces.mean(0), rtol=1e-5, atol=1e-6
    )


def test_mlp_learns_nonlinear_map_better_than_linear_baselines():
    """x[t+1] = 0.9·sin(2.5·x[t]) (+ a rotation) is chaotic-ish and poorly linear."""
    rng = np.random.default_rng(0)
    rot = np.array([[0.8, -0.6], [0.6, 0.8]])
    x = np.zeros((3000, 2))
    x[0] = [0.3, -0.2]
    for t in range(2999):
        x[t + 1] = 0.9 * np.sin(2.5 * rot @ x[t]) + 0.02 * rng.normal(size=2)
    x = x.astype(np.float32)
    train, test = x[:2500], x[2500:]
    win, tgt, _ = B.lagged_pairs(test, 1)

    def one_step_mse(f, params):
        pred = jax.vmap(lambda h: f.step(params, h))(jnp.asarray(win))
        return float(jnp.mean((pred - tgt) ** 2))

    scores = {}
    for name, opts in {
        "ridge_var": {},
        "ar": {},
        "mlp": {"hidden": (32,), "steps": 600, "learning_rate": 1e-2},
    }.items():
        f = B.make_baseline(name, **opts)
        scores[name] = one_step_mse(f, f.fit(train))
    assert scores["mlp"] < 0.1 * min(scores["ridge_var"], scores["ar"]), scores


def test_mlp_is_deterministic_in_seed(small_traces):
    kw = dict(hidden=(8,), steps=30)
    a, b = B.fit_mlp(small_traces, seed=3, **kw), B.fit_mlp(small_traces, seed=3, **kw)
    c = B.fit_mlp(small_traces, seed=4, **kw)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert not all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(c)))


def test_lagged_pairs_never_cross_recordings():
    a = np.arange(10, dtype=np.float32).reshape(5, 2)
    b = 100 + np.arange(8, dtype=np.float32).reshape(4, 2)
    win, tgt, pos = B.lagged_pairs([a, b], 2)
    assert win.shape == (3 + 2, 2, 2) and tgt.shape == (5, 2)
    np.testing.assert_array_equal(win[0], a[0:2])
    np.testing.assert_array_equal(tgt[0], a[2])
    np.testing.assert_array_equal(win[3], b[0:2])
    np.testing.assert_array_equal(tgt[-1], b[-1])
    np.testing.assert_allclose(pos, [0, 1 / 3, 2 / 3, 0, 0.5])


def test_make_baseline_history_and_option_checks():
    assert B.make_baseline("ar", order=3).history == 3
    assert B.make_baseline("mlp", history=4).history == 4
    assert B.make_baseline("persistence").history == 1
    assert B.make_baseline("masked_var", mask=np.eye(2), order=2).history == 2
    with pytest.raises(ValueError, match="unknown baseline 'arima'"):
        B.make_baseline("arima")
    with pytest.raises(ValueError, match="bad options"):
        B.make_baseline("ar", hidden=3)
    with pytest.raises(ValueError, match="bad options"):
        B.make_baseline("masked_var")  # the mask is required
    with pytest.raises(ValueError, match="order must be ≥ 1"):
        B.make_baseline("ridge_var", order=0)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda x: B.fit_mean(np.where(np.arange(N) == 2, np.nan, x)), r"neuron \(column\) 2 has no finite"),
        (lambda x: B.fit_ar(np.where(np.arange(len(x))[:, None] == 7, np.inf, x)), r"row 7: infinite value"),
        (lambda x: B.fit_ar([x, x[:, :3]]), r"field 'traces\[1\]'.*expected shape \[\*, 4\]"),
        (lambda x: B.fit_ar(x[:2], order=2), "no recording is longer than the history length 2"),
        (lambda x: B.fit_masked_var(x, np.ones((3, 3))), r"field 'mask'.*expected shape \[4, 4\]"),
        (
            lambda x: B.fit_masked_var(x, np.zeros((N, N)), include_diagonal=False),
            r"field 'mask', row 0: neuron has no input",
        ),
        (lambda x: B.fit_ridge_var(x, shrink_to="one"), "must be 'ar' or 'zero'"),
        (lambda x: B.fit_ridge_var(x, val_fraction=0.0), "leaves no training or no validation"),
    ],
)
def test_bad_input_raises_one_clear_error(small_traces, call, match):
    with pytest.raises(ValidationError, match=match):
        call(small_traces)


def _direct_ridge(x, y, w, lam, dim_valid=None):
    """Reference: each output's ridge solved on its own by np.linalg.solve (the docstring's objective)."""
    s, rx, d = x.shape
    r = y.shape[1]
    coef, intercept = np.zeros((r, d)), np.zeros(r)
    for j in range(r):
        keep = np.broadcast_to(w, (s, r))[:, j]
        xs, ys = x[keep, 0 if rx == 1 else j].astype(np.float64), y[keep, j].astype(np.float64)
        valid = np.ones(d, bool) if dim_valid is None else np.broadcast_to(dim_valid, (rx, d))[0 if rx == 1 else j]
        xs = xs[:, valid]
        xc, yc = xs - xs.mean(0), ys - ys.mean()
        scale = (xc ** 2).sum() / (len(xs) * valid.sum())
        c = np.linalg.solve(xc.T @ xc + (lam + 1e-9) * scale * len(xs) * np.eye(valid.sum()), xc.T @ yc)
        coef[j, valid] = c
        intercept[j] = ys.mean() - xs.mean(0) @ c
    return coef, intercept


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("n_samples", [40, 9])  # more samples than inputs (primal), fewer (dual)
@pytest.mark.parametrize("padded", [False, True])
def test_ridge_solve_matches_a_direct_solve_per_output(shared, n_samples, padded):
    """Grouped factorisations (shared inputs, several missing-target patterns) solve each output's ridge."""
    rng = np.random.default_rng(0)
    r, d = 6, 12
    x = rng.normal(size=(n_samples, 1 if shared else r, d))
    y = rng.normal(size=(n_samples, r)) + x[:, :, :3].sum(-1)
    w = rng.random((n_samples, r)) > 0.15
    w[:, :3] = w[:, :1]  # three outputs share a pattern, so shared inputs give one group for them
    x[~np.broadcast_to(w.any(1, keepdims=True), (n_samples, 1))[:, 0]] = np.nan  # unused samples may be NaN
    dim_valid = (rng.random((1 if shared else r, d)) > 0.3) if padded else None
    if padded:
        dim_valid[:, 0] = True
    lams = (1e-3, 0.3, 10.0)
    coefs, intercepts = B.ridge_solve(np.where(np.isfinite(x), x, np.nan), y, w, lams, dim_valid)
    for li, lam in enumerate(lams):
        ref_c, ref_b = _direct_ridge(x, y, w, lam, dim_valid)
        np.testing.assert_allclose(coefs[li], ref_c, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(intercepts[li], ref_b, rtol=1e-6, atol=1e-8)


def test_ridge_var_with_more_inputs_than_samples_matches_a_direct_fit():
    """p·N > S (the dual, kernel form): the VAR equals the ridge solved directly on its design."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 20)).astype(np.float32)
    fit = B.fit_ridge_var(x, order=2, lam=0.5, shrink_to="zero")
    win, tgt, _ = B.lagged_pairs(x, 2)
    design = win[:, ::-1, :].reshape(len(win), 1, -1)
    ref_c, ref_b = _direct_ridge(design, tgt, np.ones((len(win), 1), bool), 0.5)
    np.testing.assert_allclose(fit.weight, ref_c.reshape(20, 2, 20).transpose(1, 0, 2), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fit.intercept, ref_b, rtol=1e-4, atol=1e-5)


def test_masked_var_rows_of_different_degree_match_a_direct_fit_on_their_own_inputs():
    """Rows are blocked by in-degree and their designs trimmed: each still solves its own ridge."""
    rng = np.random.default_rng(5)
    n = 12
    x = rng.normal(size=(80, n)).astype(np.float32)
    mask = np.zeros((n, n), bool)
    for i in range(n):  # in-degrees 0..11 (plus the diagonal)
        mask[i, rng.choice(n, size=i, replace=False)] = True
    fit = B.fit_masked_var(x, mask, order=2, lam=0.2, shrink_to="zero")
    dense = np.asarray(B.masked_var_dense_weight(fit))  # [p, N, N]
    win, tgt, _ = B.lagged_pairs(x, 2)
    for i in range(n):
        inputs = np.flatnonzero(mask[i] | (np.arange(n) == i))
        design = win[:, ::-1, :][:, :, inputs].reshape(len(win), 1, -1)
        ref_c, ref_b = _direct_ridge(design, tgt[:, [i]], np.ones((len(win), 1), bool), 0.2)
        np.testing.assert_allclose(dense[:, i, inputs], ref_c[0].reshape(2, -1), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(fit.intercept[i], ref_b[0], rtol=1e-4, atol=1e-5)
        assert not dense[:, i, np.setdiff1d(np.arange(n), inputs)].any()
