"""Training windows: normalisation, time splits and deterministic batches of time windows.

A recording is split along time into train / validation / test segments; per-neuron statistics come
from the training segment only. A segment is a tuple of ``(start, stop)`` *pieces*: one piece for a
single continuous recording; one or more per trial for a recording of several trials (:func:`split`),
so that nothing ever joins two trials. Batches are windows of ``H + R`` consecutive frames drawn
uniformly from the windows that fit inside one piece; the draw for step ``s`` depends only on
``(seed, s)``, so a resumed run sees exactly the batches it would have seen without the interruption.
Lazy (tensorstore) traces are read one window at a time.

Example:
    >>> import numpy as np
    >>> from mesojax.data import Recording
    >>> rec = Recording(traces=np.random.default_rng(0).normal(size=(200, 5)), timestamps=np.arange(200.0))
    >>> segs = split(rec.n_timesteps, (0.7, 0.1, 0.2))
    >>> segs
    {'train': ((0, 140),), 'val': ((140, 160),), 'test': ((160, 200),)}
    >>> split(200, (0.5, 0.0, 0.5), trials=[(0, 100), (100, 200)])      # time split within each trial
    {'train': ((0, 50), (100, 150)), 'val': (), 'test': ((50, 100), (150, 200))}
    >>> split(200, (0.5, 0.0, 0.5), trials=[(0, 100), (100, 200)], by="trial")
    {'train': ((0, 100),), 'val': (), 'test': ((100, 200),)}
    >>> norm = fit_normalizer(rec, segs["train"])
    >>> batch = sample_batch(rec, norm, segs["train"], length=6, n_windows=4, seed=0, step=0)
    >>> batch.x.shape, batch.x_mask.dtype
    ((4, 6, 5), dtype('float32'))
"""

from __future__ import annotations

import warnings

from typing import NamedTuple, Sequence

import numpy as np

from mesojax.data import validation as V
from mesojax.data.recording import Recording


class Normalizer(NamedTuple):
    """Per-channel affine normalisation ``(v - mean) / std`` for traces and continuous behaviour.

    Trace samples outside ``[lo, hi]`` (per neuron, raw units) are extreme (a glitch, a saturated
    pixel): they are left out of the statistics and read as missing everywhere (:func:`apply`).
    ``n_extreme`` / ``first_extreme`` count them in the training segment and give the first frame (-1:
    none), for the load report.
    """

    mean: np.ndarray  # [N]
    std: np.ndarray  # [N]
    beh_mean: np.ndarray  # [Kc]
    beh_std: np.ndarray  # [Kc]
    lo: np.ndarray | None = None  # [N]; None: no bound
    hi: np.ndarray | None = None  # [N]
    n_extreme: np.ndarray | None = None  # [N] int
    first_extreme: np.ndarray | None = None  # [N] int, absolute frame; -1 where none


def apply(norm: Normalizer, traces: np.ndarray) -> np.ndarray:
    """``(traces - mean) / std`` over ``[T, N]`` raw traces, extreme samples (outside ``[lo, hi]``) as NaN."""
    traces = np.asarray(traces, np.float32)
    if norm.lo is not None:
        traces = np.where((traces < norm.lo) | (traces > norm.hi), np.nan, traces)
    return (traces - norm.mean) / norm.std


class Batch(NamedTuple):
    """A batch of W windows of length ``H + R`` (numpy on the host, jax arrays on device).

    Attributes:
      x: ``[W, H+R, N]`` normalised traces, NaN replaced by 0.
      x_mask: ``[W, H+R, N]`` 1.0 where the trace was observed.
      stimulus: ``[W, H+R, S]``.
      behaviour: ``[W, H+R, Kc]`` normalised, NaN replaced by 0.
      behaviour_mask: ``[W, H+R, Kc]``.
      modes: ``[W, H+R]`` int32, -1 where unknown.
    """

    x: np.ndarray
    x_mask: np.ndarray
    stimulus: np.ndarray
    behaviour: np.ndarray
    behaviour_mask: np.ndarray
    modes: np.ndarray


Segment = tuple[tuple[int, int], ...]
"""``(start, stop)`` frame pieces of one segment, in time order; windows never cross a piece boundary."""

SPLITS = ("train", "val", "test")
SPLIT_BY = ("time", "trial")


def _check_fractions(fractions: Sequence[float]) -> None:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise V.ValidationError(
            "split", "fractions", None, f"need 3 non-negative fractions summing to 1, got {fractions}"
        )


