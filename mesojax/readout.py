"""Behaviour read from the predicted neural state, fitted in closed form (``model.behaviour_readout="state"``).

The simulator forecasts ``x̂[t+1]`` from the neurons up to ``t``. This readout is the reference decoder
of the current state plus a correction from the model's predicted change, kept per target only where it
helps on held-out training rows:

    ŷ_k[t+1] = b_k + Σ_(i∈group(k)) A[i,k] x_i[t]  +  c_k · Σ_i D[i,k] (x̂_i[t+1] - x_i[t])
    A: ridge on x[t] (λ on held-out rows; the decoder);  D: ridge on the residual (λ likewise)
    c_k ∈ {0, 1}: 1 where the correction lowers the error on the last 20 % of the training rows
    reversal-like 0/1 targets:  label_k = [ŷ_k ≥ τ_k],  τ_k maximising balanced accuracy on training rows
    discrete modes:             LDA on [x[t], x̂[t+1] - x[t]] or on x[t], whichever is more accurate
                                (balanced) on the held-out training rows

Each target reads only the neurons of its own circuit (``columns``: a disjoint union's group). The
model's contribution enters stagewise, so it is used only where it adds to what the current state
already tells (on the C. elegans cross-validation it does, on a stationary phantom barely;
BENCHMARKS.md). A 0/1 target gets its threshold ``τ`` from the training rows so that both classes count
equally (a rare reversal is not thresholded away at 0.5). The readout is fitted after training, on
frozen forecasts, so behaviour never moves the neural model.

Example::

    ro = fit(x_hat_train, x_train, beh_train, columns=[np.arange(n)], targets=[np.arange(k)], binary=is01)
    y = predict(ro, x_hat_test, x_test)               # [T, K] continuous behaviour (normalised units)
    labels = predict_labels(ro, x_hat_test, x_test)   # [T, K] 0/1 for binary targets (NaN elsewhere)
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from mesojax import metrics
from mesojax.data import validation as V


VAL_FRACTION = 0.2
"""Share of the training rows (the last ones) that decides where the model's correction is kept."""


class GroupReadout(NamedTuple):
    """One circuit's readout: ``ŷ[:, targets] = base(x[t]) + keep · correction(x̂ - x[t])``.

    Attributes:
      columns: ``[n_g]`` neurons read; targets: ``[k_g]`` behaviour targets predicted.
      base: ridge decoder of ``x[t]``; correction: ridge decoder of ``x̂[t+1] - x[t]`` (None: unused).
      keep: ``[k_g]`` bool, targets that use the correction.
    """

    columns: np.ndarray
    targets: np.ndarray
    base: metrics.RidgeDecoder
    correction: metrics.RidgeDecoder | None
    keep: np.ndarray


class StateReadout(NamedTuple):
    """A fitted readout: one :class:`GroupReadout` per circuit, thresholds of 0/1 targets, a mode LDA.

    Attributes:
      groups: per circuit, a :class:`GroupReadout`.
      threshold: ``[K]`` decision threshold (in the units of the fitted targets) of each 0/1 target;
        NaN for continuous targets.
      modes: :class:`mesojax.metrics.LDADecoder` of discrete modes, or None.
      modes_use_forecast: whether the mode LDA reads ``[x[t], x̂ - x[t]]`` (else ``x[t]``).
      n_targets: K.
    """

    groups: tuple
    threshold: np.ndarray
    modes: object
    modes_use_forecast: bool
    n_targets: int


