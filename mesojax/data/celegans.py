"""C. elegans loaders: WormWideWeb connectomes, the 3D neuron atlas, and Flavell-lab whole-brain recordings.

Files (see ``shared/data/celegans/README.md``):

* connectome JSON (WormWideWeb): a list of edges ``{"pre", "post", "syn": [counts], "typ"}`` with
  ``typ`` 0 = chemical, 2 = electrical (gap junction);
* ``connectome_neurons.csv``: ``name, class, type, ...`` per cell;
* ``neuron_positions_um.csv``: header-less ``name, x, y, z`` in µm;
* ``<uid>-data.h5``: traces ``gcamp/*`` ``[T, N]``, ``behavior/*``, ``timing/timestamp_confocal``;
* ``neuron_labels.csv``: ``dataset_uid, trace_col_0based, label, confidence, ...`` (a trailing ``?`` in a
  label marks an uncertain call).

Conventions chosen here:

* **Names** are normalised by :func:`normalize_name` everywhere (connectome, atlas, labels), so
  ``VB02`` (recordings, Cook 2019) and ``VB2`` (atlas, White 1986) are one neuron.
* **Connectome rows**: one row per counted synapse (the design's multigraph): an edge with
  ``syn = [2, 1]`` becomes 3 rows, so ``weighted()`` (``weight="count"``) returns the file's counts.
  Gap junctions are kept exactly as listed: WormWideWeb lists each junction in both directions, so
  ``weighted(kind=ELECTRICAL)`` is (nearly) symmetric. Signs are unknown (0): the files carry none.
* **Neurons without a position** cannot be placed (:class:`Connectome` needs finite ``xyz``); with a
  position table they are excluded, with their synapses, and listed in the returned :class:`LoadReport`
  (or, with ``missing_position="error"``, raise). Without a position table every neuron sits at the
  origin (graph-only use), which the report says.
* **Recording ids**: a trace column is identified when its label has ``confidence >= confidence`` and is
  not uncertain (``?``) unless ``allow_uncertain``; two columns with one name keep the more confident
  call (a tie identifies neither). Every other column has id ``""``. Positions stay None: the atlas is
  canonical, not this animal's, so registration is by id (:func:`mesojax.data.register_by_id`).

Example:
    >>> normalize_name("VB02"), normalize_name(" DD01 "), normalize_name("IL1DL"), normalize_name("AS10")
    ('VB2', 'DD1', 'IL1DL', 'AS10')
    >>> split_uncertain("RMDD?")
    ('RMDD', True)
"""

from __future__ import annotations

import json
import os
import pathlib
import re
from typing import Any, NamedTuple, Sequence

import h5py
import numpy as np

from mesojax.data import validation as V
from mesojax.data.connectome import CHEMICAL, ELECTRICAL, Connectome, index_ids
from mesojax.data.recording import Recording
from mesojax.data.tables import LoadReport, _Notes, preview, read_csv_columns, to_float, to_int

PathLike = str | os.PathLike

KIND_CODES = {"chemical": (0, CHEMICAL), "electrical": (2, ELECTRICAL)}  # name -> (JSON typ, Connectome kind)
TRACES = ("trace_array", "traces_array_F_F20", "trace_array_original")
DEFAULT_BEHAVIOUR = ("velocity", "head_angle", "angular_velocity", "worm_curvature", "pumping", "body_angle")
MODE_NAMES = ("forward", "reversal")

_PADDING = re.compile(r"(?<=[A-Za-z])0+(?=\d)")


# ==================================================================== names
def normalize_name(name: str) -> str:
    """Canonical C. elegans cell name: zero padding dropped from numerals that follow a letter.

    Rules: surrounding whitespace is stripped; in every numeral directly preceded by a letter, leading
    zeros are removed while at least one digit remains (``VB02 -> VB2``, ``DD01 -> DD1``,
    ``CP00 -> CP0``, ``BWM-DL01 -> BWM-DL1``); everything else, case and a trailing ``?`` included, is
    kept (``AS10``, ``IL1DL``, ``I2L`` are unchanged).

    Args:
      name: a cell name.

    Returns:
      The normalised name.
    """
    return _PADDING.sub("", str(name).strip())


