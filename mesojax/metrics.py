r"""Evaluation metrics: multi-step forecast skill, partition recovery, motif matching, behaviour decoding.

Model-independent pieces of DESIGN.md "Evaluation"; the driver (:mod:`mesojax.evaluate`) combines them.

* **Forecasting** — :func:`forecast_metrics` rolls a forecaster (``step(params, history [H, N]) -> [N]``,
  see :mod:`mesojax.baselines`) forward from every valid start of held-out traces (``jax.vmap`` over
  starts of a ``lax.scan`` rollout, in chunks) and reports MSE and R² per horizon 1..10.
  ``R² = 1 - SSE / SST`` with ``SST = Σ (y - ȳ)²`` around the per-neuron mean ``ȳ`` of the evaluated
  targets at that horizon (or around a given ``baseline_mean``, e.g. the training mean, which makes R² the
  skill relative to the mean baseline). *Pooled* R² sums SSE and SST over neurons; the per-neuron
  median is reported too. NaN targets are masked out everywhere.
* **Phantoms** — :func:`adjusted_rand_index` (domains vs. planted instances),
  :func:`match_filters_to_motifs` (Hungarian matching of filters to motif types), :func:`filters_used`.
* **Behaviour** — a reference linear decoder from the same neurons: ridge regression for continuous
  behaviour (R²), shrinkage LDA for discrete modes (accuracy, balanced accuracy).

Example:
    >>> import numpy as np
    >>> from mesojax import baselines, metrics
    >>> x = np.cumsum(np.random.default_rng(0).normal(size=(300, 4)), 0).astype(np.float32)
    >>> f = baselines.make_baseline("persistence")
    >>> m = metrics.forecast_metrics(f.step, f.fit(x[:200]), x[200:], history=f.history, horizons=(1, 5))
    >>> m["horizons"].tolist(), bool(m["r2"][0] > m["r2"][1] > 0)
    ([1, 5], True)
    >>> metrics.adjusted_rand_index([0, 0, 1, 1], [5, 5, 7, 7])
    1.0
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from mesojax import baselines, progress
from mesojax.data import validation as V

__all__ = [
    "mse",
    "r2_score",
    "forecast_metrics",
    "adjusted_rand_index",
    "MotifMatch",
    "match_filters_to_motifs",
    "FilterUsage",
    "filters_used",
    "RidgeDecoder",
    "LDADecoder",
    "linear_decoder",
    "decode",
    "decoder_metrics",
    "accuracy",
    "balanced_accuracy",
]

# Elements of the [chunk, max horizon, N] prediction tensor materialised at once by forecast_metrics.
_CHUNK_ELEMENTS = 1 << 24


# ----------------------------------------------------------------------------- primitives
def mse(y_true: jax.Array, y_pred: jax.Array) -> jax.Array:
    """Mean squared error over the entries where ``y_true`` is finite: ``Σ_ok (ŷ - y)² / #ok``.

    Args:
      y_true: ``[...]`` targets, NaN = missing (masked out).
      y_pred: same shape as ``y_true``.

    Returns:
      ``[]`` float (NaN when no target is finite).
    """
    y_true, y_pred = jnp.asarray(y_true), jnp.asarray(y_pred)
    ok = jnp.isfinite(y_true)
    sse = jnp.sum(jnp.where(ok, (y_pred - jnp.where(ok, y_true, 0.0)) ** 2, 0.0))
    return sse / jnp.sum(ok)


def r2_score(y_true: jax.Array, y_pred: jax.Array, *, per_column: bool = False) -> jax.Array:
    """Coefficient of determination ``R² = 1 - SSE / SST``, NaN targets masked.

    ``SST = Σ_t (y[t, j] - ȳ_j)²`` around the per-column mean over the leading (time) axis. Pooled
    (default): ``1 - Σ_j SSE_j / Σ_j SST_j``; ``per_column``: one R² per trailing entry.

    Args:
      y_true: ``[T]`` or ``[T, ...]`` targets, NaN = missing.
      y_pred: same shape.
      per_column: return ``[...]`` per-column R² instead of the pooled scalar.

    Returns:
      ``[]`` or ``[...]`` float (NaN where SST is 0 or no target is finite).

    Example:
      >>> float(r2_score(jnp.array([1.0, 2.0, 3.0]), jnp.array([1.0, 2.0, 3.0])))
      1.0
      >>> float(r2_score(jnp.array([1.0, 2.0, 3.0]), jnp.array([2.0, 2.0, 2.0])))
      0.0
    """
    y_true, y_pred = jnp.asarray(y_true), jnp.asarray(y_pred)
    ok = jnp.isfinite(y_true)
    y0 = jnp.where(ok, y_true, 0.0)
    n = ok.sum(0)
    ybar = y0.sum(0) / jnp.maximum(n, 1)
    sse = jnp.sum(jnp.where(ok, (y_pred - y0) ** 2, 0.0), axis=0)
    sst = jnp.sum(jnp.where(ok, (y0 - ybar) ** 2, 0.0), axis=0)
    if not per_column:
        sse, sst = sse.sum(), sst.sum()
    return jnp.where(sst > 0, 1.0 - sse / jnp.where(sst > 0, sst, 1.0), jnp.nan)


# ----------------------------------------------------------------------------- forecasting
def step_rollout(step: baselines.Step, params: Any, window: jax.Array, exog: jax.Array, n_steps: int) -> jax.Array:
    """The default rollout of :func:`forecast_metrics`: feed `step`'s predictions back (exog unused)."""
    del exog
    return baselines.rollout(step, params, window, n_steps)


