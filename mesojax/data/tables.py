"""Tabular inputs: CSV/HDF5 column readers, the load report, and synapse tables of large EM projects.

A *synapse table* has one row per synapse (or per connection, with a synapse count) naming the
presynaptic and postsynaptic neuron ids and, optionally, the synapse position and strength features.
Three column conventions are read:

* **CAVE** (MICrONS, FlyWire annotation tables): ``pre_pt_root_id``, ``post_pt_root_id``, positions in
  voxels as ``ctr_pt_position`` / ``pre_pt_position`` / ``post_pt_position`` — either one column of
  ``"[x y z]"`` strings or split ``<name>_x``, ``<name>_y``, ``<name>_z`` columns — and ``size``.
  Default voxel size ``(4, 4, 40)`` nm. Root id 0 means "no segment"; such rows are removed and reported.
* **neuPrint** (hemibrain, MANC): ``bodyId_pre``, ``bodyId_post``; positions ``x, y, z`` or ``ux, uy, uz``
  or ``x_pre/y_pre/z_pre`` + ``x_post/y_post/z_post``; ``confidence`` (or ``confidence_pre`` /
  ``confidence_post``) as features; ``weight`` = synapses per row (connection tables). Voxels 8 nm.
* **generic**: ``pre``, ``post``, optional ``x, y, z`` (µm) and ``weight`` (synapses per row).

When both a pre- and a postsynaptic point are given (and no centre point), the synapse position is
their midpoint. Positions are converted to µm as ``xyz_um = xyz_voxel * voxel_nm / 1000``.

Example:
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "syn.csv"
    >>> _ = path.write_text("pre_pt_root_id,post_pt_root_id,ctr_pt_position,size\\n"
    ...                     "11,12,[100 200 10],40\\n12,11,[300 200 20],25\\n")
    >>> table, report = load_synapse_table(path)
    >>> table.format, table.xyz.astype(float).round(3).tolist()  # voxels × (4, 4, 40) nm
    ('cave', [[0.4, 0.8, 0.4], [1.2, 0.8, 0.8]])
    >>> connectome, _ = connectome_from_synapse_table(table)
    >>> connectome.n_neurons, connectome.n_synapses, connectome.strength_names
    (2, 2, ('size',))
"""

from __future__ import annotations

import csv
import dataclasses
import os
import pathlib
from typing import Any, Mapping, Sequence

import h5py
import numpy as np

from mesojax.data import validation as V
from mesojax.data.connectome import Connectome, _as_id_array, index_ids

PathLike = str | os.PathLike