def normalize_names(names: Sequence[str]) -> np.ndarray:
    """:func:`normalize_name` over an array (each distinct name is normalised once)."""
    names = np.asarray(names, dtype=str)
    unique, inverse = np.unique(names, return_inverse=True)
    return np.asarray([normalize_name(n) for n in unique.tolist()], dtype=str)[inverse].reshape(names.shape)


def split_uncertain(label: str) -> tuple[str, bool]:
    """``"RMDD?" -> ("RMDD", True)``: the normalised name and whether the call is marked uncertain."""
    label = str(label).strip()
    uncertain = label.endswith("?")
    return normalize_name(label.rstrip("?")), uncertain


# ==================================================================== positions
def load_positions(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a neuron position table ``name, x, y, z`` (µm; an optional header line is skipped).

    Args:
      path: CSV file.

    Returns:
      ``(names [N] str (normalised), xyz [N, 3] float32 µm)``.

    Raises:
      ValidationError: wrong field count, non-numeric or non-finite coordinate, empty or duplicate
        name (after normalisation) — naming the row (0 = first data row).
    """
    source = str(path)
    with open(path, encoding="utf-8-sig") as f:
        first = f.readline().split(",")
    has_header = len(first) == 4 and not any(_is_number(c) for c in first[1:])
    cols = read_csv_columns(path, header=has_header, names=None if has_header else ["name", "x", "y", "z"])
    if len(cols) != 4:
        raise V.ValidationError(source, "header", None,
                                f"expected 4 columns (name, x, y, z), got {list(cols)}")
    name_col, *coord_cols = list(cols)
    names = normalize_names(cols[name_col])
    if (names == "").any():
        raise V.ValidationError(source, name_col, V.first_row(names == ""), "empty neuron name")
    V.check_unique(source, name_col, names)
    xyz = np.stack([to_float(source, c, cols[c]) for c in coord_cols], axis=1)
    V.check_finite(source, "xyz", xyz)
    return names, xyz.astype(np.float32)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def load_neuron_table(path: PathLike, *, column: str = "class") -> tuple[np.ndarray, np.ndarray]:
    """Read ``connectome_neurons.csv`` -> ``(names [M] normalised, values [M] of `column`)``."""
    source = str(path)
    cols = read_csv_columns(path)
    for field in ("name", column):
        if field not in cols:
            raise V.ValidationError(source, field, None, f"missing column (have {list(cols)})")
    names = normalize_names(cols["name"])
    if (names == "").any():
        raise V.ValidationError(source, "name", V.first_row(names == ""), "empty neuron name")
    V.check_unique(source, "name", names)
    return names, cols[column]


# ==================================================================== connectome
def load_connectome(
    json_path: PathLike,
    positions_path: PathLike | None = None,
    neurons_csv: PathLike | None = None,
    *,
    include: Sequence[str] = ("chemical", "electrical"),
    cell_type_column: str = "class",
    missing_position: str = "exclude",
    strict: bool = False,
) -> tuple[Connectome, LoadReport]:
    """Load a WormWideWeb connectome JSON as a :class:`Connectome` with one row per counted synapse.

    Edge ``{"pre": a, "post": b, "syn": [c_1, ..., c_k], "typ": t}`` becomes ``Σ c_j`` rows ``a -> b`` of
    kind chemical (``t = 0``) or electrical (``t = 2``), sign 0 (unknown). Neurons are the edge endpoints
    (normalised names, sorted).

    Args:
      json_path: the connectome JSON.
      positions_path: neuron position table (see :func:`load_positions`); None puts all neurons at the
        origin (reported).
      neurons_csv: ``connectome_neurons.csv`` giving each neuron's cell type (names not in it get "",
        reported; raise instead with `strict`).
      include: synapse kinds to keep, any of "chemical", "electrical".
      cell_type_column: the `neurons_csv` column used as cell type ("class": AVA, VB...; "type": sensory...).
      missing_position: "exclude" (drop neurons without a position and their synapses, reported) or "error".
      strict: with `neurons_csv`, an edge endpoint not listed there is an error.

    Returns:
      ``(connectome, report)``.

    Raises:
      ValidationError: malformed JSON edge (missing key, empty name, bad ``syn``/``typ``), unknown neuron
        (`strict`), missing position ("error"); naming the file, field and edge row.
    """
    source = str(json_path)
    notes = _Notes(source)
    for k in include:
        if k not in KIND_CODES:
            raise V.ValidationError(source, "include", None,
                                    f"unknown synapse kind {k!r}; use {list(KIND_CODES)}")
    if missing_position not in ("exclude", "error"):
        raise V.ValidationError(source, "missing_position", None,
                                f"use 'exclude' or 'error', got {missing_position!r}")
    try:
        with open(json_path, encoding="utf-8") as f:
            edges = json.load(f)
    except json.JSONDecodeError as err:
        raise V.ValidationError(source, "json", None, f"not valid JSON: {err}") from None
    if not isinstance(edges, list):
        raise V.ValidationError(source, "json", None, f"expected a list of edges, got {type(edges).__name__}")
    pre, post, typ, count = _parse_edges(source, edges)

    wanted = np.isin(typ, [KIND_CODES[k][0] for k in include])
    if not wanted.all():
        dropped = {t: int(count[typ == t].sum()) for t in np.unique(typ[~wanted]).tolist()}
        notes.add(f"kinds not in include={tuple(include)} left out: "
                  + ", ".join(f"typ {t}: {c} synapses" for t, c in dropped.items()))
    empty = count == 0
    if empty.any():
        rows = np.flatnonzero(empty)
        notes.add(f"{len(rows)} edges with zero synapses (no rows): {preview(rows)}",
                  "edges_with_zero_synapses", rows.tolist())
    keep = wanted & ~empty
    names = np.unique(np.concatenate([pre, post]))

    if neurons_csv is not None:
        table_names, table_types = load_neuron_table(neurons_csv, column=cell_type_column)
        row = index_ids(table_names, names, source=str(neurons_csv), field="name", missing_ok=True)
        if strict and (row < 0).any():
            bad = names[np.flatnonzero(row < 0)[0]]
            edge = int(np.flatnonzero((pre == bad) | (post == bad))[0])
            field = "pre" if pre[edge] == bad else "post"
            raise V.ValidationError(source, field, edge, f"unknown neuron {V.show(bad)} (not in {neurons_csv})")
        cell_type = np.where(row >= 0, table_types[np.maximum(row, 0)], "")
        if (row < 0).any():
            unknown = names[row < 0]
            notes.add(f"{len(unknown)} neurons not in {pathlib.Path(neurons_csv).name} (cell type ''): "
                      f"{preview(unknown)}", "neurons_without_cell_type", unknown.tolist())
    else:
        cell_type = np.full(len(names), "", dtype=str)

    if positions_path is not None:
        pos_names, pos_xyz = load_positions(positions_path)
        row = index_ids(pos_names, names, source=str(positions_path), field="name", missing_ok=True)
        has = row >= 0
        if not has.all():
            lost = names[~has]
            if missing_position == "error":
                edge = int(np.flatnonzero((pre == lost[0]) | (post == lost[0]))[0])
                raise V.ValidationError(source, "pre" if pre[edge] == lost[0] else "post", edge,
                                        f"neuron {V.show(lost[0])} has no position in {positions_path}")
            lost_edges = keep & (np.isin(pre, lost) | np.isin(post, lost))
            notes.add(f"{len(lost)} of {len(names)} neurons have no position and were excluded with their "
                      f"{int(count[lost_edges].sum())} synapses ({int(lost_edges.sum())} edges): "
                      f"{preview(lost)}",
                      "neurons_without_position", lost.tolist())
        xyz = pos_xyz[row[has]]
        names, cell_type = names[has], cell_type[has]
        keep &= np.isin(pre, names) & np.isin(post, names)
    else:
        xyz = np.zeros((len(names), 3), np.float32)
        notes.add("no position table: every neuron placed at the origin (not usable for spatial work)")

    rep = np.repeat(np.flatnonzero(keep), count[keep])
    kind = np.where(typ[rep] == KIND_CODES["electrical"][0], ELECTRICAL, CHEMICAL)
    connectome = Connectome.from_id_table(
        ids=names, xyz=xyz, cell_type=cell_type, pre_ids=pre[rep], post_ids=post[rep], kind=kind,
        source=source,
    )
    return connectome, notes.report()


def _parse_edges(source: str, edges: list) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate WormWideWeb edges -> ``(pre [M], post [M] normalised names, typ [M], count [M] int)``."""
    allowed_typ = [c for c, _ in KIND_CODES.values()]
    pre, post, typ, count = [], [], [], []
    for row, edge in enumerate(edges):
        if not isinstance(edge, dict):
            raise V.ValidationError(source, "edge", row, f"expected an object, got {type(edge).__name__}")
        for key in ("pre", "post", "syn", "typ"):
            if key not in edge:
                raise V.ValidationError(source, key, row, f"edge has no {key!r}")
        for key in ("pre", "post"):
            if not isinstance(edge[key], str) or not edge[key].strip():
                raise V.ValidationError(source, key, row,
                                        f"neuron name must be a non-empty string, got {edge[key]!r}")
        syn = edge["syn"] if isinstance(edge["syn"], list) else [edge["syn"]]
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in syn):
            raise V.ValidationError(source, "syn", row,
                                    f"synapse counts must be non-negative integers, got {edge['syn']!r}")
        if edge["typ"] not in allowed_typ or isinstance(edge["typ"], bool):
            raise V.ValidationError(source, "typ", row,
                                    f"unknown synapse type {edge['typ']!r} (0 chemical, 2 electrical)")
        pre.append(edge["pre"])
        post.append(edge["post"])
        typ.append(edge["typ"])
        count.append(sum(syn))
    return (normalize_names(pre), normalize_names(post), np.asarray(typ, np.int64).reshape(-1),
            np.asarray(count, np.int64).reshape(-1))


