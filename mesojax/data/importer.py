"""Your own circuit into a store: neuron and synapse tables plus traces, checked and registered.

:func:`import_circuit` reads

* a **neuron table** (CSV or HDF5): ``id``, ``x``, ``y``, ``z`` (µm) and optionally ``cell_type`` (or
  ``type``) columns;
* a **synapse table** (CSV or HDF5) in CAVE, neuPrint or generic (``pre``, ``post``) columns
  (:func:`mesojax.data.tables.load_synapse_table`);
* **traces** ``[T, N]``: an NWB file (ophys ROI response series), an HDF5 file (datasets ``traces``,
  ``timestamps`` or attribute ``rate_hz``, optional ``neuron_ids``, ``positions``), a ``.npy`` array
  (with ``neuron_ids`` and ``timestamps`` / ``rate_hz`` given separately), or a CSV whose header names the
  neurons (an optional ``time`` column gives timestamps);
* optionally **stimulus** ``[T, S]`` and **behaviour** ``[T, K]`` (``.npy``, or CSV with named columns),
  **stimulus positions** ``[S, 3]`` µm (``.npy`` or CSV ``x, y, z``: a retinotopic stimulus, each receptive
  field then reads only its own channels) and **trials** (``.npy`` or one-column CSV: the start frame of
  every trial, or a trial label per frame; trials are never joined, and timestamps may restart in each);

registers the traces to the neurons by id (or by position within ``tol_um``), and writes ``DIR/connectome``
and ``DIR/recording`` (:mod:`mesojax.data.storage`) for ``configs/store.py``. Everything excluded or
repaired on the way is in the returned :class:`~mesojax.data.tables.LoadReport`; nothing is dropped
silently. A failed import leaves no half-written store (stores are written atomically).

Example::

    report = import_circuit("stores/v1", neurons="neurons.csv", synapses="synapses.csv",
                            traces="traces.npy", neuron_ids="ids.csv", rate_hz=30.0)
    print(report)
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any, Sequence

import h5py
import numpy as np

from mesojax.data import storage, tables
from mesojax.data import validation as V
from mesojax.data.connectome import Connectome
from mesojax.data.nwb import load_nwb_ophys
from mesojax.data.recording import Recording
from mesojax.data.registration import matched_ids, register_by_id, register_by_position
from mesojax.data.tables import LoadReport

PathLike = str | os.PathLike


def _ids(source: str, field: str, values: np.ndarray) -> np.ndarray:
    """Neuron ids as int64 when every one is an integer (segment / body ids), else as strings."""
    values = np.asarray(values)
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    text = np.char.strip(values.astype(str))
    if text.size and all(t.lstrip("-").isdigit() for t in text.tolist()):
        return text.astype(np.int64)
    if (text == "").any():
        raise V.ValidationError(source, field, V.first_row(text == ""), "empty neuron id")
    return text


def read_neurons(path: PathLike, key: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A neuron table: ``(ids [N], xyz [N, 3] µm, cell types [N] or None)``."""
    src = str(path)
    cols = tables.read_columns(path, key=key)
    for need in ("id", "x", "y", "z"):
        if need not in cols:
            raise V.ValidationError(src, need, None, f"missing column (have {sorted(cols)}); a neuron table needs "
                                    "id, x, y, z (µm) and optionally cell_type")
    ids = _ids(src, "id", cols["id"])
    V.check_unique(src, "id", ids)
    xyz = np.stack([tables.to_float(src, a, cols[a]) for a in "xyz"], axis=1).astype(np.float32)
    kind = next((c for c in ("cell_type", "type") if c in cols), None)
    types = None if kind is None else np.char.strip(np.asarray(cols[kind]).astype(str))
    return ids, xyz, types


def _read_matrix(path: PathLike, field: str) -> tuple[np.ndarray, list[str] | None]:
    """A ``[T, K]`` float64 array from ``.npy`` or CSV (header names returned for CSV); callers cast values
    to float32, timestamps stay float64 (absolute times need the precision)."""
    src, suffix = str(path), pathlib.Path(path).suffix.lower()
    if suffix == ".npy":
        arr = np.load(path, mmap_mode="r")
        arr = np.asarray(arr).reshape(len(arr), -1)
        V.check_numeric(src, field, arr)
        return arr.astype(np.float64), None
    if suffix == ".csv":
        cols = tables.read_csv_columns(path)
        names = list(cols)
        return np.stack([np.asarray(tables.to_float(src, n, cols[n]), np.float64) for n in names], axis=1), names
    raise V.ValidationError(src, field, None, f"unsupported file type {suffix!r} (use .npy or .csv)")


