r"""Forecasting baselines that every learned model must beat (DESIGN.md, Training, evaluation, outputs).

A baseline is a :class:`Forecaster`: a small factory of pure functions in the optax style,

* ``fit(traces) -> params`` — host side; ``traces`` is one ``[T, N]`` array or a list of ``[T_i, N]``
  recordings of the same N neurons (NaN = missing); ``params`` is a NamedTuple pytree of jax arrays;
* ``step(params, history) -> x_next`` — pure and jittable; ``history`` is ``[H, N]`` with the most recent
  frame last (``history[-1] = x[t]``), ``x_next`` is the ``[N]`` forecast of ``x[t+1]``;
* ``history`` — the window length H that ``step`` expects.

Multi-step forecasts feed predictions back through :func:`rollout` (one ``jax.lax.scan``); a learned
model enters evaluation as a Forecaster with the same interface. The baselines (:data:`BASELINES`):

============  =========================================================================================
persistence   ``x̂[t+1] = x[t]``
mean          ``x̂[t+1] = x̄`` (per-neuron training mean)
ar            per-neuron AR(p) with intercept: ``x̂_i[t+1] = b_i + Σ_k a_ik x_i[t-k]``
ridge_var     ridge VAR(p): ``x̂[t+1] = b + Σ_k W_k x[t-k]``, dense ``W_k`` ``[N, N]``
masked_var    the same with ``W_k[i, j] = 0`` unless ``mask[i, j]`` (or ``i == j``): connectome-shaped
mlp           one monolithic MLP ``x[t-H+1..t] -> x[t+1]`` (the "single basis function" strawman, §3.3)
============  =========================================================================================

**Linear fits** are closed-form ridge regressions solved per output neuron, on the host in float64:
``min_{b,c} Σ_s w_s (y_s - b - c·x_s)² + λ·s̄·n·‖c‖²`` with ``n = Σ_s w_s`` and ``s̄`` the mean variance of
the inputs (so ``λ`` is dimensionless, a fraction of the input variance; the intercept is not
penalised). ``λ = None`` picks ``λ`` from ``lam_grid`` by one-step MSE on a validation split (the last
``val_fraction`` of every recording), then refits on everything. The VARs shrink towards the per-neuron
AR(p) fit by default (``shrink_to="ar"``), so that λ → ∞ gives the ``ar`` baseline, not a zero forecast.
The MLP uses the same split for early stopping.

**Missing data** (NaN): a training pair ``(inputs, target)`` enters output neuron i's regression only
when its target and every input of neuron i (its own lags for ``ar``, its mask neighbours for
``masked_var``, all neurons for ``ridge_var``) are finite — masked least squares. At forecast time every
``step`` fills NaN inputs with the per-neuron training mean ``params.mean`` (so one missing sample does not
poison a rollout); metrics mask NaN targets out (:mod:`mesojax.metrics`).

Example:
    >>> import numpy as np, jax.numpy as jnp
    >>> from mesojax import baselines
    >>> rng = np.random.default_rng(0)
    >>> x = np.zeros((500, 3), np.float32)
    >>> for t in range(499):
    ...     x[t + 1] = 0.8 * x[t] + rng.normal(size=3)
    >>> ar = baselines.make_baseline("ar", order=1)
    >>> params = ar.fit(x)
    >>> [round(float(a), 1) for a in params.coef[:, 0]]
    [0.8, 0.8, 0.8]
    >>> baselines.rollout(ar.step, params, jnp.ones((ar.history, 3)), 4).shape
    (4, 3)
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.sparse

from mesojax import nn
from mesojax.data import validation as V

__all__ = [
    "BASELINES",
    "DEFAULT_LAM_GRID",
    "Forecaster",
    "MeanParams",
    "ARParams",
    "VARParams",
    "MaskedVARParams",
    "MLPParams",
    "make_baseline",
    "rollout",
    "as_trace_list",
    "lagged_pairs",
    "fit_persistence",
    "fit_mean",
    "fit_ar",
    "fit_ridge_var",
    "fit_masked_var",
    "fit_mlp",
    "persistence_step",
    "mean_step",
    "ar_step",
    "var_step",
    "masked_var_step",
    "mlp_step",
    "masked_var_dense_weight",
    "fill_missing",
    "ridge_solve",
]

Traces = Any  # one [T, N] array-like, a Recording, or a sequence of them
Step = Callable[[Any, jax.Array], jax.Array]

DEFAULT_LAM_GRID: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
"""Candidate (dimensionless) ridge strengths tried when ``lam=None``."""

# Relative diagonal jitter added to every Gram matrix so that an unregularised fit (λ = 0) with collinear
# inputs still has a unique (minimum-norm-like) solution.
_JITTER = 1e-9
# Bytes of float64 design matrix built at once when solving row blocks of a gathered regression.
_BLOCK_BYTES = 1 << 27


class Forecaster(NamedTuple):
    """A forecaster: host-side ``fit`` and pure ``step`` (see the module docstring).

    Attributes:
      name: registry name (e.g. ``"ar"``).
      fit: ``fit(traces) -> params``; traces ``[T, N]`` or a list of ``[T_i, N]`` (NaN = missing).
      step: ``step(params, history [H, N]) -> x_next [N]``, pure and jittable.
      history: H, the window length ``step`` expects.
    """

    name: str
    fit: Callable[[Traces], Any]
    step: Step
    history: int


class MeanParams(NamedTuple):
    """Parameters of ``persistence`` and ``mean``: the per-neuron training mean ``[N]``."""

    mean: jax.Array


class ARParams(NamedTuple):
    """Per-neuron AR(p): ``x̂_i[t+1] = intercept_i + Σ_k coef[i, k] x_i[t-k]``.

    Attributes:
      coef: ``[N, p]``; column k multiplies lag k (``x[t-k]``, k = 0 is the latest frame).
      intercept: ``[N]``.
      mean: ``[N]`` training mean (fills NaN inputs).
    """

    coef: jax.Array
    intercept: jax.Array
    mean: jax.Array


class VARParams(NamedTuple):
    """Dense VAR(p): ``x̂[t+1] = intercept + Σ_k weight[k] @ x[t-k]``.

    Attributes:
      weight: ``[p, N, N]``; ``weight[k, i, j]`` is the effect of ``x_j[t-k]`` on ``x_i[t+1]``.
      intercept: ``[N]``.
      mean: ``[N]`` training mean (fills NaN inputs).
      lam: ``[]`` the ridge strength used (chosen or given).
    """

    weight: jax.Array
    intercept: jax.Array
    mean: jax.Array
    lam: jax.Array


class MaskedVARParams(NamedTuple):
    """Sparse VAR(p) on a mask: ``x̂_i[t+1] = intercept_i + Σ_k Σ_d coef[i, k, d] x_{index[i, d]}[t-k]``.

    Attributes:
      coef: ``[N, p, D]``, exactly 0 where ``valid`` is False; D = max inputs per neuron.
      index: ``[N, D]`` int32 input neuron of each slot (padding slots point at neuron i itself).
      valid: ``[N, D]`` bool, True for real slots.
      intercept: ``[N]``.
      mean: ``[N]`` training mean (fills NaN inputs).
      lam: ``[]`` the ridge strength used.
    """

    coef: jax.Array
    index: jax.Array
    valid: jax.Array
    intercept: jax.Array
    mean: jax.Array
    lam: jax.Array


class MLPParams(NamedTuple):
    """Monolithic MLP on z-scored inputs, predicting the z-scored increment.

    ``z = (x - mean) / std``; ``x̂[t+1] = x[t] + std · MLP(z[t-H+1..t] flattened)``.

    Attributes:
      layers: :class:`mesojax.nn.MLP` parameters (GELU; widths ``(*hidden, N)``, input ``H·N``).
      mean: ``[N]`` training mean (also fills NaN inputs).
      std: ``[N]`` training standard deviation (1 where a neuron is constant).
    """

    layers: Any
    mean: jax.Array
    std: jax.Array


# ----------------------------------------------------------------------------- data preparation
def as_trace_list(traces: Traces, *, source: str = "baselines") -> list[np.ndarray]:
    """Normalise training/evaluation input to a list of float32 ``[T_i, N]`` arrays.

    Args:
      traces: one ``[T, N]`` array, a :class:`mesojax.data.Recording` (its ``traces`` are loaded), or a
        list/tuple of those; all must have the same N. NaN marks a missing sample.
      source: named in errors.

    Returns:
      A list of float32 numpy arrays.

    Raises:
      ValidationError: naming the recording (row) that is not 2-D, has another N, or holds ±inf.
    """
    items = list(traces) if isinstance(traces, (list, tuple)) else [traces]
    if not items:
        raise V.ValidationError(source, "traces", None, "no recordings given")
    out = []
    for r, item in enumerate(items):
        arr = getattr(item, "traces", item)
        arr = np.asarray(arr[:] if not isinstance(arr, np.ndarray) and hasattr(arr, "shape") else arr)
        field = "traces" if len(items) == 1 else f"traces[{r}]"
        V.check_numeric(source, field, arr)
        V.check_shape(source, field, arr, (None, None if r == 0 else out[0].shape[1]))
        if np.isinf(arr).any():
            row = V.first_row(np.isinf(arr))
            raise V.ValidationError(source, field, row, "infinite value (use NaN for missing)")
        out.append(arr.astype(np.float32, copy=False))
    return out


def lagged_pairs(
    traces: Traces, history: int, *, source: str = "baselines"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All one-step training pairs ``(x[t-H+1..t], x[t+1])``, never crossing a recording boundary.

    Args:
      traces: ``[T, N]`` or a list of ``[T_i, N]`` (see :func:`as_trace_list`).
      history: window length H ≥ 1.

    Returns:
      ``(windows [S, H, N], targets [S, N], position [S])``: ``windows[s, -1]`` is ``x[t]``;
      ``position[s]`` in [0, 1) is how far through its recording sample s lies (for time splits).
      S = Σ_i (T_i - H); NaN are kept.

    Raises:
      ValidationError: if no recording is longer than ``history``.
    """
    if history < 1:
        raise V.ValidationError(source, "history", None, f"must be ≥ 1, got {history}")
    windows, targets, position = [], [], []
    for x in as_trace_list(traces, source=source):
        s = x.shape[0] - history
        if s <= 0:
            continue
        win = np.lib.stride_tricks.sliding_window_view(x[:-1], history, axis=0)  # [S, N, H]
        windows.append(np.ascontiguousarray(win.transpose(0, 2, 1)))
        targets.append(x[history:])
        position.append(np.arange(s) / s)
    if not windows:
        raise V.ValidationError(
            source, "traces", None, f"no recording is longer than the history length {history}"
        )
    return np.concatenate(windows), np.concatenate(targets), np.concatenate(position)