# ==================================================================== recordings
def load_labels(labels_csv: PathLike, uid: str) -> dict[str, np.ndarray]:
    """The label rows of one animal.

    Returns:
      ``{"col": [R] int, "label": [R] str (raw), "confidence": [R] float, "row": [R] file row}``.

    Raises:
      ValidationError: missing column, no rows for `uid`, bad column number/confidence, empty label,
        a trace column labelled twice (rows are numbered over the whole file, 0 = first data row).
    """
    source = str(labels_csv)
    cols = read_csv_columns(labels_csv)
    for field in ("dataset_uid", "trace_col_0based", "label", "confidence"):
        if field not in cols:
            raise V.ValidationError(source, field, None, f"missing column (have {list(cols)})")
    rows = np.flatnonzero(cols["dataset_uid"] == uid)
    if rows.size == 0:
        raise V.ValidationError(source, "dataset_uid", None, f"no label rows for animal {uid!r}")
    col = to_int(source, "trace_col_0based", cols["trace_col_0based"])[rows]
    confidence = to_float(source, "confidence", cols["confidence"])[rows]
    label = cols["label"][rows]
    try:
        V.check_finite(source, "confidence", confidence)
        V.check_nonnegative(source, "confidence", confidence)
        V.check_nonnegative(source, "trace_col_0based", col)
        V.check_unique(source, "trace_col_0based", col)
    except V.ValidationError as err:
        raise V.ValidationError(source, err.field, int(rows[err.row]), err.problem) from None
    empty = np.char.strip(np.char.rstrip(label, "?")) == ""
    if empty.any():
        raise V.ValidationError(source, "label", int(rows[V.first_row(empty)]), "empty label")
    return {"col": col, "label": label, "confidence": confidence, "row": rows}