# ==================================================================== load report
@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What a loader excluded or repaired, so that nothing is dropped silently.

    Attributes:
      source: the file (or directory) that was loaded.
      notes: one human-readable line per exclusion/repair, in the order they happened.
      excluded: machine-readable detail: a key (e.g. ``"neurons_without_position"``) -> the excluded
        names / rows.
    """

    source: str
    notes: tuple[str, ...] = ()
    excluded: Mapping[str, tuple[Any, ...]] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        if not self.notes:
            return f"{self.source}: loaded as is (nothing excluded or repaired)"
        return "\n".join([f"{self.source}:"] + [f"  - {n}" for n in self.notes])

    def merge(self, other: "LoadReport") -> "LoadReport":
        """Both reports' notes and exclusions (concatenated per key); `other`'s notes name its source."""
        prefix = "" if other.source == self.source else f"{other.source}: "
        excluded = dict(self.excluded)
        for key, items in other.excluded.items():
            excluded[key] = tuple(excluded.get(key, ())) + tuple(items)
        return LoadReport(self.source, self.notes + tuple(prefix + n for n in other.notes), excluded)


class _Notes:
    """Collects report lines and exclusions while a loader runs."""

    def __init__(self, source: str):
        self.source, self.notes, self.excluded = source, [], {}

    def add(self, note: str, key: str | None = None, items: Sequence[Any] = ()) -> None:
        self.notes.append(note)
        if key is not None:
            self.excluded[key] = tuple(self.excluded.get(key, ())) + tuple(items)

    def report(self) -> LoadReport:
        return LoadReport(self.source, tuple(self.notes), dict(self.excluded))


def preview(items: Sequence[Any], k: int = 8) -> str:
    """Short text listing the first `k` items and how many more there are."""
    items = list(items)
    head = ", ".join(str(x) for x in items[:k])
    return head + (f", ... (+{len(items) - k} more)" if len(items) > k else "")


# ==================================================================== column readers
def read_csv_columns(path: PathLike, *, header: bool = True, names: Sequence[str] | None = None
                     ) -> dict[str, np.ndarray]:
    """Read a CSV file into string columns, checking that every row has the header's field count.

    Args:
      path: the CSV file.
      header: whether the first line names the columns.
      names: column names for a file without header (required when ``header=False``).

    Returns:
      ``{name: [R] str array}`` in file order; rows are numbered from 0 (the first data row) in errors.

    Raises:
      ValidationError: empty file, duplicate/empty column name, or a row with the wrong number of fields.
    """
    source = str(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f) if r and any(cell.strip() for cell in r)]
    if header:
        if not rows:
            raise V.ValidationError(source, "header", None, "empty file (no header line)")
        names, rows = [c.strip() for c in rows[0]], rows[1:]
    elif names is None:
        raise V.ValidationError(source, "header", None, "no header and no column names given")
    names = list(names)
    if "" in names:
        raise V.ValidationError(source, "header", None, f"empty column name at position {names.index('')}")
    V.check_unique(source, "header", np.asarray(names))
    lengths = np.fromiter((len(r) for r in rows), np.int64, len(rows))
    bad = lengths != len(names)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise V.ValidationError(
            source, "row", row, f"{lengths[row]} fields where the header has {len(names)} ({rows[row]!r})"
        )
    table = np.asarray(rows, dtype=str).reshape(len(rows), len(names))
    return {name: np.char.strip(table[:, k]) for k, name in enumerate(names)}


def read_hdf5_columns(path: PathLike, key: str | None = None) -> dict[str, np.ndarray]:
    """Read an HDF5 table: a group of equal-length column datasets, or one compound (structured) dataset.

    Column datasets may be 1-D ``[R]`` or 2-D ``[R, 3]`` (a position column). Byte strings are decoded.

    Args:
      path: the HDF5 file.
      key: path of the group or compound dataset inside the file (default: the root group, or its only
        member when the root holds a single group/compound dataset).

    Returns:
      ``{name: [R] or [R, 3] array}``.

    Raises:
      ValidationError: missing key, unsupported layout, or columns of different lengths.
    """
    source = str(path)
    with V.file_errors(source, what="HDF5 table"), h5py.File(path, "r") as f:
        if key is None:
            obj = f
            members = list(f.values())
            if len(members) == 1 and (
                isinstance(members[0], h5py.Group) or members[0].dtype.names is not None
            ):
                obj = members[0]
        else:
            if key not in f:
                raise V.ValidationError(source, key, None, f"no group or dataset {key!r} in the file")
            obj = f[key]
        if isinstance(obj, h5py.Dataset):
            if obj.dtype.names is None:
                raise V.ValidationError(source, obj.name, None,
                                        "expected a compound dataset or a group of columns")
            data = obj[()]
            columns = {name: data[name] for name in obj.dtype.names}
        else:
            columns = {name: d[()] for name, d in obj.items() if isinstance(d, h5py.Dataset)}
            if not columns:
                raise V.ValidationError(source, obj.name, None, "group holds no column datasets")
    out = {}
    for name, col in columns.items():
        col = np.asarray(col)
        if col.dtype.kind in "OS":
            col = np.asarray([c.decode() if isinstance(c, bytes) else str(c) for c in col.ravel()],
                             dtype=str).reshape(col.shape)
        out[name] = col
    V.check_same_length(source, out)
    return out


def read_columns(path: PathLike, *, key: str | None = None) -> dict[str, np.ndarray]:
    """CSV (``.csv``/``.tsv``/``.txt``) or HDF5 (``.h5``/``.hdf5``/``.hdf``) table -> columns."""
    suffix = pathlib.Path(path).suffix.lower()
    if suffix in (".h5", ".hdf5", ".hdf"):
        return read_hdf5_columns(path, key)
    if suffix in (".csv", ".tsv", ".txt"):
        return read_csv_columns(path)
    raise V.ValidationError(str(path), "path", None, f"unknown table file type {suffix!r} (csv or h5)")


def to_float(source: str, field: str, values: np.ndarray) -> np.ndarray:
    """Convert a column to float64 (``""`` -> NaN); a non-numeric cell raises naming its row."""
    values = np.asarray(values)
    if values.dtype.kind in "iufb":
        return values.astype(np.float64)
    values = np.where(values == "", "nan", values.astype(str))
    try:
        return values.astype(np.float64)
    except ValueError:
        for row, cell in enumerate(values.reshape(len(values), -1)):
            for c in cell:
                try:
                    float(c)
                except ValueError:
                    raise V.ValidationError(source, field, row, f"not a number: {V.show(c)}") from None
        raise


def to_int(source: str, field: str, values: np.ndarray) -> np.ndarray:
    """Convert a column to int64; a non-integer cell raises naming its row."""
    values = np.asarray(values)
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values) | (values != np.round(values))
        if bad.any():
            row = V.first_row(bad)
            raise V.ValidationError(source, field, row, f"not an integer id: {V.show(values[row])}")
        return values.astype(np.int64)
    values = values.astype(str)
    try:
        return values.astype(np.int64)
    except (ValueError, OverflowError):
        for row, cell in enumerate(values):
            try:
                int(cell)
            except (ValueError, OverflowError):
                raise V.ValidationError(source, field, row, f"not an integer id: {V.show(cell)}") from None
        raise


def parse_points(source: str, field: str, values: np.ndarray) -> np.ndarray:
    """Parse ``"[x y z]"`` / ``"(x, y, z)"`` strings (or an ``[R, 3]`` array) to ``[R, 3]`` float64."""
    values = np.asarray(values)
    if values.dtype.kind in "iuf":
        V.check_shape(source, field, values, (None, 3))
        return values.astype(np.float64)
    values = values.astype(str)
    cleaner = str.maketrans("[](),;", "      ")
    tokens = " ".join(values.tolist()).translate(cleaner).split()
    if len(tokens) == 3 * len(values):
        try:
            return np.asarray(tokens, dtype=np.float64).reshape(len(values), 3)
        except ValueError:
            pass
    # Error path only: find the first malformed row.
    for row, cell in enumerate(values):
        parts = cell.translate(cleaner).split()
        ok = len(parts) == 3
        try:
            for part in parts:
                float(part)
        except ValueError:
            ok = False
        if not ok:
            raise V.ValidationError(source, field, row, f"expected a point '[x y z]', got {V.show(cell)}")
    raise V.ValidationError(source, field, None, "could not parse points")


# ==================================================================== synapse tables
_CONVENTIONS = {
    # format: (pre column, post column, point names, split-coordinate triples, count column, default nm)
    "cave": dict(
        pre="pre_pt_root_id", post="post_pt_root_id",
        centre=("ctr_pt_position",), pre_pt=("pre_pt_position",), post_pt=("post_pt_position",),
        triples={}, features=("size",), count=None, voxel_nm=(4.0, 4.0, 40.0), int_ids=True,
    ),
    "neuprint": dict(
        pre="bodyId_pre", post="bodyId_post",
        centre=("xyz", "uxyz"), pre_pt=("xyz_pre",), post_pt=("xyz_post",),
        triples={"xyz": ("x", "y", "z"), "uxyz": ("ux", "uy", "uz"),
                 "xyz_pre": ("x_pre", "y_pre", "z_pre"), "xyz_post": ("x_post", "y_post", "z_post")},
        features=("confidence", "confidence_pre", "confidence_post"), count="weight",
        voxel_nm=(8.0, 8.0, 8.0), int_ids=True,
    ),
    "generic": dict(
        pre="pre", post="post", centre=("xyz",), pre_pt=(), post_pt=(),
        triples={"xyz": ("x", "y", "z")}, features=("size", "confidence"), count="weight",
        voxel_nm=(1000.0, 1000.0, 1000.0), int_ids=False,
    ),
}
SYNAPSE_FORMATS = tuple(_CONVENTIONS)


@dataclasses.dataclass(frozen=True, eq=False)
class SynapseTable:
    """Synapses (or connections) read from a table, endpoints as neuron ids.

    Attributes:
      pre_ids: ``[E]`` presynaptic neuron ids (int64, or str for generic tables with text ids).
      post_ids: ``[E]`` postsynaptic neuron ids.
      xyz: ``[E, 3]`` float32 synapse positions in µm, or None.
      features: ``{name: [E] float32}`` strength features (e.g. ``size``, ``confidence``).
      count: ``[E]`` int64 synapses each row stands for (1 for synapse-level tables).
      format: the column convention that was read ("cave", "neuprint" or "generic").
      source: the file.
    """

    pre_ids: np.ndarray
    post_ids: np.ndarray
    xyz: np.ndarray | None
    features: Mapping[str, np.ndarray]
    count: np.ndarray
    format: str
    source: str

    @property
    def n_rows(self) -> int:
        return len(self.pre_ids)


def detect_format(columns: Sequence[str], source: str = "table") -> str:
    """The synapse-table convention whose pre/post id columns are present ("cave", "neuprint", "generic")."""
    for name, conv in _CONVENTIONS.items():
        if conv["pre"] in columns and conv["post"] in columns:
            return name
    raise V.ValidationError(
        source, "header", None,
        "no known pre/post id columns (CAVE: pre_pt_root_id/post_pt_root_id, neuPrint: bodyId_pre/"
        f"bodyId_post, generic: pre/post); columns are {list(columns)}",
    )


def _point_column(columns: dict, conv: dict, names: Sequence[str], source: str):
    """The first available point among `names` (string column, [R,3] array, or split x/y/z columns)."""
    for name in names:
        if name in columns:
            return name, parse_points(source, name, columns[name])
        split = [f"{name}_{a}" for a in "xyz"]
        triple = conv["triples"].get(name, split)
        if all(c in columns for c in triple):
            xyz = np.stack([to_float(source, c, columns[c]) for c in triple], axis=1)
            return "/".join(triple), xyz
    return None, None


def load_synapse_table(
    path: PathLike,
    *,
    format: str = "auto",
    voxel_nm: Sequence[float] | None = None,
    key: str | None = None,
) -> tuple[SynapseTable, LoadReport]:
    """Read a CAVE / neuPrint / generic synapse table from CSV or HDF5.

    Positions become µm: ``xyz_um = xyz * voxel_nm / 1000`` per axis; the synapse position is the centre
    point when given, else the midpoint of the pre- and postsynaptic points, else whichever one exists.

    Args:
      path: ``.csv`` or ``.h5`` file (HDF5: a group of column datasets or a compound dataset).
      format: "auto" (from the id columns), "cave", "neuprint" or "generic".
      voxel_nm: size of one position unit in nm per axis (default: CAVE ``(4, 4, 40)``, neuPrint
        ``(8, 8, 8)``, generic ``(1000, 1000, 1000)``, i.e. already µm).
      key: group/dataset inside an HDF5 file.

    Returns:
      ``(table, report)``; the report lists removed rows (CAVE root id 0).

    Raises:
      ValidationError: unknown columns, a non-numeric id/position/feature, a NaN position, a negative
        feature or count — naming the file, column and row.
    """
    source = str(path)
    columns = read_columns(path, key=key)
    if format == "auto":
        format = detect_format(list(columns), source)
    if format not in _CONVENTIONS:
        raise V.ValidationError(source, "format", None, f"unknown format {format!r}; use {SYNAPSE_FORMATS}")
    conv = _CONVENTIONS[format]
    for col in (conv["pre"], conv["post"]):
        if col not in columns:
            raise V.ValidationError(source, col, None, f"missing id column for format {format!r}")
    notes = _Notes(source)
    if conv["int_ids"]:
        pre = to_int(source, conv["pre"], columns[conv["pre"]])
        post = to_int(source, conv["post"], columns[conv["post"]])
    else:
        pre, post = (_generic_ids(source, conv[k], columns[conv[k]]) for k in ("pre", "post"))
    n = len(pre)

    _, xyz = _point_column(columns, conv, conv["centre"], source)
    if xyz is None:
        _, xyz_pre = _point_column(columns, conv, conv["pre_pt"], source)
        _, xyz_post = _point_column(columns, conv, conv["post_pt"], source)
        if xyz_pre is not None and xyz_post is not None:
            xyz = 0.5 * (xyz_pre + xyz_post)
            notes.add("synapse position = midpoint of the pre- and postsynaptic points")
        else:
            xyz = xyz_pre if xyz_pre is not None else xyz_post
    if xyz is not None:
        scale = np.asarray(conv["voxel_nm"] if voxel_nm is None else voxel_nm, np.float64)
        V.check_shape(source, "voxel_nm", scale, (3,))
        xyz = xyz * scale / 1000.0
        V.check_finite(source, "position", xyz)

    features = {}
    for name in conv["features"]:
        if name in columns:
            value = to_float(source, name, columns[name])
            V.check_finite(source, name, value)
            V.check_nonnegative(source, name, value)
            features[name] = value.astype(np.float32)
    if conv["count"] is not None and conv["count"] in columns:
        count = to_int(source, conv["count"], columns[conv["count"]])
        V.check_nonnegative(source, conv["count"], count)
    else:
        count = np.ones((n,), np.int64)

    keep = np.ones((n,), bool)
    if format == "cave":
        # Root id 0 is CAVE's "no segment": the partner is unknown, so the synapse cannot be placed.
        unsegmented = (pre == 0) | (post == 0)
        if unsegmented.any():
            rows = np.flatnonzero(unsegmented)
            notes.add(f"removed {len(rows)} synapses with root id 0 (no segment) at rows {preview(rows)}",
                      "rows_with_root_id_0", rows.tolist())
            keep &= ~unsegmented
    zero = count == 0
    if zero.any():
        rows = np.flatnonzero(zero)
        notes.add(f"removed {len(rows)} rows with {conv['count']} 0 at rows {preview(rows)}",
                  "rows_with_zero_count", rows.tolist())
        keep &= ~zero
    sub = lambda a: None if a is None else a[keep]  # noqa: E731
    table = SynapseTable(
        pre_ids=pre[keep], post_ids=post[keep],
        xyz=None if xyz is None else xyz[keep].astype(np.float32),
        features={k: v[keep] for k, v in features.items()}, count=sub(count), format=format, source=source,
    )
    return table, notes.report()


def _generic_ids(source: str, field: str, values: np.ndarray) -> np.ndarray:
    """Integer ids when every cell is an integer, else stripped strings (empty is an error)."""
    values = np.asarray(values)
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    values = values.astype(str)
    if (values == "").any():
        raise V.ValidationError(source, field, V.first_row(values == ""), "empty neuron id")
    try:
        return values.astype(np.int64)
    except ValueError:
        return values


def connectome_from_synapse_table(
    table: SynapseTable,
    neuron_positions: tuple[Sequence[Any], np.ndarray] | None = None,
    *,
    cell_type: tuple[Sequence[Any], Sequence[str]] | None = None,
) -> tuple[Connectome, LoadReport]:
    """Build a :class:`Connectome` (one row per synapse) from a synapse table.

    Rows standing for several synapses (``count > 1``, e.g. neuPrint connection tables) are repeated
    ``count`` times, so ``weighted()`` gives synapse counts. Neuron positions come from
    `neuron_positions` where given; any other neuron gets the mean of the positions of all its synapses
    (as pre or post), ``xyz_i = mean_{e: pre[e]=i or post[e]=i} syn_xyz[e]``.

    Args:
      table: from :func:`load_synapse_table`.
      neuron_positions: ``(ids [N0], xyz [N0, 3] µm)``; these neurons are all included, with or without
        synapses.
      cell_type: optional ``(ids [M], types [M])``; neurons not listed get "".

    Returns:
      ``(connectome, report)``; the report counts the neurons placed at their synapse mean.

    Raises:
      ValidationError: a neuron without a given position when the table has no synapse positions,
        or a bad `neuron_positions` table.
    """
    source = table.source
    notes = _Notes(source)
    syn_ids = np.concatenate([_as_id_array(table.pre_ids), _as_id_array(table.post_ids)])
    if neuron_positions is not None:
        given_ids = _as_id_array(neuron_positions[0])
        given_xyz = np.asarray(neuron_positions[1], np.float64)
        V.check_unique(source, "neuron_positions.ids", given_ids)
        V.check_shape(source, "neuron_positions.xyz", given_xyz, (len(given_ids), 3))
        V.check_finite(source, "neuron_positions.xyz", given_xyz)
        if len(given_ids) and len(syn_ids) and given_ids.dtype.kind != syn_ids.dtype.kind:
            raise V.ValidationError(source, "neuron_positions.ids", 0,
                                    f"id type {given_ids.dtype} differs from synapse id type {syn_ids.dtype}")
        ids = np.unique(np.concatenate([given_ids, syn_ids]))
    else:
        given_ids, given_xyz = syn_ids[:0], np.zeros((0, 3))
        ids = np.unique(syn_ids)
    n = len(ids)
    rep = np.repeat(np.arange(table.n_rows), table.count)
    pre = index_ids(ids, _as_id_array(table.pre_ids), source=source, field="pre")[rep]
    post = index_ids(ids, _as_id_array(table.post_ids), source=source, field="post")[rep]
    xyz = np.zeros((n, 3), np.float64)
    has = np.zeros((n,), bool)
    gi = index_ids(ids, given_ids, source=source, field="neuron_positions.ids")
    xyz[gi], has[gi] = given_xyz, True
    missing = np.flatnonzero(~has)
    if missing.size:
        if table.xyz is None:
            raise V.ValidationError(
                source, "position", None,
                f"neuron {V.show(ids[missing[0]])} has no given position and the table has no synapse positions",
            )
        syn_xyz = table.xyz[rep].astype(np.float64)
        ends = np.concatenate([pre, post])
        both = np.concatenate([syn_xyz, syn_xyz])
        sums = np.stack([np.bincount(ends, both[:, a], minlength=n) for a in range(3)], axis=1)
        counts = np.bincount(ends, minlength=n)
        xyz[missing] = sums[missing] / counts[missing, None]
        notes.add(f"{len(missing)} of {n} neurons placed at the mean of their synapse positions",
                  "neurons_at_synapse_mean", ids[missing].tolist())
    types = None
    if cell_type is not None:
        type_ids, type_names = _as_id_array(cell_type[0]), np.asarray(cell_type[1], dtype=str)
        V.check_shape(source, "cell_type", type_names, (len(type_ids),))
        V.check_unique(source, "cell_type.ids", type_ids)
        row = index_ids(type_ids, ids, source=source, field="cell_type", missing_ok=True)
        types = np.where(row >= 0, type_names[np.maximum(row, 0)] if len(type_names) else "", "")
    connectome = Connectome(
        ids=ids, xyz=xyz, cell_type=types, pre=pre, post=post,
        syn_xyz=None if table.xyz is None else table.xyz[rep],
        strength=(np.stack([table.features[k][rep] for k in table.features], axis=1)
                  if table.features else None),
        strength_names=tuple(table.features), source=source,
    )
    return connectome, notes.report()