def _training_mean(xs: list[np.ndarray], source: str) -> np.ndarray:
    """Per-neuron mean over all finite training samples; every neuron must have at least one."""
    stacked = np.concatenate(xs)
    count = np.isfinite(stacked).sum(0)
    if (count == 0).any():
        j = int(np.flatnonzero(count == 0)[0])
        raise V.ValidationError(
            source, "traces", None, f"neuron (column) {j} has no finite training sample; drop it first"
        )
    return np.nansum(stacked.astype(np.float64), 0) / count


def fill_missing(x: jax.Array, fill: jax.Array) -> jax.Array:
    """Replace NaN in ``x [..., N]`` by ``fill [N]`` (the training mean): ``where(isnan(x), fill, x)``."""
    return jnp.where(jnp.isnan(x), fill, x)


# ----------------------------------------------------------------------------- ridge solver (host)
class _Factor(NamedTuple):
    """Weighted ridge regressions factorised once for every λ: ``coef(λ) = Q diag(1/(e + (λ+ε)·n·s̄)) P``.

    The leading axis G runs over independent problems: one per output row when every row has its own
    inputs, or G = 1 for a group of rows that share inputs and sample weights (then ``P`` holds every row
    of the group, so the group costs one factorisation).

    Attributes:
      q: ``[G, D, k]`` eigenvectors of the centred Gram matrix ``XᵀX`` (primal, D ≤ n), or ``Xᵀ U`` with
        ``U`` those of the kernel ``XXᵀ`` (dual, D > n): both give the same coefficients.
      evals: ``[G, k]`` eigenvalues of ``XᵀX`` (or ``XXᵀ``), unnormalised.
      proj: ``[G, k, Rg]`` ``Qᵀ Xᵀ y`` (primal) or ``Uᵀ y`` (dual) of the centred targets.
      shrink: ``[G]`` ``n·s̄`` (samples × mean input variance): the ridge term is ``(λ + ε)·n·s̄·‖c‖²``.
      xm: ``[G, D]`` weighted input means; ym: ``[G, Rg]`` target means.
      dim_valid: ``[G, D]`` bool, or None; coefficients of padding dimensions are 0.
    """

    q: np.ndarray
    evals: np.ndarray
    proj: np.ndarray
    shrink: np.ndarray
    xm: np.ndarray
    ym: np.ndarray
    dim_valid: np.ndarray | None