def split_time(n_timesteps: int, fractions: Sequence[float]) -> dict[str, tuple[int, int]]:
    """Contiguous ``[start, stop)`` frame ranges for train / val / test with the given fractions."""
    _check_fractions(fractions)
    edges = np.round(np.cumsum([0.0, *fractions]) * n_timesteps).astype(int)
    return {name: (int(edges[k]), int(edges[k + 1])) for k, name in enumerate(SPLITS)}


def split(n_timesteps: int, fractions: Sequence[float], trials: Sequence[tuple[int, int]] | None = None,
          by: str = "time") -> dict[str, Segment]:
    """Train / val / test segments as pieces that never join two trials.

    Args:
      n_timesteps: T.
      fractions: the three shares of frames (``by="time"``) or of trials (``by="trial"``), summing to 1.
      trials: ``(start, stop)`` of every trial (:attr:`Recording.trials`); None: one trial ``(0, T)``.
      by: ``"time"``: every trial is split along time with `fractions` (each segment gets one piece per
        trial: the early part of every trial trains); ``"trial"``: whole trials, in order, go to train,
        then val, then test (held-out trials; the trial count is split with `fractions`).

    Returns:
      ``{"train", "val", "test"} -> Segment``; an empty segment is ``()``. Without trials and with
      ``by="time"`` the pieces are exactly :func:`split_time`'s ranges.

    Raises:
      ValidationError: bad fractions or `by`, or (by trial) a non-empty share that gets no trial.
    """
    _check_fractions(fractions)
    if by not in SPLIT_BY:
        raise V.ValidationError("split", "data.split_by", None, f"must be one of {list(SPLIT_BY)}, got {by!r}")
    trials = [(0, int(n_timesteps))] if trials is None else [(int(a), int(b)) for a, b in trials]
    out: dict[str, list[tuple[int, int]]] = {name: [] for name in SPLITS}
    if by == "time":
        for a, b in trials:
            for name, (t0, t1) in split_time(b - a, fractions).items():
                if t1 > t0:
                    out[name].append((a + t0, a + t1))
    else:
        edges = np.round(np.cumsum([0.0, *fractions]) * len(trials)).astype(int)
        for k, name in enumerate(SPLITS):
            out[name] = trials[edges[k]:edges[k + 1]]
            if fractions[k] > 0 and not out[name]:
                raise V.ValidationError(
                    "split", "data.split", None,
                    f"the {name} share {fractions[k]} of {len(trials)} trials rounds to no trial; use more "
                    "trials, another split, or data.split_by='time'")
    return {name: tuple(pieces) for name, pieces in out.items()}


def join_pieces(segment: Segment) -> Segment:
    """The segment with touching pieces joined (``(0, 100), (100, 160)`` → ``(0, 160)``): trials treated as
    one continuous recording, windows crossing their boundaries (``data.use_trials = False``)."""
    out: list[tuple[int, int]] = []
    for a, b in segment:
        if out and out[-1][1] == a:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return tuple(out)


def as_segment(segment: Segment | tuple[int, int]) -> Segment:
    """A segment's pieces; a single ``(start, stop)`` pair is one piece."""
    if len(segment) == 2 and all(isinstance(v, (int, np.integer)) for v in segment):
        return ((int(segment[0]), int(segment[1])),)
    return tuple((int(a), int(b)) for a, b in segment)


def n_frames(segment: Segment | tuple[int, int]) -> int:
    """Frames in a segment (summed over its pieces)."""
    return sum(b - a for a, b in as_segment(segment))


def longest_piece(segment: Segment | tuple[int, int]) -> int:
    """Frames in the segment's longest piece (0 when empty): the longest window it can hold."""
    return max((b - a for a, b in as_segment(segment)), default=0)


# Frames read at once when statistics are computed over a (possibly lazy, larger than memory) segment: with
# the training windows, the most of a recording ever resident at once.
STATS_CHUNK = 4096


def _finite_rows(values: np.ndarray, source: str, field: str, t0: int) -> np.ndarray:
    if np.isinf(values).any():
        row = t0 + V.first_row(np.isinf(values))
        raise V.ValidationError(source, field, row, "infinite value (use NaN for a missing sample)")
    return values


# Frames read (evenly spaced) to estimate the quantiles that set the extreme-sample bounds.
_QUANTILE_FRAMES = 20000


def _chunks(segment: Segment) -> list[tuple[int, int]]:
    """The segment's frames as ``(a, b)`` reads of at most `STATS_CHUNK` frames, piece by piece."""
    return [(a, min(a + STATS_CHUNK, t1)) for t0, t1 in segment for a in range(t0, t1, STATS_CHUNK)]


