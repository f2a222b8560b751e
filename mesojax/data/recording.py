"""Recording: calcium traces of point sources over time, with optional stimulus and behaviour.

Traces are ``[T, Nr]`` float32 (ΔF/F or raw; NaN marks a missing sample). They may be an in-memory
numpy array or any lazy array with ``shape``, ``dtype`` and time slicing (``traces[t0:t1] -> [t1-t0, Nr]``
numpy), e.g. the tensorstore-backed arrays of :mod:`mesojax.data.storage`, so a recording larger than
memory is used through :meth:`Recording.window` without ever being loaded whole.

Example:
    >>> import numpy as np
    >>> from mesojax.data import Recording
    >>> r = Recording(traces=np.zeros((100, 4), np.float32), timestamps=np.arange(100) / 10.0)
    >>> r.n_timesteps, r.n_sources, round(r.rate_hz, 3)
    (100, 4, 10.0)
    >>> r.window(10, 20).traces.shape
    (10, 4)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, Sequence

import numpy as np

from mesojax.data import validation as V


class TimeArray(Protocol):
    """What a lazily stored ``[T, ...]`` array must offer: its shape, dtype and slicing along time."""

    shape: tuple[int, ...]
    dtype: Any

    def __getitem__(self, index: Any) -> np.ndarray: ...


def _missing_id(ids: np.ndarray) -> np.ndarray:
    """Mask of 'no id' entries: "" for string ids, -1 for integer ids."""
    return ids == "" if ids.dtype.kind in "US" else ids < 0


@dataclasses.dataclass(frozen=True, eq=False)
class Recording:
    """Point-source calcium traces with timestamps, positions/ids, stimulus and behaviour.

    Attributes:
      traces: ``[T, Nr]`` float traces (numpy or lazy :class:`TimeArray`); NaN = missing sample.
      timestamps: ``[T]`` float64 seconds, finite and strictly increasing.
      rate_hz: sampling rate; derived from the median timestamp step when not given.
      positions: ``[Nr, 3]`` float32 µm point-source positions, or None.
      neuron_ids: ``[Nr]`` ids of the connectome neuron of each source ("" / -1 = unidentified), or None.
      stimulus: ``[T, S]`` float32, or None.
      behaviour: ``[T, Kc]`` float32 continuous behaviour (NaN = missing), or None.
      behaviour_names: the Kc names.
      modes: ``[T]`` int32 discrete behaviour mode per frame (-1 = unknown), or None.
      mode_names: name of each mode value.
      source: where the data came from (named in error messages).
      trial_starts: ``[n_trials]`` int frame at which each trial begins (the first is 0), or None (one
        trial). Trials are segments that must never be joined: windows, splits and forecasts stay inside
        one; timestamps need only increase within a trial (each movie may restart its clock).
      stimulus_positions: ``[S, 3]`` float32 µm position of each stimulus channel (e.g. the column a pixel
        drives), or None. With positions the stimulus is *retinotopic*: each receptive field reads only the
        channels inside it (:func:`mesojax.spatial.stimulus_tables`).
    """

    traces: Any
    timestamps: np.ndarray
    rate_hz: float | None = None
    positions: np.ndarray | None = None
    neuron_ids: np.ndarray | None = None
    stimulus: np.ndarray | None = None
    behaviour: np.ndarray | None = None
    behaviour_names: tuple[str, ...] = ()
    modes: np.ndarray | None = None
    mode_names: tuple[str, ...] = ()
    source: str = "Recording"
    trial_starts: np.ndarray | None = None
    stimulus_positions: np.ndarray | None = None

    def __post_init__(self):
        src = self.source
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        traces = self.traces
        if isinstance(traces, (np.ndarray, list, tuple)):
            traces = np.asarray(traces)
            V.check_numeric(src, "traces", traces)
            traces = traces.astype(np.float32, copy=False)
            set_("traces", traces)
        elif not (hasattr(traces, "shape") and hasattr(traces, "__getitem__")):
            raise V.ValidationError(src, "traces", None, f"expected an array, got {type(traces).__name__}")
        if np.dtype(traces.dtype).kind not in "iuf":
            raise V.ValidationError(src, "traces", None, f"expected a numeric array, got dtype {traces.dtype}")
        V.check_shape(src, "traces", traces, (None, None))
        t, nr = traces.shape
        if t == 0:
            raise V.ValidationError(src, "traces", None, "no frames (T = 0): a recording needs at least one frame")
        if isinstance(traces, np.ndarray) and np.isinf(traces).any():
            # NaN marks a missing sample; an infinite one is a broken value (lazy traces: checked per window).
            row = V.first_row(np.isinf(traces))
            raise V.ValidationError(src, "traces", row, "infinite value (use NaN for a missing sample)")

        timestamps = np.asarray(self.timestamps)
        V.check_numeric(src, "timestamps", timestamps)
        timestamps = timestamps.astype(np.float64)
        V.check_shape(src, "timestamps", timestamps, (None,))
        if len(timestamps) != t:
            raise V.ValidationError(
                src, "timestamps", None, f"length {len(timestamps)} does not match traces length T={t}"
            )
        V.check_finite(src, "timestamps", timestamps)
        if self.trial_starts is not None:
            starts = np.asarray(self.trial_starts)
            if starts.dtype.kind not in "iu":
                raise V.ValidationError(src, "trial_starts", None, f"expected integer frames, got {starts.dtype}")
            V.check_shape(src, "trial_starts", starts, (None,))
            if starts.size == 0 or starts[0] != 0:
                raise V.ValidationError(src, "trial_starts", 0, "the first trial must start at frame 0")
            V.check_increasing(src, "trial_starts", starts)
            if starts[-1] >= t:
                raise V.ValidationError(src, "trial_starts", int(starts.size - 1),
                                        f"frame {int(starts[-1])} is not below T={t}")
            set_("trial_starts", starts.astype(np.int64))
        for k, (a, b) in enumerate(self.trials):
            try:
                V.check_increasing(src, "timestamps", timestamps[a:b])
            except V.ValidationError as err:
                where = "" if self.trial_starts is None else f" (within trial {k})"
                raise V.ValidationError(src, "timestamps", a + err.row, err.problem + where) from None
        set_("timestamps", timestamps)
        if self.rate_hz is None:
            rate = 1.0 / float(np.median(np.diff(timestamps))) if t > 1 else float("nan")
            set_("rate_hz", rate)
        elif not (np.isfinite(self.rate_hz) and self.rate_hz > 0):
            raise V.ValidationError(src, "rate_hz", None, f"must be a positive number, got {self.rate_hz}")

        if self.positions is not None:
            V.check_numeric(src, "positions", self.positions)
            set_("positions", np.asarray(self.positions, np.float32))
            V.check_shape(src, "positions", self.positions, (nr, 3))
            V.check_finite(src, "positions", self.positions)
        if self.neuron_ids is not None:
            ids = np.asarray(self.neuron_ids)
            if ids.dtype.kind == "O":
                ids = ids.astype(str)
            if ids.dtype.kind not in "iuUS":
                raise V.ValidationError(src, "neuron_ids", None, f"ids must be int or str, got {ids.dtype}")
            V.check_shape(src, "neuron_ids", ids, (nr,))
            present = ~_missing_id(ids)
            if present.any():
                rows = np.flatnonzero(present)
                try:
                    V.check_unique(src, "neuron_ids", ids[rows])
                except V.ValidationError as err:
                    raise V.ValidationError(src, "neuron_ids", int(rows[err.row]), err.problem) from None
            set_("neuron_ids", ids)

        if self.stimulus is not None:
            V.check_numeric(src, "stimulus", self.stimulus)
            stim = np.asarray(self.stimulus, np.float32)
            stim = stim[:, None] if stim.ndim == 1 else stim
            V.check_shape(src, "stimulus", stim, (t, None))
            V.check_finite(src, "stimulus", stim)
            set_("stimulus", stim)
        if self.stimulus_positions is not None:
            if self.stimulus is None:
                raise V.ValidationError(src, "stimulus_positions", None, "given without a stimulus")
            V.check_numeric(src, "stimulus_positions", self.stimulus_positions)
            spos = np.asarray(self.stimulus_positions, np.float32)
            V.check_shape(src, "stimulus_positions", spos, (self.stimulus.shape[1], 3))
            V.check_finite(src, "stimulus_positions", spos)
            set_("stimulus_positions", spos)
        if self.behaviour is not None:
            V.check_numeric(src, "behaviour", self.behaviour)
            beh = np.asarray(self.behaviour, np.float32)
            beh = beh[:, None] if beh.ndim == 1 else beh
            V.check_shape(src, "behaviour", beh, (t, None))
            if np.isinf(beh).any():
                row = V.first_row(np.isinf(beh))
                raise V.ValidationError(src, "behaviour", row, "infinite value (use NaN for missing)")
            names = tuple(self.behaviour_names) or tuple(f"b{k}" for k in range(beh.shape[1]))
            if len(names) != beh.shape[1]:
                raise V.ValidationError(
                    src, "behaviour_names", None, f"{len(names)} names for {beh.shape[1]} behaviour columns"
                )
            set_("behaviour", beh)
            set_("behaviour_names", names)
        if self.modes is not None:
            modes = np.asarray(self.modes)
            if modes.dtype.kind not in "iu":
                raise V.ValidationError(src, "modes", None, f"expected integer mode labels, got {modes.dtype}")
            V.check_shape(src, "modes", modes, (t,))
            if not self.mode_names:
                raise V.ValidationError(src, "mode_names", None, "modes given without mode_names")
            V.check_in_set(src, "modes", modes, tuple(range(-1, len(self.mode_names))))
            set_("modes", modes.astype(np.int32))
            set_("mode_names", tuple(self.mode_names))

    # ---------------------------------------------------------------- properties
    @property
    def n_timesteps(self) -> int:
        return int(self.traces.shape[0])

    @property
    def n_sources(self) -> int:
        return int(self.traces.shape[1])

    @property
    def trials(self) -> list[tuple[int, int]]:
        """``[start, stop)`` frames of every trial (one ``(0, T)`` without ``trial_starts``)."""
        if self.trial_starts is None:
            return [(0, self.n_timesteps)]
        edges = [*self.trial_starts.tolist(), self.n_timesteps]
        return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]

    @property
    def is_lazy(self) -> bool:
        return not isinstance(self.traces, np.ndarray)

    def window(self, t0: int, t1: int) -> "Recording":
        """The frames ``t0 <= t < t1`` as an in-memory Recording (reads only that window of lazy traces)."""
        if not 0 <= t0 < t1 <= self.n_timesteps:
            raise V.ValidationError(
                self.source, "window", None, f"[{t0}, {t1}) is not inside [0, {self.n_timesteps})"
            )
        cut = lambda a: None if a is None else a[t0:t1]  # noqa: E731
        starts = None
        if self.trial_starts is not None:  # the trials overlapping the window, clipped to it
            starts = np.unique(np.clip(self.trial_starts, t0, None))
            starts = starts[starts < t1] - t0
        return dataclasses.replace(
            self, traces=np.asarray(self.traces[t0:t1], np.float32), timestamps=self.timestamps[t0:t1],
            stimulus=cut(self.stimulus), behaviour=cut(self.behaviour), modes=cut(self.modes), trial_starts=starts,
        )

    def select_sources(self, sources: Sequence[int]) -> "Recording":
        """Keep the point sources at rows `sources` (loads traces into memory)."""
        sources = np.asarray(sources, np.int64)
        V.check_index_range(self.source, "sources", sources, self.n_sources)
        opt = lambda a: None if a is None else a[sources]  # noqa: E731
        return dataclasses.replace(
            self, traces=np.asarray(self.traces[:], np.float32)[:, sources],
            positions=opt(self.positions), neuron_ids=opt(self.neuron_ids),
        )

    def summary(self) -> str:
        """A few lines describing sizes, rate and what optional fields are present."""
        parts = [
            f"Recording '{self.source}': T={self.n_timesteps} frames x {self.n_sources} sources "
            f"at {self.rate_hz:.3g} Hz ({sum(self.timestamps[b - 1] - self.timestamps[a] for a, b in self.trials):.1f} s)"
            + (" [lazy]" if self.is_lazy else "")
        ]
        if self.neuron_ids is not None:
            parts.append(f"  identified sources: {int((~_missing_id(self.neuron_ids)).sum())}/{self.n_sources}")
        if self.trial_starts is not None:
            parts.append(f"  trials: {len(self.trial_starts)}")
        if self.stimulus is not None:
            where = ", with positions (retinotopic)" if self.stimulus_positions is not None else ""
            parts.append(f"  stimulus: {self.stimulus.shape[1]} channels{where}")
        if self.behaviour is not None:
            parts.append(f"  behaviour: {', '.join(self.behaviour_names)}")
        if self.modes is not None:
            counts = np.bincount(self.modes[self.modes >= 0], minlength=len(self.mode_names))
            parts.append("  modes: " + ", ".join(f"{n}={c}" for n, c in zip(self.mode_names, counts)))
        return "\n".join(parts)