def _factor_rows(x: np.ndarray, y: np.ndarray, w: np.ndarray, dim_valid: np.ndarray | None) -> _Factor:
    """One primal factor per output row: ``x [S, R, D]`` (own inputs per row), ``y [S, R]``, ``w [S, R|1]``."""
    s, r, d = x.shape
    wf = w.astype(np.float64)
    n = np.maximum(wf.sum(0), 1.0)  # [Rw]
    valid = np.ones((r, d), bool) if dim_valid is None else np.broadcast_to(dim_valid, (r, d))
    xm = np.where(w[:, :, None], x, 0.0).sum(0) / n[:, None]  # [R, D]
    xc = np.where(w[:, :, None] & valid, x - xm, 0.0)  # padding dimensions take no part
    gram = np.matmul(xc.transpose(1, 2, 0), xc.transpose(1, 0, 2))  # [R, D, D]
    ym = np.where(w, y, 0.0).sum(0) / n  # [R]
    b = np.einsum("srd,sr->rd", xc, np.where(w, y - ym, 0.0))
    diag = np.diagonal(gram, axis1=1, axis2=2)  # [R, D]
    scale = np.maximum((diag * valid).sum(-1) / np.maximum(valid.sum(-1), 1) / n, 1e-12)  # [R]
    shrink = n * scale
    if dim_valid is not None:
        # Padding dimensions get a unit-variance diagonal so the system stays well-posed; their b is 0.
        gram = gram + np.eye(d) * (~valid)[:, None, :] * shrink[:, None, None]
    evals, evecs = np.linalg.eigh(gram)
    proj = np.matmul(evecs.transpose(0, 2, 1), b[:, :, None])  # [R, D, 1]
    return _Factor(evecs, evals, proj, np.broadcast_to(shrink, (r,)), xm, ym[:, None],
                   None if dim_valid is None else valid)


def _factor_shared(x: np.ndarray, y: np.ndarray, w: np.ndarray, dim_valid: np.ndarray | None) -> _Factor:
    """One factor for rows sharing inputs ``x [S, D]`` and samples ``w [S]``; ``y [S, R]``.

    Primal (``XᵀX``, cost ``n·D²``) when D ≤ n, dual (``XXᵀ``, cost ``n²·D``) otherwise, so a VAR with
    more inputs than samples (``p·N > S``) never forms a ``[D, D]`` matrix.
    """
    xs, ys = x[w].astype(np.float64), y[w].astype(np.float64)
    n, d = xs.shape
    n_eff = max(n, 1)
    xm, ym = xs.sum(0) / n_eff, ys.sum(0) / n_eff
    xc, yc = xs - xm, ys - ym
    if dim_valid is not None:
        xc[:, ~dim_valid] = 0.0
    d_valid = d if dim_valid is None else max(int(dim_valid.sum()), 1)
    shrink = n_eff * max(float(np.einsum("sd,sd->", xc, xc)) / (n_eff * d_valid), 1e-12)
    if d <= n:
        evals, q = np.linalg.eigh(xc.T @ xc)
        proj = q.T @ (xc.T @ yc)
    else:
        evals, u = np.linalg.eigh(xc @ xc.T)
        q, proj = xc.T @ u, u.T @ yc
    return _Factor(q[None], evals[None], proj[None], np.asarray([shrink]), xm[None], ym[None],
                   None if dim_valid is None else dim_valid[None])


def _factors(x: np.ndarray, y: np.ndarray, w: np.ndarray,
             dim_valid: np.ndarray | None) -> list[tuple[np.ndarray, _Factor]]:
    """Factorise the ridge problems of :func:`ridge_solve`: ``[(rows, factor)]`` covering every output row.

    Rows with shared inputs (``Rx = 1``) are grouped by their sample-weight pattern (missing targets), one
    factorisation per distinct pattern; rows with their own inputs get one (small) factor each.
    """
    s, rx, _ = x.shape
    r = y.shape[1]
    if rx > 1:
        return [(np.arange(r), _factor_rows(x, y, w, dim_valid))]
    dv = None if dim_valid is None else np.asarray(dim_valid).reshape(-1)
    cols = np.broadcast_to(w, (s, r))
    patterns, first, which = np.unique(np.packbits(cols, axis=0).T, axis=0, return_index=True,
                                       return_inverse=True)
    which = which.reshape(-1)
    out = []
    for g in range(len(patterns)):
        rows = np.flatnonzero(which == g)
        out.append((rows, _factor_shared(x[:, 0], y[:, rows], cols[:, first[g]], dv)))
    return out


def _shrinkage(f: _Factor, lam: float) -> np.ndarray:
    return 1.0 / np.maximum(f.evals + (lam + _JITTER) * f.shrink[:, None], 1e-300)  # [G, k]