def read_traces(path: PathLike, *, neuron_ids: PathLike | Sequence[Any] | None = None,
                timestamps: PathLike | None = None, rate_hz: float | None = None,
                nwb_series: str | None = None, nwb_id_column: str | None = None,
                pixel_size_um: float | Sequence[float] | None = None,
                trial_starts: np.ndarray | None = None) -> tuple[Recording, LoadReport]:
    """Traces from NWB, HDF5, ``.npy`` or CSV as a :class:`Recording` (see the module docstring);
    ``trial_starts`` (frames) lets timestamps restart at every trial."""
    src, suffix = str(path), pathlib.Path(path).suffix.lower()
    notes: list[str] = []
    positions = ids = None
    if suffix == ".nwb":
        if neuron_ids is not None or timestamps is not None or rate_hz is not None:
            raise V.ValidationError(src, "traces", None, "an NWB file carries its own neuron ids (nwb_id_column) "
                                    "and timestamps; do not give neuron_ids, timestamps or rate_hz with it")
        rec, report = load_nwb_ophys(path, series=nwb_series, pixel_size_um=pixel_size_um, id_column=nwb_id_column,
                                     positions=pixel_size_um is not None or nwb_id_column is None)
        if trial_starts is not None:
            rec = dataclasses.replace(rec, trial_starts=trial_starts)  # validated again by __post_init__
        return rec, report
    if suffix in (".h5", ".hdf5"):
        with V.file_errors(src, "file", what="HDF5 traces file"), h5py.File(path, "r") as f:
            if "traces" not in f:
                raise V.ValidationError(src, "traces", None, f"missing dataset (have {sorted(f)})")
            traces = np.asarray(f["traces"][()], np.float32)
            stamps = np.asarray(f["timestamps"][()], np.float64) if "timestamps" in f else None
            rate_hz = float(f.attrs["rate_hz"]) if stamps is None and "rate_hz" in f.attrs else rate_hz
            ids = f["neuron_ids"][()] if "neuron_ids" in f else None
            positions = np.asarray(f["positions"][()], np.float32) if "positions" in f else None
        if ids is not None and np.asarray(ids).dtype.kind in "SO":
            ids = np.asarray([i.decode() if isinstance(i, bytes) else str(i) for i in ids])
    elif suffix in (".npy", ".csv"):
        traces, header = _read_matrix(path, "traces")
        stamps = None
        if header is not None:
            if "time" in header:
                k = header.index("time")
                stamps = traces[:, k].astype(np.float64)
                traces = np.delete(traces, k, axis=1)
                header.pop(k)
            ids = np.asarray(header)
    else:
        raise V.ValidationError(src, "traces", None, f"unsupported file type {suffix!r} (use .nwb, .h5, .npy or .csv)")
    if neuron_ids is not None:
        if isinstance(neuron_ids, (str, os.PathLike)):
            cols = tables.read_csv_columns(neuron_ids, header=False, names=["id"])
            ids = cols["id"]
        else:
            ids = np.asarray(neuron_ids)
    if timestamps is not None:
        stamps = np.asarray(_read_matrix(timestamps, "timestamps")[0][:, 0], np.float64)
    if stamps is None:
        if rate_hz is None:
            raise V.ValidationError(src, "timestamps", None, "no timestamps: give a timestamps file or rate_hz")
        stamps = np.arange(len(traces)) / float(rate_hz)
        notes.append(f"timestamps made from rate_hz = {rate_hz}")
    if ids is not None:
        ids = _ids(src, "neuron_ids", ids)
        if len(ids) != traces.shape[1]:
            raise V.ValidationError(src, "neuron_ids", None, f"{len(ids)} ids for {traces.shape[1]} trace columns")
    rec = Recording(traces=np.asarray(traces, np.float32), timestamps=stamps, neuron_ids=ids, positions=positions,
                    source=src, trial_starts=trial_starts)
    return rec, LoadReport(src, tuple(notes))