def _read(f: h5py.File, source: str, name: str, t: int | None = None) -> np.ndarray:
    """A numeric dataset, checked to exist, to be numeric and (when `t` is given) to have T rows.

    A dataset that h5py cannot read (a damaged or truncated file) is a ValidationError naming it.
    """
    with V.file_errors(source, name, what="HDF5 dataset"):
        node = f.get(name)
        if not isinstance(node, h5py.Dataset):
            raise V.ValidationError(source, name, None, "missing dataset")
        value = node[()]
    V.check_numeric(source, name, value)
    if t is not None and (value.ndim == 0 or value.shape[0] != t):
        raise V.ValidationError(source, name, None, f"shape {list(np.shape(value))} does not have T={t} rows")
    return value


def _open_h5(path: PathLike) -> h5py.File:
    """Open an HDF5 file for reading; a missing, unreadable or damaged file is a ValidationError naming it."""
    with V.file_errors(str(path), "file", what="HDF5 file"):
        return h5py.File(path, "r")


def load_recording(
    h5_path: PathLike,
    labels_csv: PathLike | None = None,
    *,
    uid: str | None = None,
    confidence: float = 3.0,
    allow_uncertain: bool = False,
    trace: str = "trace_array",
    behaviour: Sequence[str] = DEFAULT_BEHAVIOUR,
) -> tuple[Recording, LoadReport]:
    """Load one Flavell-lab / WormWideWeb HDF5 recording with its neuron labels.

    Args:
      h5_path: ``<uid>-data.h5``.
      labels_csv: ``neuron_labels.csv`` (None: ``neuron_ids`` is None).
      uid: the animal's ``dataset_uid`` (default: the file name without ``-data.h5``).
      confidence: minimum label confidence (1-5) for a column to be identified.
      allow_uncertain: also accept labels marked ``?`` (still subject to `confidence`).
      trace: which ``gcamp/`` array: "trace_array" (z-scored ratio), "traces_array_F_F20",
        "trace_array_original".
      behaviour: ``behavior/`` datasets to use as continuous behaviour; a ``[T, K]`` dataset becomes
        columns ``name_0..name_{K-1}``; an all-NaN dataset (``pumping`` in these files) is left out and
        reported.

    Returns:
      ``(recording, report)``: traces ``[T, N]``, timestamps from ``timing/timestamp_confocal`` (s),
      ``neuron_ids`` ``[N]`` (normalised names, "" = unidentified), behaviour ``[T, Kc]``, modes from
      ``behavior/reversal_vec`` (0 forward, 1 reversal), positions None.

    Raises:
      ValidationError: missing dataset, wrong length, non-numeric data, reversal values other than 0/1,
        bad label rows or a label pointing past the last trace column.
    """
    source = str(h5_path)
    notes = _Notes(source)
    if trace not in TRACES:
        raise V.ValidationError(source, "trace", None, f"unknown trace {trace!r}; use one of {TRACES}")
    if uid is None:
        uid = pathlib.Path(h5_path).name.removesuffix(".h5").removesuffix("-data")
    with _open_h5(h5_path) as f:
        traces = _read(f, source, f"gcamp/{trace}")
        V.check_shape(source, f"gcamp/{trace}", traces, (None, None))
        t, n = traces.shape
        timestamps = _read(f, source, "timing/timestamp_confocal", t)
        V.check_shape(source, "timing/timestamp_confocal", timestamps, (t,))
        reversal = _read(f, source, "behavior/reversal_vec", t)
        beh_cols, beh_names = [], []
        for name in behaviour:
            value = np.asarray(_read(f, source, f"behavior/{name}", t), np.float64)
            value = value.reshape(t, -1)
            if np.isnan(value).all():
                notes.add(f"behaviour 'behavior/{name}' is all NaN and was left out",
                          "behaviour_all_nan", [name])
                continue
            beh_cols.append(value)
            beh_names += [name] if value.shape[1] == 1 and f[f"behavior/{name}"].ndim == 1 else [
                f"{name}_{k}" for k in range(value.shape[1])]
    V.check_shape(source, "behavior/reversal_vec", reversal, (t,))
    finite = np.isfinite(reversal)
    if not finite.all():
        raise V.ValidationError(source, "behavior/reversal_vec", V.first_row(~finite), "non-finite value")
    V.check_in_set(source, "behavior/reversal_vec", reversal, (0, 1))

    ids = None
    if labels_csv is not None:
        ids = _identify(labels_csv, uid, n, confidence, allow_uncertain, notes)
    else:
        notes.add("no label table: neuron_ids is None")
    recording = Recording(
        traces=traces.astype(np.float32), timestamps=timestamps, neuron_ids=ids,
        behaviour=np.concatenate(beh_cols, axis=1) if beh_cols else None, behaviour_names=tuple(beh_names),
        modes=reversal.astype(np.int32), mode_names=MODE_NAMES, source=source,
    )
    return recording, notes.report()


