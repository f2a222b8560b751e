"""Behaviour read from the predicted neural state, fitted in closed form (``model.behaviour_readout="state"``).

The simulator forecasts ``x̂[t+1]`` from the neurons up to ``t``; this readout maps the current state
and that forecast to behaviour at ``t+1``:

    ŷ_k[t+1] = b_k + Σ_(i∈group(k)) A[i,k] x_i[t] + D[i,k] (x̂_i[t+1] - x_i[t])   (ridge, λ on held-out rows)
    reversal-like 0/1 targets:  label_k = [ŷ_k ≥ τ_k],  τ_k maximising balanced accuracy on training rows
    discrete modes:             LDA on the same features

The forecast enters as the predicted *change*, so the ridge penalty shrinks the model's contribution
towards the plain decoder from ``x[t]``: the simulator adds what it knows about where the state is going
(on the C. elegans cross-validation this beat both the decoder and a readout of ``x̂[t+1]`` alone;
BENCHMARKS.md).

Each target reads only the neurons of its own circuit (``columns``: a disjoint union's group). A 0/1
target gets its threshold ``τ`` from the training rows so that both classes count equally (a rare
reversal is not thresholded away at 0.5; two-class LDA with equal priors gives the same rule). The
readout is fitted after training, on frozen forecasts, so behaviour never moves the neural model.

Example::

    ro = fit(x_hat_train, x_train, beh_train, columns=[np.arange(n)], targets=[np.arange(k)], binary=is01)
    y = predict(ro, x_hat_test, x_test)               # [T, K] continuous behaviour (normalised units)
    labels = predict_labels(ro, x_hat_test, x_test)   # [T, K] 0/1 for binary targets (NaN elsewhere)
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from mesojax import metrics


class StateReadout(NamedTuple):
    """A fitted readout: one ridge decoder per group, thresholds of 0/1 targets, an optional mode LDA.

    Attributes:
      decoders: per group, ``(columns [n_g], targets [k_g], RidgeDecoder)``.
      threshold: ``[K]`` decision threshold (in the units of the fitted targets) of each 0/1 target;
        NaN for continuous targets.
      modes: :class:`mesojax.metrics.LDADecoder` of discrete modes, or None.
      n_targets: K.
    """

    decoders: tuple
    threshold: np.ndarray
    modes: object
    n_targets: int


def balanced_threshold(score: np.ndarray, label: np.ndarray) -> float:
    """The cut on ``score [T]`` maximising balanced accuracy of ``score ≥ τ`` against 0/1 ``label [T]``.

    Ties go to the cut nearest the middle of the two classes' mean scores. NaN labels are skipped; with one
    class only, the midpoint 0.5 is returned.
    """
    keep = np.isfinite(label) & np.isfinite(score)
    s, y = score[keep], label[keep].astype(int)
    if s.size == 0 or y.min() == y.max():
        return 0.5
    order = np.sort(np.unique(s))
    cuts = np.concatenate([order[:1] - 1.0, (order[1:] + order[:-1]) / 2, order[-1:] + 1.0])
    pos = y == 1
    tpr = (s[pos][None, :] >= cuts[:, None]).mean(1)
    tnr = (s[~pos][None, :] < cuts[:, None]).mean(1)
    bal = (tpr + tnr) / 2
    best = np.flatnonzero(bal >= bal.max() - 1e-12)
    mid = 0.5 * (s[pos].mean() + s[~pos].mean())
    return float(cuts[best[np.argmin(np.abs(cuts[best] - mid))]])


def features(x_hat: np.ndarray, x_now: np.ndarray) -> np.ndarray:
    """The readout's inputs ``[x[t], x̂[t+1] - x[t]]`` (``[T, 2N]``) from ``x_hat, x_now [T, N]``."""
    x_hat, x_now = np.asarray(x_hat, np.float64), np.asarray(x_now, np.float64)
    return np.concatenate([x_now, x_hat - x_now], axis=1)


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
    k = 0 if behaviour is None else behaviour.shape[1]
    decoders = []
    threshold = np.full(k, np.nan)
    binary = np.zeros(k, bool) if binary is None else np.asarray(binary, bool)
    truth01 = behaviour if binary_truth is None else binary_truth
    for cols, ks in zip(columns, targets):
        cols, ks = np.asarray(cols), np.asarray(ks)
        if ks.size == 0 or behaviour is None:
            continue
        x = features(x_hat[:, cols], x_now[:, cols])
        dec = metrics.linear_decoder(x, behaviour[:, ks])
        decoders.append((cols, ks, dec))
        score = metrics.decode(dec, x)
        for j, kk in enumerate(ks):
            if binary[kk]:
                threshold[kk] = balanced_threshold(score[:, j], truth01[:, kk])
    lda = metrics.linear_decoder(features(x_hat, x_now), modes, discrete=True) if modes is not None else None
    return StateReadout(tuple(decoders), threshold, lda, k)


def predict(ro: StateReadout, x_hat: np.ndarray, x_now: np.ndarray) -> np.ndarray:
    """Continuous behaviour ``[T, K]`` from ``x_hat, x_now [T, N]`` (:func:`fit`); NaN where no group reads it."""
    out = np.full((len(x_hat), ro.n_targets), np.nan)
    for cols, ks, dec in ro.decoders:
        out[:, ks] = metrics.decode(dec, features(x_hat[:, cols], x_now[:, cols]))
    return out


def predict_labels(ro: StateReadout, x_hat: np.ndarray, x_now: np.ndarray) -> np.ndarray:
    """0/1 labels ``[T, K]`` of binary targets (``ŷ ≥ τ``); NaN for continuous targets."""
    y = predict(ro, x_hat, x_now)
    return np.where(np.isfinite(ro.threshold), (y >= ro.threshold).astype(float), np.nan)


def predict_modes(ro: StateReadout, x_hat: np.ndarray, x_now: np.ndarray) -> np.ndarray:
    """Mode labels ``[T]`` from ``x_hat, x_now [T, N]``."""
    if ro.modes is None:
        raise ValueError("readout.predict_modes: the readout was fitted without modes")
    return metrics.decode(ro.modes, features(x_hat, x_now))