def read_trials(path: PathLike, n_timesteps: int) -> np.ndarray:
    """Trial start frames from ``.npy`` / one-column CSV: either the start frames themselves (strictly
    increasing from 0) or one trial label per frame (``T`` values; a new trial wherever the label changes).

    Raises:
      ValidationError: naming the file and row of a value that is neither.
    """
    src = str(path)
    if pathlib.Path(path).suffix.lower() == ".csv":  # a header line is optional
        column = list(tables.read_csv_columns(path, header=False, names=["trial"])["trial"])
        if column and not _is_number(column[0]):
            column = column[1:]
        values = np.asarray(tables.to_float(src, "trials", np.asarray(column)), np.float64)
    else:
        values = _read_matrix(path, "trials")[0]
        if values.shape[1] != 1:
            raise V.ValidationError(src, "trials", None, f"expected one column, got {values.shape[1]}")
        values = values[:, 0]
    if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
        row = int(np.flatnonzero(~np.isfinite(values) | (values != np.round(values)))[0])
        raise V.ValidationError(src, "trials", row, f"{values[row]} is not an integer frame or label")
    values = values.astype(np.int64)
    increasing = values.size and values[0] == 0 and np.all(np.diff(values) > 0)
    if len(values) == n_timesteps and not increasing:
        return np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]])).astype(np.int64)
    return values


def import_circuit(
    out: PathLike,
    *,
    synapses: PathLike,
    traces: PathLike,
    neurons: PathLike | None = None,
    synapse_format: str = "auto",
    voxel_nm: Sequence[float] | None = None,
    neuron_ids: PathLike | Sequence[Any] | None = None,
    timestamps: PathLike | None = None,
    rate_hz: float | None = None,
    stimulus: PathLike | None = None,
    behaviour: PathLike | None = None,
    behaviour_names: Sequence[str] | None = None,
    stimulus_positions: PathLike | None = None,
    trials: PathLike | None = None,
    register: str = "id",
    tol_um: float = 2.0,
    nwb_series: str | None = None,
    nwb_id_column: str | None = None,
    pixel_size_um: float | Sequence[float] | None = None,
    chunk_t: int | None = None,
    overwrite: bool = False,
) -> LoadReport:
    """Convert tables and traces into a store at `out` (``out/connectome``, ``out/recording``).

    Args:
      out: the store directory to create.
      synapses: synapse table (CSV/HDF5; ``synapse_format`` "auto", "cave", "neuprint" or "generic";
        ``voxel_nm`` scales CAVE voxel positions to µm).
      traces: NWB, HDF5, ``.npy`` or CSV (:func:`read_traces`), with ``neuron_ids`` / ``timestamps`` /
        ``rate_hz`` where the file lacks them.
      neurons: neuron table (id, x, y, z µm, cell_type); without it, neurons sit at their synapses' mean.
      stimulus, behaviour: ``[T, S]`` / ``[T, K]`` arrays (``.npy`` or CSV; CSV headers name behaviour).
      stimulus_positions: ``[S, 3]`` µm position of every stimulus channel (a retinotopic stimulus).
      trials: the trials' start frames, or a trial label per frame (:func:`read_trials`).
      register: "id" (trace columns carry connectome neuron ids) or "position" (sources matched to the
        nearest neuron within ``tol_um`` µm; the matched ids are stored).
      chunk_t: frames per stored trace chunk (default: about 4 MiB per chunk); a training window reads
        the chunks it overlaps.
      overwrite: replace existing stores.

    Returns:
      The :class:`LoadReport` of everything read (what was left out or repaired, and the registration).

    Raises:
      ValidationError: naming the file, field, row and problem of the first bad input.
    """
    out = pathlib.Path(out)
    table, report = tables.load_synapse_table(synapses, format=synapse_format, voxel_nm=voxel_nm)
    positions = cell_type = None
    if neurons is not None:
        ids, xyz, types = read_neurons(neurons)
        positions = (ids, xyz)
        cell_type = (ids, types) if types is not None else None
    connectome, rep = tables.connectome_from_synapse_table(table, positions, cell_type=cell_type)
    report = report.merge(rep)
    starts = None
    if trials is not None:  # the frame count is needed to tell labels from starts: peek at the traces
        starts = read_trials(trials, _n_frames(traces))
    rec, rep = read_traces(traces, neuron_ids=neuron_ids, timestamps=timestamps, rate_hz=rate_hz,
                           nwb_series=nwb_series, nwb_id_column=nwb_id_column, pixel_size_um=pixel_size_um,
                           trial_starts=starts)
    report = report.merge(rep)
    t = rec.n_timesteps
    extra: dict[str, Any] = {}
    if starts is not None:
        extra["trial_starts"] = starts
    if stimulus_positions is not None:
        if stimulus is None:
            raise V.ValidationError(str(stimulus_positions), "stimulus_positions", None, "given without a stimulus")
        spos = _read_matrix(stimulus_positions, "stimulus_positions")[0]
        if spos.shape[1] != 3:
            raise V.ValidationError(str(stimulus_positions), "stimulus_positions", None,
                                    f"expected 3 columns (x, y, z µm), got {spos.shape[1]}")
        extra["stimulus_positions"] = spos.astype(np.float32)
    if stimulus is not None:
        stim, _ = _read_matrix(stimulus, "stimulus")
        extra["stimulus"] = stim.astype(np.float32)
    if behaviour is not None:
        beh, header = _read_matrix(behaviour, "behaviour")
        extra["behaviour"] = beh.astype(np.float32)
        extra["behaviour_names"] = tuple(behaviour_names or header or [f"behaviour_{k}" for k in range(beh.shape[1])])
    for field, arr in (("stimulus", extra.get("stimulus")), ("behaviour", extra.get("behaviour"))):
        if arr is not None and len(arr) != t:
            raise V.ValidationError(str(stimulus if field == "stimulus" else behaviour), field, None,
                                    f"{len(arr)} frames, but the traces have {t}")
    ids = rec.neuron_ids
    if register == "position":
        if rec.positions is None:
            raise V.ValidationError(str(traces), "positions", None, "registration by position needs source "
                                    "positions (NWB masks with pixel_size_um, or an HDF5 'positions' dataset)")
        ids = matched_ids(register_by_position(rec, connectome, tol_um=tol_um), connectome)
    elif register != "id":
        raise V.ValidationError("import", "register", None, f"{register!r} is not 'id' or 'position'")
    if ids is None:
        raise V.ValidationError(str(traces), "neuron_ids", None, "no neuron ids: give them (a CSV header, an HDF5 "
                                "'neuron_ids' dataset or a neuron-ids file), or register by position")
    ids = _match_id_type(str(traces), ids, connectome)
    try:
        rec = Recording(traces=rec.traces, timestamps=rec.timestamps, neuron_ids=ids, positions=rec.positions,
                        source=rec.source, **extra)
    except V.ValidationError as err:  # name the file the bad field came from
        files = {"stimulus_positions": stimulus_positions, "trial_starts": trials, "stimulus": stimulus,
                 "behaviour": behaviour}
        raise V.ValidationError(str(files.get(err.field) or err.source), err.field, err.row, err.problem) from None
    reg = register_by_id(rec, connectome)
    line = f"registration by {register}: " + "; ".join(x.strip() for x in reg.report().splitlines())
    unmatched = ids[reg.neuron < 0]
    if unmatched.size:
        line += (f"; kept without position: trace columns {tables.preview(np.flatnonzero(reg.neuron < 0))} "
                 f"(ids {tables.preview(unmatched)})")
    report = report.merge(LoadReport(str(out), (line,), {"unregistered_columns": tuple(
        int(j) for j in np.flatnonzero(reg.neuron < 0))}))
    storage.write_connectome(out / "connectome", connectome, overwrite=overwrite)
    storage.write_recording(out / "recording", rec, chunk_t=chunk_t, overwrite=overwrite)
    return report