def _identify(labels_csv: PathLike, uid: str, n: int, confidence: float, allow_uncertain: bool,
              notes: _Notes) -> np.ndarray:
    """Per trace column: the normalised name of an accepted label, else ""; exclusions go to `notes`."""
    labels = load_labels(labels_csv, uid)
    col, conf, rows = labels["col"], labels["confidence"], labels["row"]
    past = col >= n
    if past.any():
        k = V.first_row(past)
        raise V.ValidationError(str(labels_csv), "trace_col_0based", int(rows[k]),
                                f"column {col[k]} is past the last of the recording's {n} trace columns")
    parsed = [split_uncertain(s) for s in labels["label"].tolist()]
    name = np.asarray([p[0] for p in parsed], dtype=str)
    uncertain = np.asarray([p[1] for p in parsed], dtype=bool)

    low = conf < confidence
    if low.any():
        notes.add(f"{int(low.sum())} labels below confidence {confidence} left unidentified: "
                  f"{preview(labels['label'][low])}", "labels_below_confidence",
                  labels["label"][low].tolist())
    unsure = uncertain & ~low & (not allow_uncertain)
    if unsure.any():
        notes.add(f"{int(unsure.sum())} uncertain ('?') labels left unidentified (allow_uncertain=False): "
                  f"{preview(labels['label'][unsure])}", "labels_uncertain", labels["label"][unsure].tolist())
    ok = ~low & ~unsure
    # One name on several columns: the most confident call wins; an exact tie identifies none.
    order = np.lexsort((-conf, name))
    ok_sorted = ok[order]
    cand = order[ok_sorted]
    if cand.size:
        first = np.r_[True, name[cand][1:] != name[cand][:-1]]
        best = cand[first]
        group = np.cumsum(first) - 1
        loser = ~first
        tie = np.zeros(len(cand), bool)
        tie_group = np.unique(group[loser & (conf[cand] == conf[best][group])])
        tie[np.isin(group, tie_group)] = True
        dropped = cand[loser | tie]
        if dropped.size:
            text = [f"{labels['label'][i]}@col{col[i]}(conf {conf[i]:g})" for i in dropped.tolist()]
            notes.add(f"{len(dropped)} columns share a name with a more (or equally) confident column "
                      f"and were left unidentified: {preview(text)}", "labels_duplicate", text)
        ok[dropped] = False
    ids = np.full((n,), "", dtype=object)
    ids[col[ok]] = name[ok]
    return ids.astype(str)