@functools.partial(jax.jit, static_argnames=("rollout", "step", "n_steps"))
def _chunk_sums(rollout, step, params, windows, exog, targets, weight, shift, n_steps):
    """Roll out every window of a chunk and reduce to per-(horizon, neuron) sums.

    windows ``[C, H, N]``, exog ``[C, H + n_steps, S]``, targets ``[C, n_steps, N]``, weight ``[C]``
    bool (padding = False), shift ``[N]``. Returns SSE, count, Σ(y - shift), Σ(y - shift)², each
    ``[n_steps, N]``.
    """
    preds = jax.vmap(lambda h, e: rollout(step, params, h, e, n_steps))(windows, exog)
    ok = jnp.isfinite(targets) & weight[:, None, None]
    y = jnp.where(ok, targets, 0.0)
    # A non-finite prediction of an observed target stays NaN: a diverging model must not look good.
    sse = jnp.sum(jnp.where(ok, (preds - y) ** 2, 0.0), axis=0)
    yc = jnp.where(ok, y - shift, 0.0)
    return sse, ok.sum(0), yc.sum(0), (yc**2).sum(0)


def forecast_metrics(
    step: baselines.Step,
    params: Any,
    traces: Any,
    *,
    history: int,
    horizons: Iterable[int] = range(1, 11),
    stride: int = 1,
    baseline_mean: np.ndarray | None = None,
    fill: np.ndarray | None = None,
    chunk_size: int | None = None,
    exog: Any = None,
    rollout: Any = step_rollout,
) -> dict[str, np.ndarray]:
    """Multi-step forecast MSE and R² per horizon on held-out traces.

    For every start ``t`` (``H-1 ≤ t ≤ T-1-h_max``, every ``stride``-th) in every recording the forecaster
    is rolled out ``h_max`` steps from the observed window ``x[t-H+1..t]``; prediction ``k`` is scored
    against ``x[t+k]``. All horizons use the same starts, so they are comparable. NaN targets are masked.

    Args:
      step: ``step(params, history [H, N]) -> [N]``, pure (a module-level function or other hashable).
      params: the forecaster's parameters.
      traces: held-out ``[T, N]``, a Recording, or a list of them (same N).
      history: H, the window length ``step`` expects.
      horizons: forecast steps to report (≥ 1).
      stride: use every ``stride``-th start.
      baseline_mean: ``[N]``; if given, SST is taken around it instead of the evaluated targets' mean.
      fill: ``[N]``; if given, NaN inputs are replaced by it before the rollout (the baselines already
        fill with their training mean; a model that cannot take NaN needs this).
      chunk_size: starts rolled out at once (default: bounded by ~16M predicted values).
      exog: exogenous input aligned with `traces` (``[T, S]`` or a list like `traces`, e.g. stimulus),
        handed to `rollout` as the ``[H + h_max, S]`` slice around each start; None: ``S = 0``.
      rollout: ``rollout(step, params, window [H, N], exog [H + h_max, S], n_steps) -> [n_steps, N]``,
        a module-level function (default :func:`step_rollout`); a model with recurrent state or
        exogenous input supplies its own, with any hashable `step` (e.g. its static spec).

    Returns:
      dict of numpy arrays: ``horizons [K]``, ``mse [K]`` (pooled over neurons and starts), ``r2 [K]``
      (pooled), ``r2_median [K]`` (median over neurons of per-neuron R²), ``mse_per_neuron [K, N]``,
      ``r2_per_neuron [K, N]`` (NaN where a neuron has < 2 targets or zero SST), the sums behind them
      ``sse_per_neuron``, ``sst_per_neuron``, ``count_per_neuron`` ``[K, N]`` (for :func:`pool_neurons`),
      ``n_targets [K]`` (finite targets scored) and ``n_starts`` (``[]``).

    Raises:
      ValidationError: bad horizons/stride/shapes, or no recording long enough for ``H + h_max`` frames.
    """
    src = "metrics.forecast_metrics"
    xs = baselines.as_trace_list(traces, source=src)
    n = xs[0].shape[1]
    horizons = np.asarray(sorted(set(int(h) for h in horizons)), np.int64)
    if horizons.size == 0 or horizons[0] < 1:
        raise V.ValidationError(src, "horizons", None, f"need horizons ≥ 1, got {horizons.tolist()}")
    if stride < 1 or history < 1:
        raise V.ValidationError(src, "stride" if stride < 1 else "history", None, "must be ≥ 1")
    for name, vec in (("baseline_mean", baseline_mean), ("fill", fill)):
        if vec is not None:
            V.check_shape(src, name, np.asarray(vec), (n,))
            V.check_finite(src, name, np.asarray(vec))
    h_max = int(horizons[-1])

    # Starts as global row indices into the concatenated recordings, never crossing a boundary.
    offsets = np.cumsum([0] + [len(x) for x in xs])
    starts = np.concatenate(
        [off + np.arange(history - 1, len(x) - h_max, stride) for off, x in zip(offsets, xs)]
    )
    if starts.size == 0:
        raise V.ValidationError(
            src,
            "traces",
            None,
            f"no recording has the {history + h_max} frames needed (history + max horizon)",
        )
    ally = np.concatenate(xs)  # targets are never filled: NaN targets are masked instead
    if exog is None:
        allz = np.zeros((len(ally), 0), np.float32)
    else:
        parts = exog if isinstance(exog, (list, tuple)) else [exog]
        zs = [np.asarray(z, np.float32).reshape(len(z), -1) for z in parts]
        if [len(z) for z in zs] != [len(x) for x in xs]:
            raise V.ValidationError(src, "exog", None, "exog must have one row per frame of every recording")
        allz = np.concatenate(zs)
    allx = ally if fill is None else np.where(np.isnan(ally), np.asarray(fill, np.float32), ally)
    shift = np.asarray(baseline_mean if baseline_mean is not None else np.nanmean(ally, 0), np.float64)
    shift = np.where(np.isfinite(shift), shift, 0.0)

    chunk = chunk_size or max(1, _CHUNK_ELEMENTS // (h_max * n))
    chunk = int(min(chunk, starts.size))
    n_chunks = -(-starts.size // chunk)
    padded = np.concatenate([starts, np.full(n_chunks * chunk - starts.size, starts[0])])
    valid = np.arange(padded.size) < starts.size
    acc = [np.zeros((h_max, n), np.float64) for _ in range(4)]
    win_offsets = np.arange(-history + 1, 1)
    tgt_offsets = np.arange(1, h_max + 1)
    exog_offsets = np.arange(-history + 1, h_max + 1)
    shift32 = jnp.asarray(shift, jnp.float32)
    meter = progress.Meter("forecast chunks", n_chunks, unit="chunks")
    for c in range(n_chunks):
        sl = slice(c * chunk, (c + 1) * chunk)
        t0 = padded[sl]
        out = _chunk_sums(
            rollout, step, params, jnp.asarray(allx[t0[:, None] + win_offsets]),
            jnp.asarray(allz[t0[:, None] + exog_offsets]), jnp.asarray(ally[t0[:, None] + tgt_offsets]),
            jnp.asarray(valid[sl]), shift32, n_steps=h_max,
        )
        for a, o in zip(acc, out):
            a += np.asarray(o, np.float64)
        meter.update(c + 1)
    sse, count, s1, s2 = (a[horizons - 1] for a in acc)
    sst = s2 if baseline_mean is not None else s2 - s1**2 / np.maximum(count, 1)
    sst = np.maximum(sst, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mse_n = np.where(count > 0, sse / np.maximum(count, 1), np.nan)
        r2_n = np.where((count > 1) & (sst > 0), 1.0 - sse / np.where(sst > 0, sst, 1.0), np.nan)
    per_neuron = {
        "horizons": horizons,
        "mse_per_neuron": mse_n,
        "r2_per_neuron": r2_n,
        "sse_per_neuron": sse,
        "sst_per_neuron": sst,
        "count_per_neuron": count,
        "n_starts": np.asarray(starts.size),
    }
    return dict(pool_neurons(per_neuron, np.arange(n)), **per_neuron)


def pool_neurons(m: dict[str, np.ndarray], columns: np.ndarray) -> dict[str, np.ndarray]:
    """Pooled forecast metrics of a subset of neurons, from :func:`forecast_metrics`' per-neuron sums.

    ``mse = Σ_{i∈cols} SSE_i / Σ n_i`` and ``R² = 1 - Σ SSE_i / Σ SST_i`` per horizon, exactly what
    :func:`forecast_metrics` reports when run on those columns alone (SST around each neuron's own mean).

    Args:
      m: a :func:`forecast_metrics` result.
      columns: ``[n]`` neuron indices (or an ``[N]`` boolean mask).

    Returns:
      dict with ``horizons``, ``mse``, ``r2``, ``r2_median``, ``n_targets``, ``n_starts``.
    """
    sse, sst, count = (np.asarray(m[k])[:, columns] for k in ("sse_per_neuron", "sst_per_neuron", "count_per_neuron"))
    r2_n = np.asarray(m["r2_per_neuron"])[:, columns]
    tot = count.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mse = np.where(tot > 0, sse.sum(1) / np.maximum(tot, 1), np.nan)
        r2 = 1.0 - sse.sum(1) / sst.sum(1)
        r2_median = np.array([np.nanmedian(r) if np.isfinite(r).any() else np.nan for r in r2_n])
    return {"horizons": m["horizons"], "mse": mse, "r2": r2, "r2_median": r2_median,
            "n_targets": tot.astype(np.int64), "n_starts": m["n_starts"]}


# ----------------------------------------------------------------------------- partitions
def _contingency(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense contingency table ``[A, B]`` of two label vectors, with the sorted unique labels of each."""
    ua, ia = np.unique(a, return_inverse=True)
    ub, ib = np.unique(b, return_inverse=True)
    table = np.zeros((len(ua), len(ub)), np.int64)
    np.add.at(table, (ia.ravel(), ib.ravel()), 1)
    return table, ua, ub


def _check_labels(src: str, a: Any, b: Any, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    V.check_shape(src, names[0], a, (None,))
    V.check_shape(src, names[1], b, (len(a),))
    if len(a) == 0:
        raise V.ValidationError(src, names[0], None, "no labels given")
    return a, b


def adjusted_rand_index(labels_true: Sequence[Any], labels_pred: Sequence[Any]) -> float:
    r"""Adjusted Rand index of two partitions of the same items (Hubert & Arabie 1985).

    With contingency counts ``n_ij``, row sums ``a_i``, column sums ``b_j`` and ``C(k) = k(k-1)/2``:

    .. math:: \mathrm{ARI} = \frac{Σ C(n_{ij}) - E}{\tfrac12 [Σ C(a_i) + Σ C(b_j)] - E},
              \qquad E = Σ C(a_i)\, Σ C(b_j) / C(n).

    1 for identical partitions (up to relabelling), ≈ 0 in expectation for independent ones, can be < 0.
    When both partitions are trivial in the same way (the denominator is 0) it is 1.

    Args:
      labels_true: ``[N]`` labels (any hashable dtype), e.g. planted instance per neuron.
      labels_pred: ``[N]`` labels, e.g. inferred domain per neuron.

    Returns:
      The ARI as a float.

    Example:
      >>> round(adjusted_rand_index([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]), 6)   # (2 - 1.2) / (4.5 - 1.2)
      0.242424
    """
    a, b = _check_labels(
        "metrics.adjusted_rand_index", labels_true, labels_pred, ("labels_true", "labels_pred")
    )
    table, _, _ = _contingency(a, b)
    comb = lambda k: k * (k - 1) / 2.0  # noqa: E731
    sum_ij = comb(table.astype(np.float64)).sum()
    sum_a = comb(table.sum(1).astype(np.float64)).sum()
    sum_b = comb(table.sum(0).astype(np.float64)).sum()
    expected = sum_a * sum_b / comb(float(len(a))) if len(a) > 1 else 0.0
    denom = 0.5 * (sum_a + sum_b) - expected
    if denom == 0:
        return 1.0
    return float((sum_ij - expected) / denom)


class MotifMatch(NamedTuple):
    """Result of :func:`match_filters_to_motifs` (K motif types, F filters).

    Attributes:
      assignment: ``[K]`` filter label matched to each motif (``-1``: unmatched, when F < K).
      accuracy: fraction of neurons whose filter is the one matched to their motif.
      all_distinct: every motif's majority filter differs from every other motif's (no two motif types
        collapsed onto one filter).
      all_matched: every motif received a filter (F ≥ K).
      majority: ``[K]`` the most frequent filter of each motif.
      purity: ``[K]`` fraction of each motif's neurons on its matched filter.
      motifs: ``[K]`` motif labels (row order of ``contingency``).
      filters: ``[F]`` filter labels (column order).
      contingency: ``[K, F]`` neuron counts.
    """

    assignment: np.ndarray
    accuracy: float
    all_distinct: bool
    all_matched: bool
    majority: np.ndarray
    purity: np.ndarray
    motifs: np.ndarray
    filters: np.ndarray
    contingency: np.ndarray


def match_filters_to_motifs(filter_of_neuron: Sequence[int], motif_of_neuron: Sequence[int]) -> MotifMatch:
    """Match basis filters to planted motif types by maximum overlap (Hungarian algorithm).

    Builds the contingency table ``C[k, f]`` = number of neurons of motif k claimed by filter f and finds
    the one-to-one matching maximising ``Σ C[k, match(k)]`` (``scipy.optimize.linear_sum_assignment``).

    Args:
      filter_of_neuron: ``[N]`` filter index of each neuron (its domain's filter).
      motif_of_neuron: ``[N]`` planted motif type of each neuron.

    Returns:
      :class:`MotifMatch` (``assignment`` and ``accuracy`` first).

    Example:
      >>> m = match_filters_to_motifs([2, 2, 0, 0, 0], [0, 0, 1, 1, 1])
      >>> m.assignment.tolist(), m.accuracy, m.all_distinct
      ([2, 0], 1.0, True)
    """
    f, k = _check_labels(
        "metrics.match_filters_to_motifs",
        filter_of_neuron,
        motif_of_neuron,
        ("filter_of_neuron", "motif_of_neuron"),
    )
    table, motifs, filters = _contingency(k, f)
    rows, cols = scipy.optimize.linear_sum_assignment(table, maximize=True)
    matched_col = np.full(len(motifs), -1, np.int64)
    matched_col[rows] = cols
    assignment = np.where(matched_col >= 0, filters[np.maximum(matched_col, 0)], -1)
    overlap = np.where(matched_col >= 0, table[np.arange(len(motifs)), np.maximum(matched_col, 0)], 0)
    majority_col = table.argmax(1)
    return MotifMatch(
        assignment=assignment,
        accuracy=float(overlap.sum() / len(f)),
        all_distinct=bool(len(np.unique(majority_col)) == len(motifs)),
        all_matched=bool((matched_col >= 0).all()),
        majority=filters[majority_col],
        purity=overlap / table.sum(1),
        motifs=motifs,
        filters=filters,
        contingency=table,
    )


class FilterUsage(NamedTuple):
    """Result of :func:`filters_used`: ``n_used`` filters, ``used [B]`` bool, ``fraction [B]`` of usage."""

    n_used: int
    used: np.ndarray
    fraction: np.ndarray


def filters_used(usage: Sequence[float], threshold: float = 0.01) -> FilterUsage:
    """Count basis filters in use: those holding more than ``threshold`` of the total usage.

    ``fraction_b = usage_b / Σ usage``; filter b is used iff ``fraction_b > threshold``. Compare
    ``n_used`` with the planted number of motif types K.

    Args:
      usage: ``[B]`` non-negative usage per filter (e.g. assignment mass or neuron counts).
      threshold: minimum share of the total usage, in [0, 1).

    Returns:
      :class:`FilterUsage`.

    Example:
      >>> filters_used([50, 0.1, 30, 0], threshold=0.01).n_used
      2
    """
    src = "metrics.filters_used"
    u = np.asarray(usage, np.float64)
    V.check_shape(src, "usage", u, (None,))
    V.check_finite(src, "usage", u)
    V.check_nonnegative(src, "usage", u)
    if not 0.0 <= threshold < 1.0:
        raise V.ValidationError(src, "threshold", None, f"must be in [0, 1), got {threshold}")
    total = u.sum()
    fraction = u / total if total > 0 else np.zeros_like(u)
    used = fraction > threshold
    return FilterUsage(int(used.sum()), used, fraction)


# ----------------------------------------------------------------------------- behaviour decoding
class RidgeDecoder(NamedTuple):
    """Continuous decoder ``ŷ = intercept + x @ weight``: weight ``[N, K]``, intercept ``[K]``, fill ``[N]``.

    ``lam`` is the ridge strength used (given or chosen on the validation split).
    """

    weight: np.ndarray
    intercept: np.ndarray
    fill: np.ndarray
    lam: float


class LDADecoder(NamedTuple):
    """Discrete decoder: ``argmax_c (x @ weight[:, c] + bias[c])``; ``classes [C]`` the label values."""

    weight: np.ndarray
    bias: np.ndarray
    classes: np.ndarray
    fill: np.ndarray


def _stack_rows(data: Any) -> np.ndarray:
    """One array from an array/Recording or a list of them (concatenated along time)."""
    items = list(data) if isinstance(data, (list, tuple)) and np.ndim(data[0]) >= 1 else [data]
    return np.concatenate([np.asarray(getattr(d, "traces", d)) for d in items])


def linear_decoder(
    train_x: Any,
    train_y: Any,
    *,
    discrete: bool = False,
    lam: float | None = None,
    lam_grid: Sequence[float] = baselines.DEFAULT_LAM_GRID,
    val_fraction: float = 0.2,
    shrinkage: float = 0.1,
) -> RidgeDecoder | LDADecoder:
    """Fit the reference linear behaviour decoder from neural activity.

    * continuous (``discrete=False``): ridge regression per behaviour column, ``ŷ = b + W x`` (λ relative
      to the mean input variance; ``None`` picks it on the last ``val_fraction`` of the rows); rows with NaN
      behaviour are masked per column;
    * discrete: linear discriminant analysis with shrinkage covariance
      ``Σ = (1-α) Σ_pooled + α · mean(diag Σ_pooled) I`` and class priors from the training frequencies;
      rows with label ``-1`` (unknown) are skipped.

    NaN neural inputs are filled with the per-neuron training mean (also at decode time).

    Args:
      train_x: ``[T, N]`` activity (or a list of ``[T_i, N]``, concatenated).
      train_y: ``[T]`` / ``[T, K]`` continuous behaviour, or ``[T]`` integer mode labels (lists concatenated).
      discrete: decode discrete modes (LDA) instead of continuous behaviour (ridge).
      lam, lam_grid, val_fraction: ridge strength for continuous decoding.
      shrinkage: α in [0, 1] for LDA.

    Returns:
      :class:`RidgeDecoder` or :class:`LDADecoder`; use :func:`decode` / :func:`decoder_metrics`.
    """
    src = "metrics.linear_decoder"
    x = _stack_rows(train_x).astype(np.float64)
    y = _stack_rows(train_y)
    V.check_shape(src, "train_x", x, (None, None))
    if len(y) != len(x):
        raise V.ValidationError(
            src, "train_y", None, f"length {len(y)} does not match train_x length {len(x)}"
        )
    if np.isinf(x).any():
        raise V.ValidationError(
            src, "train_x", V.first_row(np.isinf(x)), "infinite value (use NaN for missing)"
        )
    fill = np.nanmean(x, 0)
    if not np.isfinite(fill).all():
        j = int(np.flatnonzero(~np.isfinite(fill))[0])
        raise V.ValidationError(src, "train_x", None, f"neuron (column) {j} has no finite sample")
    x = np.where(np.isnan(x), fill, x)
    if discrete:
        y = np.asarray(y)
        if y.dtype.kind not in "iu" or y.ndim != 1:
            raise V.ValidationError(
                src, "train_y", None, f"discrete labels must be [T] integers, got {y.dtype} {y.shape}"
            )
        keep = y >= 0
        x, y = x[keep], y[keep]
        classes, yi = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise V.ValidationError(src, "train_y", None, f"need ≥ 2 classes, got {classes.tolist()}")
        counts = np.bincount(yi, minlength=len(classes)).astype(np.float64)
        means = np.zeros((len(classes), x.shape[1]))
        np.add.at(means, yi, x)
        means /= counts[:, None]
        resid = x - means[yi]
        # Σ = (1 - α) RᵀR / dof + α s I with s = tr(RᵀR / dof) / N, written a I + b RᵀR.
        dof = max(len(x) - len(classes), 1)
        a = shrinkage * max(float(np.sum(resid * resid)) / dof / x.shape[1], 1e-12)
        b = (1 - shrinkage) / dof
        if b == 0:
            weight = means.T / a
        elif x.shape[1] > len(x) and a > 0:
            # More neurons than frames: Woodbury, Σ⁻¹ m = (m - Rᵀ (a/b I + R Rᵀ)⁻¹ R m) / a, a [T, T] solve in
            # place of the [N, N] one (at 10k neurons and both feature sets, a 20k × 20k covariance).
            inner = resid @ resid.T + (a / b) * np.eye(len(x))
            weight = (means.T - resid.T @ np.linalg.solve(inner, resid @ means.T)) / a
        else:
            weight = np.linalg.solve(b * (resid.T @ resid) + a * np.eye(x.shape[1]), means.T)  # [N, C]
        bias = -0.5 * np.sum(means.T * weight, 0) + np.log(counts / counts.sum())
        return LDADecoder(weight, bias, classes, fill)
    y = np.asarray(y, np.float64)
    y2 = y[:, None] if y.ndim == 1 else y
    V.check_shape(src, "train_y", y2, (len(x), None))
    if np.isinf(y2).any():
        raise V.ValidationError(
            src, "train_y", V.first_row(np.isinf(y2)), "infinite value (use NaN for missing)"
        )
    xs = x[:, None, :]
    w = np.isfinite(y2)
    if lam is None:
        is_val = np.arange(len(x)) >= (1 - val_fraction) * len(x)
        if not is_val.any() or is_val.all():
            raise V.ValidationError(
                src, "val_fraction", None, f"{val_fraction} leaves no training or validation rows"
            )
        coef, icpt = baselines.ridge_solve(xs[~is_val], y2[~is_val], w[~is_val], lam_grid)
        yv = np.where(w[is_val], y2[is_val], 0.0)
        sse = [
            np.where(w[is_val], (icpt[i] + x[is_val] @ coef[i].T - yv) ** 2, 0.0).sum()
            for i in range(len(lam_grid))
        ]
        lam = float(lam_grid[int(np.argmin(sse))])
    coef, icpt = baselines.ridge_solve(xs, y2, w, [lam])
    return RidgeDecoder(coef[0].T, icpt[0], fill, float(lam))


def decode(decoder: RidgeDecoder | LDADecoder, x: Any) -> np.ndarray:
    """Apply a decoder to activity ``[T, N]`` (NaN filled): ``[T, K]`` behaviour or ``[T]`` mode labels."""
    x = _stack_rows(x).astype(np.float64)
    V.check_shape("metrics.decode", "x", x, (None, len(decoder.fill)))
    x = np.where(np.isnan(x), decoder.fill, x)
    if isinstance(decoder, LDADecoder):
        return decoder.classes[np.argmax(x @ decoder.weight + decoder.bias, axis=1)]
    return decoder.intercept + x @ decoder.weight


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Fraction of correct labels over rows with a known label (``y_true >= 0``)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    keep = y_true >= 0
    return float(np.mean(y_true[keep] == y_pred[keep])) if keep.any() else float("nan")


def balanced_accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Mean over the classes present in ``y_true`` (``>= 0``) of the per-class recall."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    keep = y_true >= 0
    y_true, y_pred = y_true[keep], y_pred[keep]
    if not keep.any():
        return float("nan")
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)]))


def decoder_metrics(decoder: RidgeDecoder | LDADecoder, x: Any, y: Any) -> dict[str, Any]:
    """Score a decoder on held-out data.

    Returns:
      continuous: ``{"r2": pooled R², "r2_per_output": [K], "mse": float}`` (NaN behaviour masked);
      discrete: ``{"accuracy", "balanced_accuracy", "n": rows with a known label}``.
    """
    pred = decode(decoder, x)
    y = _stack_rows(y)
    if isinstance(decoder, LDADecoder):
        y = np.asarray(y)
        return {
            "accuracy": accuracy(y, pred),
            "balanced_accuracy": balanced_accuracy(y, pred),
            "n": int((y >= 0).sum()),
        }
    y2 = np.asarray(y, np.float64).reshape(len(pred), -1)
    return {
        "r2": float(r2_score(y2, pred)),
        "r2_per_output": np.asarray(r2_score(y2, pred, per_column=True)),
        "mse": float(mse(y2, pred)),
    }