def _moments(read, segment: Segment, source: str, field: str, lo: np.ndarray | None = None,
             hi: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """NaN-ignoring per-column mean and std over the segment's frames, reading `STATS_CHUNK` frames at a time.

    Samples outside ``[lo, hi]`` are left out and counted. Returns ``(mean, std, n_out, first_out)``.
    """
    count = total = total_sq = 0.0
    n_out = first_out = None
    for a, b in _chunks(segment):
        v = _finite_rows(np.asarray(read(a, b), np.float64), source, field, a)
        seen = np.isfinite(v)
        if lo is not None:
            out = seen & ((v < lo) | (v > hi))
            rows = np.where(out.any(0), a + np.argmax(out, 0), -1)
            n_out = out.sum(0) if n_out is None else n_out + out.sum(0)
            first_out = rows if first_out is None else np.where(first_out >= 0, first_out, rows)
            seen &= ~out
        v = np.where(seen, v, 0.0)
        count, total, total_sq = count + seen.sum(0), total + v.sum(0), total_sq + (v * v).sum(0)
    count = np.asarray(count)
    if (count < 2).any():
        col = int(np.flatnonzero(count < 2)[0])
        raise V.ValidationError(source, field, col, "fewer than 2 observed samples in the training segment")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return mean.astype(np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32), n_out, first_out


_TOP = 64  # largest deviations tracked per column when looking for the gap that separates glitches
_GAP = 10.0  # a glitch lies at least this factor beyond every genuine sample


def extreme_bounds(read, segment: Segment | tuple[int, int], factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-column bounds outside which samples are glitches, from the segment's frames.

    A sample is extreme when its deviation from the median is both beyond
    ``factor · max(q99 - median, median - q1)`` and separated by a gap of ``_GAP``× from every smaller
    deviation: glitches (a 1e6 pixel, a dropped-frame spike) stand apart from the recording, while the
    rare large transients of a sparse neuron form a continuum with its other samples and are kept. The
    bound sits at the geometric middle of the gap; a column without such a gap gets no bound. Quantiles
    are taken on at most `_QUANTILE_FRAMES` evenly spaced frames; the largest `_TOP` deviations of every
    column are tracked over all frames.
    """
    segment = as_segment(segment)
    chunks = _chunks(segment)
    # Evenly spaced positions in the pieces joined, mapped back to frames (never a list of every frame).
    lengths = np.asarray([b - a for a, b in segment], np.int64)
    total = int(lengths.sum())
    pos = np.unique(np.linspace(0, total - 1, min(total, _QUANTILE_FRAMES)).astype(np.int64))
    piece = np.searchsorted(np.cumsum(lengths), pos, side="right")
    frames = np.asarray([a for a, _ in segment], np.int64)[piece] + pos - (np.cumsum(lengths) - lengths)[piece]
    rows = np.concatenate([np.asarray(read(a, b), np.float64)[frames[(frames >= a) & (frames < b)] - a]
                           for a, b in chunks])
    rows = np.where(np.isfinite(rows), rows, np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: caught by the moments' check
        q1, med, q99 = np.nanpercentile(rows, [1, 50, 99], axis=0)
    scale = np.maximum(q99 - med, med - q1)
    n_cols = rows.shape[1]
    top = np.zeros((0, n_cols))
    for a, b in chunks:
        v = np.abs(np.asarray(read(a, b), np.float64) - med)
        v = np.where(np.isfinite(v), v, 0.0)
        top = np.concatenate([top, v])
        if len(top) > _TOP:
            top = -np.partition(-top, _TOP - 1, axis=0)[:_TOP]
    top = -np.sort(-top, axis=0)  # [m, N], largest deviation first
    threshold = np.full(n_cols, np.inf)
    for j in np.flatnonzero(np.isfinite(scale) & (scale > 0)):
        d = top[:, j]
        big = d > factor * scale[j]
        gaps = np.flatnonzero(big[:-1] & (d[:-1] > _GAP * np.maximum(d[1:], 1e-300)))
        if gaps.size:
            k = gaps[-1]  # the lowest gap: every deviation above it is a glitch
            threshold[j] = np.sqrt(d[k] * max(d[k + 1], factor * scale[j]))
    lo = np.where(np.isfinite(threshold), med - threshold, -np.inf)
    hi = np.where(np.isfinite(threshold), med + threshold, np.inf)
    return lo.astype(np.float64), hi.astype(np.float64)


def fit_normalizer(recording: Recording, segment: Segment | tuple[int, int],
                   extreme: float | None = 50.0) -> Normalizer:
    """Per-neuron (and per-behaviour) mean and std over `segment` (pieces), ignoring NaN, in time chunks.

    With `extreme`, glitches (:func:`extreme_bounds`, ``factor = extreme``: far beyond the 1-99 % range
    and set apart from every other sample by a 10× gap) are left out of the statistics and read as
    missing (:func:`apply`); one 1e6 glitch would otherwise set its neuron's std and flatten it for the
    whole run. ``None`` or 0 keeps every sample.

    Raises:
      ValidationError: naming the column (in ``row``) of a neuron with < 2 observed training samples, or
        the frame of an infinite value.
    """
    segment = as_segment(segment)
    read = lambda a, b: recording.traces[a:b]  # noqa: E731
    lo = hi = None
    if extreme:
        lo, hi = extreme_bounds(read, segment, float(extreme))
    mean, std, n_out, first_out = _moments(read, segment, recording.source, "traces", lo, hi)
    if recording.behaviour is not None:
        beh_mean, beh_std, _, _ = _moments(lambda a, b: recording.behaviour[a:b], segment, recording.source,
                                           "behaviour")
    else:
        beh_mean = beh_std = np.zeros((0,), np.float32)
    if lo is None:
        return Normalizer(mean, std, beh_mean, beh_std)
    return Normalizer(mean, std, beh_mean, beh_std, lo.astype(np.float32), hi.astype(np.float32),
                      np.asarray(n_out, np.int64), np.asarray(first_out, np.int64))


def window(recording: Recording, norm: Normalizer, t0: int, length: int) -> Batch:
    """One window ``[t0, t0 + length)`` as a batch of size 1."""
    t1 = t0 + length
    traces = _finite_rows(np.asarray(recording.traces[t0:t1], np.float32), recording.source, "traces", t0)
    raw = apply(norm, traces)
    x_mask = np.isfinite(raw)
    stim = recording.stimulus[t0:t1] if recording.stimulus is not None else np.zeros((length, 0), np.float32)
    if recording.behaviour is not None:
        beh = (recording.behaviour[t0:t1] - norm.beh_mean) / norm.beh_std
    else:
        beh = np.zeros((length, 0), np.float32)
    beh_mask = np.isfinite(beh)
    modes = recording.modes[t0:t1] if recording.modes is not None else np.full((length,), -1, np.int32)
    return Batch(
        x=np.where(x_mask, raw, 0.0).astype(np.float32)[None],
        x_mask=x_mask.astype(np.float32)[None],
        stimulus=np.asarray(stim, np.float32)[None],
        behaviour=np.where(beh_mask, beh, 0.0).astype(np.float32)[None],
        behaviour_mask=beh_mask.astype(np.float32)[None],
        modes=np.asarray(modes, np.int32)[None],
    )


def stack(batches: Sequence[Batch]) -> Batch:
    """Concatenate batches along the window axis."""
    return Batch(*[np.concatenate(parts, axis=0) for parts in zip(*batches)])


def window_starts(segment: Segment | tuple[int, int], length: int, n_windows: int, seed: int,
                  step: int) -> np.ndarray:
    """The `n_windows` start frames drawn for `step` (depends only on ``(seed, step)``).

    Every window of `length` frames that fits inside one piece is equally likely; none crosses a piece
    (trial) boundary. With one piece ``(t0, t1)`` the draw is ``integers(t0, t1 - length + 1)``.
    """
    segment = as_segment(segment)
    fits = np.asarray([max(0, b - a - length + 1) for a, b in segment], np.int64)
    if fits.sum() == 0:
        raise V.ValidationError(
            "windows", "segment", None,
            f"no piece of the segment {list(segment)} holds a window of {length} frames")
    rng = np.random.default_rng([seed, step])
    k = rng.integers(0, int(fits.sum()), size=n_windows)
    piece = np.searchsorted(np.cumsum(fits), k, side="right")
    before = np.concatenate([[0], np.cumsum(fits)[:-1]])
    return np.asarray([a for a, _ in segment], np.int64)[piece] + (k - before[piece])


def sample_batch(
    recording: Recording,
    norm: Normalizer,
    segment: Segment | tuple[int, int],
    *,
    length: int,
    n_windows: int,
    seed: int,
    step: int,
) -> Batch:
    """A deterministic batch of `n_windows` windows of `length` frames from `segment` (inside its pieces)."""
    starts = window_starts(segment, length, n_windows, seed, step)
    return stack([window(recording, norm, int(t), length) for t in starts])