# ==================================================================== directory conveniences
def list_animals(celegans_dir: PathLike) -> list[str]:
    """Sorted uids of the recordings ``<celegans_dir>/recordings/<uid>-data.h5``."""
    folder = pathlib.Path(celegans_dir) / "recordings"
    if not folder.is_dir():
        raise V.ValidationError(str(folder), "recordings", None, "no recordings directory")
    return sorted(p.name.removesuffix("-data.h5") for p in folder.glob("*-data.h5"))


def load_animal(celegans_dir: PathLike, uid: str, **kwargs: Any) -> tuple[Recording, LoadReport]:
    """:func:`load_recording` of ``recordings/<uid>-data.h5`` with ``recordings/neuron_labels.csv``."""
    folder = pathlib.Path(celegans_dir) / "recordings"
    V.check_name(str(folder), "uid", uid)
    path = folder / f"{uid}-data.h5"
    if not path.is_file():
        raise V.ValidationError(str(path), "uid", None,
                                f"no recording for animal {uid!r}; have {list_animals(celegans_dir)}")
    return load_recording(path, folder / "neuron_labels.csv", uid=uid, **kwargs)


def load_celegans_connectome(celegans_dir: PathLike, name: str = "witvliet_2020_8", **kwargs: Any
                             ) -> tuple[Connectome, LoadReport]:
    """:func:`load_connectome` of ``connectome/<name>.json`` with the atlas positions and neuron table."""
    root = pathlib.Path(celegans_dir)
    V.check_name(str(root / "connectome"), "connectome", name)
    path = root / "connectome" / f"{name}.json"
    if not path.is_file():
        have = sorted(p.stem for p in (root / "connectome").glob("*.json"))
        raise V.ValidationError(str(path), "connectome", None, f"no connectome {name!r}; have {have}")
    return load_connectome(path, root / "positions" / "neuron_positions_um.csv",
                           root / "connectome" / "connectome_neurons.csv", **kwargs)