def balanced_threshold(score: np.ndarray, label: np.ndarray, middle: float = 0.5) -> float:
    """The cut on ``score [T]`` maximising balanced accuracy of ``score ≥ τ`` against 0/1 ``label [T]``.

    Ties go to the cut nearest the middle of the two classes' mean scores. NaN labels are skipped; with one
    class only, `middle` (the 0/1 midpoint in the units of `score`) is returned. O(T log T): the true
    positive and negative rates of every cut come from cumulative counts over the sorted scores.
    """
    keep = np.isfinite(label) & np.isfinite(score)
    s, y = score[keep], label[keep].astype(int)
    if s.size == 0 or y.min() == y.max():
        return float(middle)
    order = np.sort(np.unique(s))
    cuts = np.concatenate([order[:1] - 1.0, (order[1:] + order[:-1]) / 2, order[-1:] + 1.0])
    pos, neg = np.sort(s[y == 1]), np.sort(s[y == 0])
    tpr = 1.0 - np.searchsorted(pos, cuts, side="left") / len(pos)  # share of positives with score >= cut
    tnr = np.searchsorted(neg, cuts, side="left") / len(neg)  # share of negatives with score < cut
    bal = (tpr + tnr) / 2
    best = np.flatnonzero(bal >= bal.max() - 1e-12)
    mid = 0.5 * (pos.mean() + neg.mean())
    return float(cuts[best[np.argmin(np.abs(cuts[best] - mid))]])


def features(x_hat: np.ndarray, x_now: np.ndarray) -> np.ndarray:
    """The mode LDA's inputs ``[x[t], x̂[t+1] - x[t]]`` (``[T, 2N]``) from ``x_hat, x_now [T, N]``."""
    x_hat, x_now = np.asarray(x_hat, np.float64), np.asarray(x_now, np.float64)
    return np.concatenate([x_now, x_hat - x_now], axis=1)


def _stagewise(x_now: np.ndarray, change: np.ndarray, y: np.ndarray) -> tuple:
    """Decoder of `x_now`, plus a ridge correction from `change` kept per target where it helps on held-out rows."""
    fit_rows = np.arange(len(y)) < (1 - VAL_FRACTION) * len(y)
    base = metrics.linear_decoder(x_now[fit_rows], y[fit_rows])
    resid = y[fit_rows] - metrics.decode(base, x_now[fit_rows])
    corr = metrics.linear_decoder(change[fit_rows], resid)
    val_y = y[~fit_rows]
    plain = metrics.decode(base, x_now[~fit_rows])
    both = plain + metrics.decode(corr, change[~fit_rows])
    keep = np.nansum((both - val_y) ** 2, 0) < np.nansum((plain - val_y) ** 2, 0)
    base = metrics.linear_decoder(x_now, y)
    corr = metrics.linear_decoder(change, y - metrics.decode(base, x_now)) if keep.any() else None
    return base, corr, keep