def _is_number(text: Any) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def _n_frames(path: PathLike) -> int:
    """Frames in a traces file, without keeping it in memory (NWB and HDF5 shapes, ``.npy`` memory-mapped)."""
    suffix = pathlib.Path(path).suffix.lower()
    if suffix in (".h5", ".hdf5"):
        with V.file_errors(str(path), "file", what="HDF5 traces file"), h5py.File(path, "r") as f:
            if "traces" in f:
                return int(f["traces"].shape[0])
    if suffix == ".npy":
        return int(np.load(path, mmap_mode="r").shape[0])
    if suffix == ".csv":
        return len(next(iter(tables.read_csv_columns(path).values()), ()))
    return -1  # NWB: trials must be given as start frames


def _match_id_type(source: str, ids: np.ndarray, connectome: Connectome) -> np.ndarray:
    """Recording ids in the connectome's id type (integers vs names), so registration compares like with like."""
    ids = np.asarray(ids)
    if connectome.ids.dtype.kind in "iu" and ids.dtype.kind not in "iu":
        text = ids.astype(str)
        bad = np.array([not (t == "" or t.lstrip("-").isdigit()) for t in text.tolist()])
        if bad.any():
            raise V.ValidationError(source, "neuron_ids", V.first_row(bad), f"id {text[V.first_row(bad)]!r} is not "
                                    "an integer, but the connectome's ids are")
        return np.array([-1 if t == "" else int(t) for t in text.tolist()], np.int64)
    if connectome.ids.dtype.kind not in "iu" and ids.dtype.kind in "iu":
        return np.where(ids < 0, "", ids.astype(str))
    return ids