class CElegansData(NamedTuple):
    """A connectome, the recordings of all animals, and what loading excluded (report per file)."""

    connectome: Connectome
    recordings: dict[str, Recording]
    reports: dict[str, LoadReport]


def load_dataset(
    celegans_dir: PathLike,
    connectome: str = "witvliet_2020_8",
    *,
    uids: Sequence[str] | None = None,
    connectome_kwargs: dict[str, Any] | None = None,
    **recording_kwargs: Any,
) -> CElegansData:
    """Load a connectome (with atlas positions and cell types) and every animal's recording.

    Args:
      celegans_dir: the ``celegans`` data directory.
      connectome: JSON file stem in ``connectome/`` ("witvliet_2020_8", "cook_jarrell_2019_h",
        "white_1986_whole").
      uids: animals to load (default: all, :func:`list_animals`).
      connectome_kwargs: passed to :func:`load_connectome`.
      **recording_kwargs: passed to :func:`load_recording` (``confidence``, ``trace``...).

    Returns:
      :class:`CElegansData` ``(connectome, recordings {uid: Recording},
      reports {"connectome" | uid: LoadReport})``.

    Example:
      >>> data = load_dataset(celegans_dir)                                   # doctest: +SKIP
      >>> reg = register_by_id(data.recordings["2022-07-26-31"], data.connectome)  # doctest: +SKIP
    """
    con, con_report = load_celegans_connectome(celegans_dir, connectome, **(connectome_kwargs or {}))
    recordings, reports = {}, {"connectome": con_report}
    for uid in list_animals(celegans_dir) if uids is None else uids:
        recordings[uid], reports[uid] = load_animal(celegans_dir, uid, **recording_kwargs)
    return CElegansData(con, recordings, reports)