def fit(x_hat: np.ndarray, x_now: np.ndarray, behaviour: np.ndarray | None, *, columns: Sequence[np.ndarray],
        targets: Sequence[np.ndarray], binary: np.ndarray | None = None,
        modes: np.ndarray | None = None, binary_truth: np.ndarray | None = None) -> StateReadout:
    """Fit the readout on training rows.

    Args:
      x_hat: ``[T, N]`` predicted state (row ``t`` is the forecast of frame ``t``); NaN allowed.
      x_now: ``[T, N]`` the observed state one frame earlier (row ``t`` is frame ``t - 1``).
      behaviour: ``[T, K]`` behaviour of the same frames (normalised; NaN missing), or None.
      columns, targets: per group, the neurons it reads and the behaviour targets it predicts.
      binary: ``[K]`` bool, targets that are 0/1 (thresholded for labels).
      modes: ``[T]`` int mode labels (-1 unknown), or None.
      binary_truth: ``[T, K]`` the 0/1 values of binary targets (default: ``behaviour``).

    Returns:
      :class:`StateReadout`.
    """
    x_hat, x_now = np.asarray(x_hat, np.float64), np.asarray(x_now, np.float64)
    x_now = np.where(np.isfinite(x_now), x_now, np.nan)
    change = x_hat - x_now
    k = 0 if behaviour is None else behaviour.shape[1]
    groups = []
    threshold = np.full(k, np.nan)
    binary = np.zeros(k, bool) if binary is None else np.asarray(binary, bool)
    truth01 = behaviour if binary_truth is None else binary_truth
    for cols, ks in zip(columns, targets):
        cols, ks = np.asarray(cols), np.asarray(ks)
        if ks.size == 0 or behaviour is None:
            continue
        base, corr, keep = _stagewise(x_now[:, cols], change[:, cols], behaviour[:, ks])
        group = GroupReadout(cols, ks, base, corr, keep)
        groups.append(group)
        score = _predict_group(group, x_hat, x_now)
        for j, kk in enumerate(ks):
            if binary[kk]:
                # 0.5 in the units of the fitted (normalised) targets, for a column with one class only.
                middle = _units_of(behaviour[:, kk], truth01[:, kk], 0.5)
                threshold[kk] = balanced_threshold(score[:, j], truth01[:, kk], middle)
    lda, use_forecast = None, False
    if modes is not None:
        fit_rows = np.arange(len(modes)) < (1 - VAL_FRACTION) * len(modes)
        both = features(x_hat, x_now)
        score = {}
        try:
            for name, x in (("plain", x_now), ("forecast", both)):
                held = metrics.linear_decoder(x[fit_rows], modes[fit_rows], discrete=True)
                score[name] = metrics.balanced_accuracy(modes[~fit_rows], metrics.decode(held, x[~fit_rows]))
            use_forecast = bool(score["forecast"] > score["plain"])
        except V.ValidationError:  # one mode only in the first rows: no comparison, read x[t] alone
            use_forecast = False
        lda = metrics.linear_decoder(both if use_forecast else x_now, modes, discrete=True)
    return StateReadout(tuple(groups), threshold, lda, use_forecast, k)


def _units_of(fitted: np.ndarray, raw: np.ndarray, value: float) -> float:
    """`value` (raw units) in the units of `fitted`, an affine image of `raw` (normalised targets)."""
    ok = np.isfinite(fitted) & np.isfinite(raw)
    a, b = raw[ok], fitted[ok]
    if a.size < 2 or np.ptp(a) == 0:
        return float(b[0] + (value - a[0])) if a.size else float(value)
    slope = (b.max() - b.min()) / (a.max() - a.min())
    return float(b[np.argmin(a)] + slope * (value - a.min()))


def _predict_group(group: GroupReadout, x_hat: np.ndarray, x_now: np.ndarray) -> np.ndarray:
    x_now = np.asarray(x_now, np.float64)[:, group.columns]
    y = metrics.decode(group.base, x_now)
    if group.correction is not None:
        change = np.asarray(x_hat, np.float64)[:, group.columns] - x_now
        y = y + group.keep * metrics.decode(group.correction, change)
    return y


def predict(ro: StateReadout, x_hat: np.ndarray, x_now: np.ndarray) -> np.ndarray:
    """Continuous behaviour ``[T, K]`` from ``x_hat, x_now [T, N]`` (:func:`fit`); NaN where no group reads it."""
    out = np.full((len(x_hat), ro.n_targets), np.nan)
    for group in ro.groups:
        out[:, group.targets] = _predict_group(group, x_hat, x_now)
    return out


def predict_labels(ro: StateReadout, x_hat: np.ndarray, x_now: np.ndarray) -> np.ndarray:
    """0/1 labels ``[T, K]`` of binary targets (``ŷ ≥ τ``); NaN for continuous targets."""
    y = predict(ro, x_hat, x_now)
    return np.where(np.isfinite(ro.threshold), (y >= ro.threshold).astype(float), np.nan)


def predict_modes(ro: StateReadout, x_hat: np.ndarray, x_now: np.ndarray) -> np.ndarray:
    """Mode labels ``[T]`` from ``x_hat, x_now [T, N]``."""
    if ro.modes is None:
        raise ValueError("readout.predict_modes: the readout was fitted without modes")
    x = features(x_hat, x_now) if ro.modes_use_forecast else np.asarray(x_now, np.float64)
    return metrics.decode(ro.modes, x)