def _factor_coef(f: _Factor, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """``(coef [R, D], intercept [R])`` of a factor at one λ, rows in the factor's order."""
    coef = np.matmul(f.q, f.proj * _shrinkage(f, lam)[:, :, None])  # [G, D, Rg]
    if f.dim_valid is not None:
        coef = np.where(f.dim_valid[:, :, None], coef, 0.0)
    intercept = f.ym - np.einsum("gd,gdr->gr", f.xm, coef)
    return coef.transpose(0, 2, 1).reshape(-1, coef.shape[1]), intercept.reshape(-1)


def _factor_sse(f: _Factor, lams: Sequence[float], x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Squared error ``[len(lams)]`` on held-out ``x [S, Rx, D]`` (NaN-free), ``y [S, R]``, mask ``w [S, R]``.

    Shared inputs are projected once (``(x - x̄) Q``, ``[S, k]``), so each λ costs ``S·k·R`` and the
    ``[R, D]`` coefficients are never formed.
    """
    sse = np.zeros(len(lams))
    if x.shape[1] == 1:
        xc = x[:, 0] - f.xm[0]
        if f.dim_valid is not None:
            xc = np.where(f.dim_valid[0], xc, 0.0)
        a = xc @ f.q[0]  # [S, k]
        for li, lam in enumerate(lams):
            pred = f.ym[0] + a @ (f.proj[0] * _shrinkage(f, lam)[0][:, None])
            sse[li] = np.where(w, (pred - y) ** 2, 0.0).sum()
        return sse
    for li, lam in enumerate(lams):
        coef, intercept = _factor_coef(f, lam)
        pred = intercept + np.einsum("srd,rd->sr", x, coef)
        sse[li] = np.where(w, (pred - y) ** 2, 0.0).sum()
    return sse


def ridge_solve(
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    lams: Sequence[float],
    dim_valid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted ridge regressions with free intercepts, one per output column r, for every λ (host, float64).

    For each r and λ: ``min Σ_s w[s,r] (y[s,r] - b_r - c_r·x[s,r])² + λ·s̄_r·n_r·‖c_r‖²`` with
    ``n_r = Σ_s w[s,r]`` and ``s̄_r`` the mean variance of the (valid) inputs; solved through one
    eigendecomposition shared by all λ. Outputs that share inputs (``Rx = 1``) and sample weights share
    that factorisation too: a dense VAR costs one per missing-data pattern, not one per output neuron.

    Args:
      x: ``[S, Rx, D]`` inputs; ``Rx = 1`` shares them across outputs (entries with w = 0 may be NaN).
      y: ``[S, R]`` targets.
      w: ``[S, Rw]`` bool sample weights; ``Rw = 1`` shares them.
      lams: L ridge strengths (relative to the mean input variance).
      dim_valid: ``[Rx, D]`` bool, False for padding dimensions (coefficient forced to 0).

    Returns:
      ``(coef [L, R, D], intercept [L, R])``.
    """
    r, d = y.shape[1], x.shape[2]
    coefs, intercepts = np.zeros((len(lams), r, d)), np.zeros((len(lams), r))
    for rows, f in _factors(x, y, w, dim_valid):
        for li, lam in enumerate(lams):
            coefs[li, rows], intercepts[li, rows] = _factor_coef(f, lam)
    return coefs, intercepts


def _prior_offset(x: np.ndarray, c0: scipy.sparse.csr_matrix) -> np.ndarray:
    """``x·c0`` per output row: ``x [S, Rx, D]`` (NaN read as 0), ``c0 [R, D]`` sparse -> ``[S, R]``."""
    x = np.where(np.isfinite(x), x, 0.0)
    if x.shape[1] == 1:
        return np.asarray((c0 @ x[:, 0].T).T)
    return np.einsum("srd,rd->sr", x, c0.toarray())


def _fit_linear(
    design: Callable[[np.ndarray, np.ndarray], np.ndarray],
    windows: np.ndarray,
    targets: np.ndarray,
    in_finite: Callable[[np.ndarray, np.ndarray], np.ndarray],
    position: np.ndarray,
    *,
    blocks: list[np.ndarray],
    lam: float | None,
    lam_grid: Sequence[float],
    val_fraction: float,
    dim_valid: np.ndarray | None,
    source: str,
    prior: Callable[[np.ndarray], scipy.sparse.csr_matrix | None] | None = None,
    block_dims: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Solve a ridge regression per output neuron in row blocks, choosing λ on a time split if needed.

    ``design(windows, rows) -> [S, len(rows) or 1, D_rows]``; ``in_finite(windows, rows) -> [S, len(rows) or
    1]`` says whether all inputs of those rows are finite. ``prior(sample_mask [S]) -> c0 [N, D]`` (optional,
    sparse) moves the ridge centre: the penalty becomes ``λ‖c - c0‖²`` (solved as ridge on ``y - x·c0``),
    with c0 fitted on the same samples as the regression. `blocks` partition the output rows; a design
    shared by all rows should come as one block, whose rows are then solved together (one factorisation
    per missing-data pattern). ``block_dims(rows)`` (optional) names the D_rows columns of the full
    D-column layout that the design returns for those rows (e.g. a padded table trimmed to the block's
    longest row), so rows with few inputs never pay for the longest one.

    Returns:
      ``(coef [N, D], intercept [N], lam)``.
    """
    n = targets.shape[1]

    def dims_of(rows: np.ndarray) -> slice | np.ndarray:
        return slice(None) if block_dims is None else block_dims(rows)

    def problem(rows: np.ndarray, samples: np.ndarray, c0: scipy.sparse.csr_matrix | None):
        """``(x, y, w)`` of output `rows` on `samples`, targets moved by the prior."""
        win = windows[samples]
        x = design(win, rows)
        y = targets[samples][:, rows].astype(np.float64)
        w = in_finite(win, rows) & np.isfinite(y)
        if c0 is not None:
            y = y - _prior_offset(x, c0[rows][:, dims_of(rows)])
        return x, y, w

    def valid_of(rows: np.ndarray) -> np.ndarray | None:
        return None if dim_valid is None else dim_valid[rows][:, dims_of(rows)]

    def local(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return x if x.shape[1] == 1 else x[:, rows]

    if lam is None:
        is_val = position >= 1.0 - val_fraction
        if not is_val.any() or is_val.all():
            raise V.ValidationError(
                source, "val_fraction", None, f"{val_fraction} leaves no training or no validation pairs"
            )
        sse = np.zeros(len(lam_grid))
        c0 = None if prior is None else prior(~is_val)
        for rows in blocks:
            x, y, w = problem(rows, ~is_val, c0)
            xv, yv, wv = problem(rows, is_val, c0)
            xv = np.where(np.isfinite(xv), xv, 0.0)  # rows with missing inputs are masked by wv
            for sub, f in _factors(x, y, w, valid_of(rows)):
                sse += _factor_sse(f, lam_grid, local(xv, sub), yv[:, sub], wv[:, sub])
        if not np.isfinite(sse).all():
            raise V.ValidationError(source, "lam", None, "validation error is not finite for some λ")
        lam = float(lam_grid[int(np.argmin(sse))])
    coef = intercept = None
    c0 = None if prior is None else prior(np.ones(len(targets), bool))
    for rows in blocks:
        x, y, w = problem(rows, np.ones(len(targets), bool), c0)
        if coef is None:
            width = x.shape[2] if block_dims is None else dim_valid.shape[1]
            coef, intercept = np.zeros((n, width)), np.zeros(n)
        dims = dims_of(rows)
        for sub, f in _factors(x, y, w, valid_of(rows)):
            c, intercept[rows[sub]] = _factor_coef(f, lam)
            coef[rows[sub][:, None], np.arange(coef.shape[1])[dims][None]] = c
    if c0 is not None:
        c0 = c0.tocoo()
        np.add.at(coef, (c0.row, c0.col), c0.data)
    return coef, intercept, lam


def _check_shrink_to(source: str, shrink_to: str) -> None:
    if shrink_to not in ("ar", "zero"):
        raise V.ValidationError(source, "shrink_to", None, f"must be 'ar' or 'zero', got {shrink_to!r}")


def _row_blocks(n_samples: int, dim: int, n_rows: int, order: np.ndarray | None = None) -> list[np.ndarray]:
    """Row blocks of at most ``_BLOCK_BYTES`` of float64 design each (``[S, rows, dim]``), in `order`."""
    per = int(max(1, min(n_rows, _BLOCK_BYTES // max(1, 8 * n_samples * dim))))
    rows = np.arange(n_rows) if order is None else np.asarray(order)
    return [rows[a:a + per] for a in range(0, n_rows, per)]


# ----------------------------------------------------------------------------- baselines
def fit_persistence(traces: Traces) -> MeanParams:
    """Persistence ``x̂[t+1] = x[t]``; only the training mean (NaN fill) is fitted.

    Args:
      traces: ``[T, N]`` or a list of ``[T_i, N]``.

    Returns:
      :class:`MeanParams`.
    """
    xs = as_trace_list(traces, source="baselines.fit_persistence")
    return MeanParams(jnp.asarray(_training_mean(xs, "baselines.fit_persistence"), jnp.float32))


def persistence_step(params: MeanParams, history: jax.Array) -> jax.Array:
    """``x̂[t+1] = x[t]`` (NaN filled with the training mean). history ``[H, N]`` -> ``[N]``."""
    return fill_missing(history[-1], params.mean)


def fit_mean(traces: Traces) -> MeanParams:
    """Mean baseline ``x̂[t+1] = x̄`` with ``x̄ [N]`` the per-neuron mean of the finite training samples.

    Args:
      traces: ``[T, N]`` or a list of ``[T_i, N]``.

    Returns:
      :class:`MeanParams`.
    """
    xs = as_trace_list(traces, source="baselines.fit_mean")
    return MeanParams(jnp.asarray(_training_mean(xs, "baselines.fit_mean"), jnp.float32))


def mean_step(params: MeanParams, history: jax.Array) -> jax.Array:
    """``x̂[t+1] = x̄`` regardless of history. history ``[H, N]`` -> ``[N]``."""
    del history
    return params.mean


def fit_ar(
    traces: Traces,
    *,
    order: int = 1,
    lam: float | None = 0.0,
    lam_grid: Sequence[float] = DEFAULT_LAM_GRID,
    val_fraction: float = 0.2,
) -> ARParams:
    """Per-neuron AR(p) with intercept by (masked) least squares.

    ``x̂_i[t+1] = b_i + Σ_{k<p} a_ik x_i[t-k]``, fitted independently per neuron on the pairs whose p lags
    and target are finite. ``lam = 0`` (default) is ordinary least squares; ``None`` picks it on a split.

    Args:
      traces: ``[T, N]`` or a list of ``[T_i, N]`` (NaN = missing).
      order: p ≥ 1.
      lam, lam_grid, val_fraction: ridge strength (see module docstring).

    Returns:
      :class:`ARParams` with ``coef [N, p]``.

    Example:
      >>> p = fit_ar(np.cumsum(np.ones((20, 2)), 0), order=1)   # x[t+1] = x[t] + 1
      >>> np.round(np.asarray(p.coef), 3).tolist(), np.round(np.asarray(p.intercept), 3).tolist()
      ([[1.0], [1.0]], [1.0, 1.0])
    """
    src = "baselines.fit_ar"
    windows, targets, position = lagged_pairs(traces, order, source=src)
    mean = _training_mean(as_trace_list(traces, source=src), src)
    coef, intercept = _ar_arrays(
        windows, targets, position, lam=lam, lam_grid=lam_grid, val_fraction=val_fraction, source=src
    )
    return ARParams(*(jnp.asarray(a, jnp.float32) for a in (coef, intercept, mean)))


def _ar_arrays(
    windows: np.ndarray,
    targets: np.ndarray,
    position: np.ndarray,
    *,
    lam: float | None = 0.0,
    lam_grid: Sequence[float] = DEFAULT_LAM_GRID,
    val_fraction: float = 0.2,
    source: str = "baselines.fit_ar",
) -> tuple[np.ndarray, np.ndarray]:
    """Per-neuron AR fit on lagged pairs ``windows [S, p, N]``, ``targets [S, N]``.

    Returns:
      ``(coef [N, p], intercept [N])``.
    """
    s, order, n = windows.shape

    def design(win, rows):  # own lags, latest first: [S, R, p]
        return win[:, ::-1, :][:, :, rows].transpose(0, 2, 1)

    def in_finite(win, rows):
        return np.isfinite(win[:, :, rows]).all(1)

    coef, intercept, _ = _fit_linear(
        design,
        windows,
        targets,
        in_finite,
        position,
        blocks=_row_blocks(s, order, n),
        lam=lam,
        lam_grid=lam_grid,
        val_fraction=val_fraction,
        dim_valid=None,
        source=source,
    )
    return coef, intercept


def ar_step(params: ARParams, history: jax.Array) -> jax.Array:
    """``x̂_i[t+1] = b_i + Σ_k coef[i, k] x_i[t-k]``. history ``[p, N]`` -> ``[N]``."""
    p = params.coef.shape[1]
    lags = fill_missing(history[::-1][:p], params.mean)  # [p, N], lag 0 first
    return params.intercept + jnp.sum(params.coef.T * lags, axis=0)


def fit_ridge_var(
    traces: Traces,
    *,
    order: int = 1,
    lam: float | None = None,
    shrink_to: str = "ar",
    lam_grid: Sequence[float] = DEFAULT_LAM_GRID,
    val_fraction: float = 0.2,
) -> VARParams:
    """Ridge VAR(p): ``x̂[t+1] = b + Σ_{k<p} W_k x[t-k]`` with dense ``W_k`` ``[N, N]``.

    A pair enters neuron i's regression when all inputs and ``x_i[t+1]`` are finite. With ``lam=None``
    λ is chosen from ``lam_grid`` by one-step MSE on the last ``val_fraction`` of each recording.

    The ridge centre is the per-neuron AR(p) fit (``shrink_to="ar"``, default): the penalty is
    ``λ‖c_i - c_i^AR‖²`` with ``c_i^AR`` the AR(p) coefficients on neuron i's own lags (0 elsewhere), so
    the VAR interpolates between OLS (λ → 0) and the AR baseline (λ → ∞) instead of shrinking every
    neuron's self-coupling to 0, which on short real recordings makes plain ridge worse than AR(1).
    ``shrink_to="zero"`` is classical ridge.

    Args:
      traces: ``[T, N]`` or a list of ``[T_i, N]`` (NaN = missing).
      order: p ≥ 1.
      lam: ridge strength relative to the mean input variance, or None to choose it.
      shrink_to: "ar" or "zero", the ridge centre.
      lam_grid, val_fraction: the candidates and the validation split for ``lam=None``.

    Returns:
      :class:`VARParams` with ``weight [p, N, N]``.
    """
    src = "baselines.fit_ridge_var"
    _check_shrink_to(src, shrink_to)
    windows, targets, position = lagged_pairs(traces, order, source=src)
    mean = _training_mean(as_trace_list(traces, source=src), src)
    s, _, n = windows.shape

    def design(win, rows):  # every neuron's lags, shared by all rows: [S, 1, p*N]
        return win[:, ::-1, :].reshape(len(win), 1, order * n)

    def in_finite(win, rows):
        return np.isfinite(win).all((1, 2))[:, None]

    def prior(samples):  # AR(p) coefficients on each neuron's own lags (dims k*N + i), sparse
        if shrink_to != "ar":
            return None
        ar, _ = _ar_arrays(windows[samples], targets[samples], position[samples], source=src)
        rows = np.repeat(np.arange(n), order)
        cols = (np.arange(order)[None] * n + np.arange(n)[:, None]).reshape(-1)
        return scipy.sparse.csr_matrix((ar.reshape(-1), (rows, cols)), shape=(n, order * n))

    coef, intercept, lam = _fit_linear(
        design,
        windows,
        targets,
        in_finite,
        position,
        blocks=[np.arange(n)],  # one design shared by every row: solved together
        lam=lam,
        lam_grid=lam_grid,
        val_fraction=val_fraction,
        dim_valid=None,
        source=src,
        prior=prior,
    )
    weight = coef.reshape(n, order, n).transpose(1, 0, 2)
    return VARParams(
        jnp.asarray(weight, jnp.float32),
        jnp.asarray(intercept, jnp.float32),
        jnp.asarray(mean, jnp.float32),
        jnp.asarray(lam, jnp.float32),
    )


def var_step(params: VARParams, history: jax.Array) -> jax.Array:
    """``x̂[t+1] = b + Σ_k W_k x[t-k]``. history ``[p, N]`` -> ``[N]``."""
    p = params.weight.shape[0]
    lags = fill_missing(history[::-1][:p], params.mean)
    return params.intercept + jnp.einsum("kij,kj->i", params.weight, lags)


def _mask_index(mask: Any, n: int, include_diagonal: bool, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Padded input table of a ``[N, N]`` mask: ``(index [N, D], valid [N, D])``, row i = inputs of i."""
    if scipy.sparse.issparse(mask):
        m = scipy.sparse.csr_matrix(mask)
    else:
        dense = np.asarray(mask)
        if dense.dtype.kind not in "biuf":
            raise V.ValidationError(
                source, "mask", None, f"expected a boolean/numeric array, got {dense.dtype}"
            )
        m = scipy.sparse.csr_matrix(dense)
    V.check_shape(source, "mask", m, (n, n))
    m.eliminate_zeros()
    m = (m != 0).astype(np.int8)
    if include_diagonal:
        m = (m + scipy.sparse.identity(n, dtype=np.int8, format="csr")).astype(bool).astype(np.int8)
    m = m.tocsr()
    m.sort_indices()
    deg = np.diff(m.indptr)
    if (deg == 0).any():
        i = int(np.flatnonzero(deg == 0)[0])
        raise V.ValidationError(source, "mask", i, "neuron has no input (empty mask row, no diagonal)")
    d = int(deg.max())
    slot = np.arange(len(m.indices)) - np.repeat(m.indptr[:-1], deg)
    rows = np.repeat(np.arange(n), deg)
    index = np.repeat(np.arange(n)[:, None], d, axis=1)
    valid = np.zeros((n, d), bool)
    index[rows, slot] = m.indices
    valid[rows, slot] = True
    return index.astype(np.int32), valid


def fit_masked_var(
    traces: Traces,
    mask: Any,
    *,
    order: int = 1,
    lam: float | None = None,
    shrink_to: str = "ar",
    include_diagonal: bool = True,
    lam_grid: Sequence[float] = DEFAULT_LAM_GRID,
    val_fraction: float = 0.2,
) -> MaskedVARParams:
    """Connectome-masked ridge VAR(p): ``W_k[i, j] = 0`` unless ``mask[i, j]`` (or ``i == j``).

    Solved per output neuron by masked least squares over its inputs only, in blocks of rows that are
    vectorised (batched Gram matrices), so memory is ``O(S · rows · p · D)`` with D the max in-degree.
    A pair enters neuron i's regression when ``x_i[t+1]`` and the lags of i's inputs are finite.

    Args:
      traces: ``[T, N]`` or a list of ``[T_i, N]`` (NaN = missing).
      mask: ``[N, N]`` bool/numeric array or scipy sparse matrix, nonzero ``mask[i, j]`` allowing
        input j -> output i (the orientation of ``W``). A connectome's ``weighted()`` is ``[pre, post]``,
        so pass its transpose (symmetrise it to let information flow both ways).
      order: p ≥ 1.
      lam, shrink_to, lam_grid, val_fraction: as in :func:`fit_ridge_var` (the AR centre needs the
        diagonal in the mask).
      include_diagonal: always allow each neuron's own past (default True).

    Returns:
      :class:`MaskedVARParams`; :func:`masked_var_dense_weight` gives the dense ``[p, N, N]``.

    Raises:
      ValidationError: wrong mask shape/dtype, or a neuron with no allowed input.
    """
    src = "baselines.fit_masked_var"
    _check_shrink_to(src, shrink_to)
    windows, targets, position = lagged_pairs(traces, order, source=src)
    mean = _training_mean(as_trace_list(traces, source=src), src)
    s, _, n = windows.shape
    index, valid = _mask_index(mask, n, include_diagonal, src)
    d = index.shape[1]
    dim_valid = np.tile(valid, (1, order))  # [N, p*D], lag-major like the design

    degree = valid.sum(1)  # valid slots come first in every row (_mask_index)

    def width(rows):  # the block's longest row: shorter rows are padded to it, not to D
        return int(degree[rows].max())

    def block_dims(rows):  # the design's columns in the [p*D] layout
        return (np.arange(order)[:, None] * d + np.arange(width(rows))[None]).reshape(-1)

    def design(win, rows):  # [S, R, p*D_rows]: lag k (latest first), then slot
        dr = width(rows)
        g = win[:, ::-1, :][:, :, index[rows, :dr]]  # [S, p, R, D_rows]
        g = np.where(valid[rows, :dr][None, None], g, 0.0)
        return g.transpose(0, 2, 1, 3).reshape(len(win), len(rows), order * dr)

    def in_finite(win, rows):
        dr = width(rows)
        fin = np.isfinite(win[:, :, index[rows, :dr]]) | ~valid[rows, :dr][None, None]
        return fin.all((1, 3))

    self_slot = (index == np.arange(n)[:, None]) & valid  # [N, D]: where neuron i feeds itself

    def prior(samples):  # AR(p) coefficients on each neuron's own slot, where the mask has one (sparse)
        if shrink_to != "ar":
            return None
        ar, _ = _ar_arrays(windows[samples], targets[samples], position[samples], source=src)
        c0 = np.where(self_slot[:, None, :], ar[:, :, None], 0.0)
        return scipy.sparse.csr_matrix(c0.reshape(n, order * d))

    coef, intercept, lam = _fit_linear(
        design,
        windows,
        targets,
        in_finite,
        position,
        # Rows sorted by in-degree, so a block's rows have similar numbers of inputs.
        blocks=_row_blocks(s, order * d, n, np.argsort(degree, kind="stable")),
        lam=lam,
        lam_grid=lam_grid,
        val_fraction=val_fraction,
        dim_valid=dim_valid,
        source=src,
        prior=prior,
        block_dims=block_dims,
    )
    coef = np.where(valid[:, None, :], coef.reshape(n, order, d), 0.0)
    return MaskedVARParams(
        jnp.asarray(coef, jnp.float32),
        jnp.asarray(index),
        jnp.asarray(valid),
        jnp.asarray(intercept, jnp.float32),
        jnp.asarray(mean, jnp.float32),
        jnp.asarray(lam, jnp.float32),
    )


def masked_var_step(params: MaskedVARParams, history: jax.Array) -> jax.Array:
    """``x̂_i[t+1] = b_i + Σ_k Σ_d coef[i,k,d] x_{index[i,d]}[t-k]`` (a gather). ``[p, N]`` -> ``[N]``."""
    p = params.coef.shape[1]
    lags = fill_missing(history[::-1][:p], params.mean)  # [p, N]
    gathered = lags[:, params.index]  # [p, N, D]
    return params.intercept + jnp.einsum("nkd,knd->n", params.coef, gathered)


def masked_var_dense_weight(params: MaskedVARParams) -> jax.Array:
    """The dense ``[p, N, N]`` weights of a masked VAR (zero outside the mask); for inspection, small N."""
    n, p, d = params.coef.shape
    rows = jnp.broadcast_to(jnp.arange(n)[:, None], (n, d))
    w = jnp.zeros((p, n, n), params.coef.dtype)
    vals = jnp.where(params.valid[:, None, :], params.coef, 0.0).transpose(1, 0, 2)  # [p, N, D]
    return w.at[:, rows, params.index].add(vals)


# ----------------------------------------------------------------------------- MLP
def _mlp_apply(layers: Any, u: jax.Array) -> jax.Array:
    return nn.apply_mlp(layers, u, activation=jax.nn.gelu)


def fit_mlp(
    traces: Traces,
    *,
    history: int = 1,
    hidden: Sequence[int] = (64,),
    steps: int = 1000,
    learning_rate: float = 1e-3,
    batch_size: int = 256,
    weight_decay: float = 1e-2,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> MLPParams:
    """One monolithic MLP ``x[t-H+1..t] -> x[t+1]`` trained by AdamW on one-step targets.

    Inputs and targets are z-scored with the training mean/std; the network predicts the increment
    ``(x[t+1] - x[t]) / std`` (GELU hidden layers; zero-initialised output layer, so training starts from
    persistence). NaN inputs are filled with the training mean, NaN targets are masked out of the loss.
    All ``steps`` minibatch updates run in one jitted ``lax.scan``; the result is deterministic in ``seed``.

    Early stopping: with ``val_fraction > 0`` the last ``val_fraction`` of every recording is held out
    from the updates and the parameters with the lowest validation loss seen (checked after every update,
    on at most 2048 validation pairs) are returned; no refit. An N·H-input MLP overfits a short recording
    within a few hundred updates, so without this it is not a fair baseline.

    Args:
      traces: ``[T, N]`` or a list of ``[T_i, N]`` (NaN = missing).
      history: H ≥ 1 frames of input.
      hidden: hidden layer widths.
      steps, learning_rate, batch_size, weight_decay: optimisation (cosine-decayed AdamW).
      val_fraction: share of each recording used for early stopping (0: train on all, keep the last).
      seed: PRNG seed for init, minibatches and the validation subset.

    Returns:
      :class:`MLPParams`.
    """
    src = "baselines.fit_mlp"
    windows, targets, position = lagged_pairs(traces, history, source=src)
    xs = as_trace_list(traces, source=src)
    mean = _training_mean(xs, src)
    stacked = np.concatenate(xs).astype(np.float64)
    std = np.sqrt(np.nanmean((stacked - mean) ** 2, 0))
    std = np.where(std > 0, std, 1.0)
    n = targets.shape[1]
    z_in = (
        np.where(np.isnan(windows), 0.0, (windows - mean) / std).astype(np.float32).reshape(len(windows), -1)
    )
    last = np.where(np.isnan(windows[:, -1]), mean, windows[:, -1])
    z_out = ((targets - last) / std).astype(np.float32)
    ok = np.isfinite(z_out)
    z_out = np.where(ok, z_out, 0.0)

    key_init, key_batch, key_val = jax.random.split(jax.random.key(seed), 3)
    is_val = position >= 1.0 - val_fraction if val_fraction > 0 else np.zeros(len(z_in), bool)
    if is_val.all() or (val_fraction > 0 and not is_val.any()):
        raise V.ValidationError(
            src, "val_fraction", None, f"{val_fraction} leaves no training or validation pairs"
        )
    train_idx = np.flatnonzero(~is_val)
    val_idx = np.flatnonzero(is_val)
    if len(val_idx) > 2048:
        val_idx = np.sort(np.asarray(jax.random.choice(key_val, val_idx, (2048,), replace=False)))
    if len(val_idx) == 0:
        val_idx = train_idx[:1]  # unused: with no validation split the last parameters are kept

    # A zero last layer starts the MLP as persistence (the increment is 0), a sensible prior.
    layers = nn.init_mlp(key_init, (*hidden, n), history * n, final_scale=0.0, activation=jax.nn.gelu)
    layers = _train_mlp(
        layers,
        jnp.asarray(z_in),
        jnp.asarray(z_out),
        jnp.asarray(ok),
        jnp.asarray(train_idx),
        jnp.asarray(val_idx),
        key_batch,
        steps=steps,
        batch=min(batch_size, len(train_idx)),
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        early_stop=val_fraction > 0,
    )
    return MLPParams(layers, jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32))


def _mlp_loss(layers, u: jax.Array, y: jax.Array, m: jax.Array) -> jax.Array:
    """Masked mean squared error of the MLP on a batch ``u [B, H*N]``, ``y [B, N]``, ``m [B, N]``."""
    pred = jax.vmap(functools.partial(_mlp_apply, layers))(u)
    return jnp.sum(jnp.where(m, (pred - y) ** 2, 0.0)) / jnp.maximum(m.sum(), 1)


@functools.partial(jax.jit, static_argnames=("steps", "batch", "learning_rate", "weight_decay", "early_stop"))
def _train_mlp(
    layers, z_in, z_out, ok, train_idx, val_idx, key, *, steps, batch, learning_rate, weight_decay, early_stop
):
    """``steps`` AdamW updates in one scan; returns the best-on-validation (or the last) parameters."""
    opt = optax.adamw(optax.cosine_decay_schedule(learning_rate, max(steps, 1)), weight_decay=weight_decay)
    val = (z_in[val_idx], z_out[val_idx], ok[val_idx])

    def update(carry, key):
        layers, state, best, best_loss = carry
        idx = train_idx[jax.random.randint(key, (batch,), 0, train_idx.shape[0])]
        grads = jax.grad(_mlp_loss)(layers, z_in[idx], z_out[idx], ok[idx])
        updates, state = opt.update(grads, state, layers)
        layers = optax.apply_updates(layers, updates)
        val_loss = _mlp_loss(layers, *val) if early_stop else -jnp.inf
        better = val_loss <= best_loss
        best = jax.tree.map(lambda a, b: jnp.where(better, a, b), layers, best)
        return (layers, state, best, jnp.minimum(val_loss, best_loss)), None

    init_loss = _mlp_loss(layers, *val) if early_stop else jnp.inf
    carry = (layers, opt.init(layers), layers, init_loss)
    (_, _, best, _), _ = jax.lax.scan(update, carry, jax.random.split(key, steps))
    return best


def mlp_step(params: MLPParams, history: jax.Array) -> jax.Array:
    """``x̂[t+1] = x[t] + std · MLP((x[t-H+1..t] - mean) / std)``. history ``[H, N]`` -> ``[N]``."""
    h = nn.mlp_widths(params.layers)[0] // params.mean.shape[0]
    window = fill_missing(history[-h:], params.mean)
    z = ((window - params.mean) / params.std).reshape(-1)
    return window[-1] + params.std * _mlp_apply(params.layers, z)


# ----------------------------------------------------------------------------- rollout and registry
def rollout(step: Step, params: Any, history: jax.Array, n_steps: int) -> jax.Array:
    """Forecast ``n_steps`` frames by feeding each prediction back into the window (one ``lax.scan``).

    ``x̂[t+k+1] = step(params, [.., x̂[t+k]])`` with the window shifted by one frame per step.

    Args:
      step: ``step(params, history [H, N]) -> [N]``.
      params: the forecaster's parameters.
      history: ``[H, N]`` observed frames, latest last.
      n_steps: number of frames to predict (static).

    Returns:
      ``[n_steps, N]`` predictions of ``x[t+1] .. x[t+n_steps]``.
    """

    def body(window, _):
        x_next = step(params, window)
        return jnp.concatenate([window[1:], x_next[None].astype(window.dtype)]), x_next

    _, preds = jax.lax.scan(body, history, None, length=n_steps)
    return preds


_REGISTRY: dict[str, tuple[Callable[..., Any], Step, str | None]] = {
    "persistence": (fit_persistence, persistence_step, None),
    "mean": (fit_mean, mean_step, None),
    "ar": (fit_ar, ar_step, "order"),
    "ridge_var": (fit_ridge_var, var_step, "order"),
    "masked_var": (fit_masked_var, masked_var_step, "order"),
    "mlp": (fit_mlp, mlp_step, "history"),
}

BASELINES: tuple[str, ...] = tuple(_REGISTRY)
"""Names accepted by :func:`make_baseline`."""


def make_baseline(name: str, **opts: Any) -> Forecaster:
    """Build a baseline :class:`Forecaster` with its fit options bound.

    Args:
      name: one of :data:`BASELINES`.
      **opts: keyword options of the matching ``fit_*`` (e.g. ``order=2``, ``lam=0.1``, ``mask=M`` for
        ``masked_var``, ``hidden=(32,)`` for ``mlp``); checked now, not at fit time.

    Returns:
      ``Forecaster(name, fit, step, history)`` with ``fit(traces) -> params``.

    Raises:
      ValueError: unknown name, or options the fit function does not take (or a missing ``mask``).
    """
    if name not in _REGISTRY:
        raise ValueError(
            f"mesojax.baselines.make_baseline: unknown baseline {name!r}; known: {list(BASELINES)}"
        )
    fit, step, history_opt = _REGISTRY[name]
    sig = inspect.signature(fit)
    try:
        bound = sig.bind(None, **opts)
    except TypeError as err:
        raise ValueError(
            f"mesojax.baselines.make_baseline({name!r}): bad options {sorted(opts)}: {err}"
        ) from None
    history = 1
    if history_opt is not None:
        history = int(bound.arguments.get(history_opt, sig.parameters[history_opt].default))
        if history < 1:
            raise ValueError(
                f"mesojax.baselines.make_baseline({name!r}): {history_opt} must be ≥ 1, got {history}"
            )
    return Forecaster(name, functools.partial(fit, **opts), step, history)
