r"""Receptive-field grid and the static index tables that turn space into gathers (DESIGN.md, §4.2, §4.4).

Locations ``µ = 0..L-1`` are the centres of a cubic lattice of stride ``s`` laid over the bounding box
of the tissue; each owns a ball ("sphere") of diameter ``d > s`` (default ``s = d / 2``, so neighbouring
spheres overlap and every neuron sits in several). For columnar tissue (``GridSpec.shape = "column"``)
each owns a cylinder of diameter ``d`` and height ``h`` along an axis instead, on a lattice of stride
``s`` across and ``h / 2`` along it; the tables are built in coordinates scaled along that axis by
``r / (h / 2)``, where a column has radius and half-height ``r``, and ``member_offset`` is normalised the
same way (inside the unit cylinder). Spheres holding no neuron are dropped. A scipy KD-tree
answers the ball queries ``|x_i - µ| <= d / 2`` once, on the host, in parallel (``workers=-1``).

The result is a :class:`SpatialTables` of static, padded numpy arrays:

* ``members[L, K]`` — neurons in each sphere, sorted by distance to the centre then by id, padded with
  index 0 and masked by ``member_mask``; ``member_offset[L, K, 3] = (x_i - µ) / r`` (r = d / 2);
* ``candidates[N, C]`` — the locations holding each neuron (ascending), with ``candidate_slot[N, C]`` its
  slot in ``members`` there, masked by ``candidate_mask``; ``member_candidate[L, K]`` is the inverse
  (which candidate column of the member points back at ``(l, k)``);
* ``synapses[L, Ks]`` — synapses whose position lies in the sphere (or, without positions, whose pre-
  and post-synaptic neurons both do), sorted by id, masked by ``synapse_mask``.

Invariants (checked by the tests): ``members[candidates[i, c], candidate_slot[i, c]] == i`` and
``candidates[members[l, k], member_candidate[l, k]] == l`` for every valid entry, and each valid
``(l, k)`` appears exactly once among the valid candidates. Padding indices are 0 (always in bounds, so a
gather never reads outside the array); masks must be applied. Locations may be padded to a multiple of
the device count (``GridSpec.location_multiple``) so the tables shard evenly along ``L``: padded
locations have ``location_mask = False``, centre 0 and all-False masks.

Everything downstream is a pure gather: :func:`gather_members` (``[N, ...] -> [L, K, ...]``),
:func:`scatter_to_neurons` (``[L, K, ...] -> [N, ...]`` through the candidates) and
:func:`candidate_to_member` (``[N, C, ...] -> [L, K, ...]``), all jit/vmap friendly and shardable along L.

Every neuron inside the lattice's bounding box lies in at least one sphere when ``d >= √3 s`` (the
farthest point of a lattice cell is ``√3 s / 2`` from its nearest corner); the default ``s = d / 2``
satisfies this. A placed neuron in no sphere is an error, never silently dropped.

Neurons whose position is unknown ("unplaced": an all-NaN row of ``xyz``, see
:attr:`mesojax.data.Connectome.placed`) keep their row ``i`` in every ``[N, ...]`` table but are in no
sphere: ``candidate_mask[i]`` is all False (``candidates``/``candidate_slot`` 0-padded), they never
appear in ``members``, and :func:`scatter_to_neurons` gives them 0. Detect them downstream with
``~tables.candidate_mask.any(-1)``. A partly-NaN or infinite position is still an error.

Example:
    >>> import numpy as np
    >>> from mesojax import spatial
    >>> xyz = np.random.default_rng(0).uniform(0, 100, (500, 3)).astype(np.float32)
    >>> grid = spatial.build_grid(xyz, spatial.GridSpec(diameter_um=40.0))
    >>> tables = spatial.build_tables(xyz, grid)
    >>> tables.members.shape[0] == grid.n_locations, bool(tables.candidate_mask.any(1).all())
    (True, True)
    >>> x = np.arange(500.0)
    >>> bool(np.allclose(spatial.scatter_to_neurons(spatial.gather_members(x, tables), None, tables), x))
    True
"""

from __future__ import annotations

import itertools
import os
import pathlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial import cKDTree

from mesojax.data import tables
from mesojax.data import validation as V
from mesojax.data.connectome import check_positions

# A lattice larger than this is almost surely a unit mistake (nm vs µm); refuse rather than exhaust memory.
_MAX_LATTICE_POINTS = 20_000_000


class GridSpec(NamedTuple):
    """How to lay the receptive-field grid over the tissue.

    Attributes:
      diameter_um: sphere diameter ``d`` in µm.
      stride_um: lattice stride ``s`` in µm (``None``: ``d / 2``); must satisfy ``s < d``.
      origin: a lattice point ``(x, y, z)`` in µm (``None``: centre the lattice on the bounding box).
      location_multiple: pad ``L`` to a multiple of this (e.g. the device count, to shard along L).
      width_multiple: round the table widths ``K``, ``C`` and ``Ks`` up to a multiple of this, so data
        sets of similar size share shapes and jit does not recompile.
      shape: ``"sphere"`` (a ball of diameter ``d``) or ``"column"`` (a cylinder of diameter ``d`` across
        and height ``height_um`` along ``axis``: a cortical or optic-lobe column in one receptive field).
      axis: the column axis (0 = x, 1 = y, 2 = z).
      height_um: column height (``None``: the tissue's whole extent along `axis`, one layer of columns).
      height_stride_um: lattice stride along `axis` (``None``: ``height_um / 2``, overlapping like spheres).
    """

    diameter_um: float
    stride_um: float | None = None
    origin: tuple[float, float, float] | None = None
    location_multiple: int = 1
    width_multiple: int = 1
    shape: str = "sphere"
    axis: int = 2
    height_um: float | None = None
    height_stride_um: float | None = None

    @property
    def stride(self) -> float:
        return float(self.diameter_um) / 2.0 if self.stride_um is None else float(self.stride_um)

    @property
    def radius(self) -> float:
        return float(self.diameter_um) / 2.0


class Grid(NamedTuple):
    """The non-empty lattice points of a :class:`GridSpec` over a tissue.

    Attributes:
      centers: ``[L, 3]`` float32 sphere centres ``µ`` in µm (real locations only, lattice order).
      lattice: ``[L, 3]`` int32 integer lattice coordinates (``µ = start + lattice * stride``).
      radius: sphere radius ``d / 2`` in µm.
      stride: lattice stride ``s`` in µm.
      spec: the :class:`GridSpec` it was built from.
      scale: ``[3]`` per-axis factors that map a receptive field onto a unit-aspect one: 1 for spheres;
        for columns, ``radius / (height / 2)`` along the axis (so a column becomes a cylinder of radius
        and half-height ``radius``).
    """

    centers: np.ndarray
    lattice: np.ndarray
    radius: float
    stride: float
    spec: GridSpec
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @property
    def n_locations(self) -> int:
        return int(self.centers.shape[0])


class SpatialTables(NamedTuple):
    """Static padded index tables linking neurons, locations and synapses (all numpy; a pytree).

    Shapes use ``L`` (locations, padded to ``GridSpec.location_multiple``), ``K`` (max members per
    location), ``N`` (neurons), ``C`` (max locations per neuron), ``Ks`` (max synapses per location).
    Index padding is 0; always apply the matching mask.

    Attributes:
      centers: ``[L, 3]`` float32 sphere centres (0 for padded locations).
      location_mask: ``[L]`` bool, False for padded locations.
      members: ``[L, K]`` int32 neuron index of each member, by distance to the centre then id.
      member_mask: ``[L, K]`` bool.
      member_offset: ``[L, K, 3]`` float32 ``(x_i - µ) / r``, inside the unit ball (0 where masked).
      member_candidate: ``[L, K]`` int32 column ``c`` with ``candidates[members[l, k], c] == l``.
      candidates: ``[N, C]`` int32 locations holding each neuron, ascending.
      candidate_slot: ``[N, C]`` int32 slot ``k`` of the neuron in ``members[candidates[i, c]]``.
      candidate_mask: ``[N, C]`` bool.
      synapses: ``[L, Ks]`` int32 synapse rows in each sphere, ascending (``Ks = 0`` if none given).
      synapse_mask: ``[L, Ks]`` bool.
    """

    centers: np.ndarray
    location_mask: np.ndarray
    members: np.ndarray
    member_mask: np.ndarray
    member_offset: np.ndarray
    member_candidate: np.ndarray
    candidates: np.ndarray
    candidate_slot: np.ndarray
    candidate_mask: np.ndarray
    synapses: np.ndarray
    synapse_mask: np.ndarray

    @property
    def n_locations(self) -> int:
        """Number of real (unpadded) locations."""
        return int(np.asarray(self.location_mask).sum())

    def summary(self) -> str:
        """One line with the table shapes and fill."""
        lp, k = self.members.shape
        n, c = self.candidates.shape
        fill = float(np.asarray(self.member_mask).mean()) if self.member_mask.size else 0.0
        return (
            f"SpatialTables: L={self.n_locations} (padded {lp}), K={k} (fill {fill:.0%}), N={n}, C={c}, "
            f"Ks={self.synapses.shape[1]}, mean candidates/neuron "
            f"{float(np.asarray(self.candidate_mask).sum(1).mean()):.2f}"
        )


# ----------------------------------------------------------------------------------------------- grid
def _as_points(source: str, field: str, xyz: Any) -> np.ndarray:
    V.check_numeric(source, field, xyz)
    xyz = np.asarray(xyz)
    V.check_shape(source, field, xyz, (None, 3))
    return xyz


def _check_points(source: str, field: str, xyz: Any) -> np.ndarray:
    xyz = _as_points(source, field, xyz)
    V.check_finite(source, field, xyz)
    return xyz.astype(np.float32, copy=False)


def _check_neuron_points(source: str, field: str, xyz: Any) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`_check_points` but all-NaN rows (unplaced neurons) are allowed.

    Returns:
      ``(xyz [N, 3] float32, placed [N] bool)``.
    """
    xyz = _as_points(source, field, xyz)
    placed = check_positions(source, field, xyz)
    return xyz.astype(np.float32, copy=False), placed


def _check_spec(spec: GridSpec) -> None:
    d, s = float(spec.diameter_um), spec.stride
    if not (np.isfinite(d) and d > 0):
        raise V.ValidationError("GridSpec", "diameter_um", None, f"must be a positive number, got {d}")
    if not (np.isfinite(s) and 0 < s < d):
        raise V.ValidationError(
            "GridSpec", "stride_um", None, f"must satisfy 0 < stride < diameter={d}, got {s}"
        )
    for name in ("location_multiple", "width_multiple"):
        value = getattr(spec, name)
        if int(value) != value or value < 1:
            raise V.ValidationError("GridSpec", name, None, f"must be a positive integer, got {value}")
    if spec.shape not in ("sphere", "column"):
        raise V.ValidationError("GridSpec", "shape", None, f"{spec.shape!r} is not 'sphere' or 'column'")
    if spec.shape == "column":
        if spec.axis not in (0, 1, 2):
            raise V.ValidationError("GridSpec", "axis", None, f"must be 0, 1 or 2 (x, y, z), got {spec.axis}")
        if s > d / np.sqrt(2.0):
            raise V.ValidationError("GridSpec", "stride_um", None, f"{s} leaves gaps between columns of "
                                    f"diameter {d}: use stride <= diameter / sqrt(2) = {d / np.sqrt(2.0):.4g}")
        h, hs = spec.height_um, spec.height_stride_um
        if h is not None and not (np.isfinite(h) and h > 0):
            raise V.ValidationError("GridSpec", "height_um", None, f"must be a positive number, got {h}")
        if hs is not None and (h is None or not (0 < hs <= h)):
            raise V.ValidationError("GridSpec", "height_stride_um", None,
                                    f"must satisfy 0 < height_stride <= height = {h}, got {hs}")


def _column_metric(spec: GridSpec, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(scale [3], stride [3] in scaled units, single_layer)`` of a grid over the box ``[lo, hi]``.

    In scaled coordinates ``x · scale`` a column is a cylinder of radius and half-height ``r``; a sphere
    stays a ball of radius ``r``. ``single_layer``: one row of columns spanning the whole extent.
    """
    r, s = spec.radius, spec.stride
    scale, stride = np.ones(3), np.full(3, s, np.float64)
    if spec.shape != "column":
        return scale, stride, False
    a = spec.axis
    single = spec.height_um is None
    height = float(hi[a] - lo[a]) * (1 + 1e-6) + 1e-3 if single else float(spec.height_um)
    scale[a] = r / (height / 2.0)
    hs = height if single else (spec.height_stride_um or height / 2.0)
    stride[a] = hs * scale[a]
    return scale, stride, single


def _field_pairs(points: np.ndarray, centers: np.ndarray, radius: float, column_axis: int | None, *,
                 sort_by_distance: bool, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_ball_pairs` in scaled coordinates, for spheres (``column_axis`` None) or columns.

    A column (radius and half-height ``radius`` after scaling) lies inside the ball of radius
    ``radius·√2``: query that ball, then keep the points within ``radius`` across and along the axis.
    """
    if column_axis is None:
        return _ball_pairs(points, centers, radius, sort_by_distance=sort_by_distance, chunk=chunk)
    loc, idx = _ball_pairs(points, centers, radius * np.sqrt(2.0) * (1 + 1e-9), sort_by_distance=sort_by_distance,
                           chunk=chunk)
    d = points[idx].astype(np.float64) - centers[loc].astype(np.float64)
    across = np.delete(d, column_axis, axis=1)
    tol = radius * 1e-6
    keep = ((across ** 2).sum(1) <= radius ** 2 + tol) & (np.abs(d[:, column_axis]) <= radius + tol)
    return loc[keep], idx[keep]


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def build_grid(xyz: np.ndarray, spec: GridSpec, *, centers: np.ndarray | None = None,
               source: str = "build_grid") -> Grid:
    """Lattice of sphere centres over the bounding box of the placed `xyz`, keeping spheres that hold one.

    With `centers` (``[L, 3]`` µm, e.g. the axes of anatomical columns) those points are the centres
    instead of a lattice (``stride`` and ``origin`` unused); the ones whose field holds no neuron are
    dropped, and ``Grid.lattice`` holds each kept centre's row in `centers` (then 0, 0).

    Per axis the lattice is ``µ = start + k·s``, ``k = 0..n-1``, with ``n = ⌈(max - min) / s⌉ + 1``
    and ``start`` chosen to centre it on the box (or, with ``spec.origin``, the integer ``k`` range
    covering the box). A sphere is kept iff some neuron has ``|x_i - µ| <= d / 2``. Unplaced neurons
    (all-NaN rows) are ignored.

    Args:
      xyz: ``[N, 3]`` neuron positions in µm (all-NaN row = position unknown).
      spec: the grid parameters.
      source: named in errors.

    Returns:
      A :class:`Grid` with ``L`` non-empty locations in lattice (x-major) order.

    Example:
        >>> g = build_grid(np.array([[0, 0, 0], [30, 0, 0]], np.float32), GridSpec(20.0))
        >>> g.n_locations, g.radius, g.stride
        (4, 10.0, 10.0)
    """
    _check_spec(spec)
    xyz, placed = _check_neuron_points(source, "xyz", xyz)
    if xyz.shape[0] == 0:
        raise V.ValidationError(source, "xyz", None, "no neurons: cannot lay a grid over an empty tissue")
    if not placed.any():
        raise V.ValidationError(
            source, "xyz", None,
            f"no neurons with a known position (all {xyz.shape[0]} rows are NaN): cannot lay a grid",
        )
    xyz = xyz[placed]
    lo, hi = xyz.min(0).astype(np.float64), xyz.max(0).astype(np.float64)
    scale, s, single = _column_metric(spec, lo, hi)
    xyz = (xyz.astype(np.float64) * scale).astype(np.float32)
    lo, hi = lo * scale, hi * scale
    if centers is not None:  # the user's own centres (e.g. a column lattice): no lattice is laid
        given = np.asarray(centers, np.float64)
        V.check_shape(source, "grid centers", given, (None, 3))
        V.check_finite(source, "grid centers", given)
        if len(given) == 0:
            raise V.ValidationError(source, "grid centers", None, "no centres given")
        lattice = np.stack([np.arange(len(given)), np.zeros(len(given), np.int64), np.zeros(len(given), np.int64)], 1)
        scaled_centers = (given * scale).astype(np.float32).astype(np.float64)
        return _keep_occupied(xyz, scaled_centers, lattice, scale, spec)
    if spec.origin is None:
        n = np.ceil((hi - lo) / s).astype(np.int64) + 1
        if single:
            n[spec.axis] = 1
        start = (lo + hi) / 2.0 - (n - 1) * s / 2.0
        k_lo = np.zeros(3, np.int64)
    else:
        origin = np.asarray(spec.origin, np.float64)
        V.check_shape("GridSpec", "origin", origin, (3,))
        V.check_finite("GridSpec", "origin", origin)
        origin = origin * scale
        k_lo = np.floor((lo - origin) / s).astype(np.int64)
        n = np.ceil((hi - origin) / s).astype(np.int64) - k_lo + 1
        start = origin
    if np.prod(n.astype(np.float64)) > _MAX_LATTICE_POINTS:
        raise V.ValidationError(
            "GridSpec", "stride_um", None,
            f"stride {s} µm gives a {n.tolist()} lattice (> {_MAX_LATTICE_POINTS} points); "
            "are positions in µm?",
        )
    axes = [np.arange(k_lo[a], k_lo[a] + n[a]) for a in range(3)]
    lattice = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    scaled_centers = (start + lattice * s).astype(np.float32).astype(np.float64)  # the float32 centres used below
    return _keep_occupied(xyz, scaled_centers, lattice, scale, spec)


def _keep_occupied(xyz: np.ndarray, scaled_centers: np.ndarray, lattice: np.ndarray, scale: np.ndarray,
                   spec: GridSpec) -> Grid:
    """The :class:`Grid` of the centres (in scaled coordinates, like `xyz`) whose field holds a neuron."""
    r = spec.radius
    if spec.shape == "column":
        loc, _ = _field_pairs(xyz, scaled_centers, r, spec.axis, sort_by_distance=False, chunk=4096)
        keep = np.bincount(loc, minlength=len(lattice)) > 0
    else:
        keep = cKDTree(xyz.astype(np.float64)).query_ball_point(
            scaled_centers, r, return_length=True, workers=-1) > 0
    centers = (scaled_centers / scale).astype(np.float32)
    return Grid(
        centers=centers[keep], lattice=lattice[keep].astype(np.int32), radius=r, stride=spec.stride, spec=spec,
        scale=tuple(float(x) for x in scale),
    )


def load_centers(path: str | os.PathLike) -> np.ndarray:
    """User-given receptive-field centres ``[L, 3]`` µm from ``.npy`` or a CSV with ``x, y, z`` columns.

    Raises:
      ValidationError: naming the file, the field and the row of a missing column or a bad value.
    """
    src, suffix = str(path), pathlib.Path(path).suffix.lower()
    if suffix == ".npy":
        with V.file_errors(src, "centers", what="centres file"):
            points = np.load(path)
    elif suffix == ".csv":
        cols = tables.read_csv_columns(path)
        missing = [c for c in ("x", "y", "z") if c not in cols]
        if missing:
            raise V.ValidationError(src, missing[0], None, f"missing column (have {sorted(cols)})")
        points = np.stack([tables.to_float(src, c, cols[c]) for c in ("x", "y", "z")], 1)
    else:
        raise V.ValidationError(src, "centers", None, f"unsupported file type {suffix!r} (use .npy or .csv)")
    V.check_numeric(src, "centers", points)
    V.check_shape(src, "centers", points, (None, 3))
    V.check_finite(src, "centers", points)
    return np.asarray(points, np.float32)


# ----------------------------------------------------------------------------------------------- tables
def _ball_pairs(
    points: np.ndarray, centers: np.ndarray, radius: float, *, sort_by_distance: bool, chunk: int
) -> tuple[np.ndarray, np.ndarray]:
    """All ``(location, point)`` pairs with ``|p - µ| <= radius``, grouped by location.

    Within a location points are ordered by distance then index (``sort_by_distance``) or by index.
    Centres are queried in chunks so the Python lists scipy returns never hold more than one chunk.
    """
    # An unbalanced, non-compacted tree builds ~2x faster on 10M points and queries about as fast.
    tree = cKDTree(points.astype(np.float64), balanced_tree=False, compact_nodes=False)
    centers64 = centers.astype(np.float64)
    locs, idxs = [], []
    for c0 in range(0, len(centers), chunk):
        res = tree.query_ball_point(centers64[c0 : c0 + chunk], radius, workers=-1, return_sorted=True)
        counts = np.fromiter(map(len, res), np.int64, len(res))
        idx = np.fromiter(itertools.chain.from_iterable(res), np.int32, int(counts.sum()))
        loc = np.repeat(np.arange(c0, c0 + len(res), dtype=np.int32), counts)
        if sort_by_distance and len(idx):
            d2 = ((points[idx].astype(np.float64) - centers64[loc]) ** 2).sum(1)
            order = np.lexsort((idx, d2, loc))
            idx, loc = idx[order], loc[order]
        locs.append(loc)
        idxs.append(idx)
    return np.concatenate(locs), np.concatenate(idxs)


def _stable_order(keys: np.ndarray, n_keys: int) -> np.ndarray:
    """Stable argsort of small non-negative integer keys (radix sort when they fit 16 bits)."""
    if n_keys <= np.iinfo(np.uint16).max + 1:
        return np.argsort(keys.astype(np.uint16), kind="stable")
    return np.argsort(keys, kind="stable")


def _table_width(
    counts: np.ndarray, limit: int | None, multiple: int, *, source: str, field: str, what: str
) -> int:
    width = int(counts.max()) if counts.size else 0
    if limit is not None:
        if width > limit:
            row = int(np.argmax(counts))
            raise V.ValidationError(
                source, field, row, f"{width} {what} exceed the requested maximum {limit}"
            )
        width = int(limit)
    return _round_up(max(width, 1), multiple) if width or limit else 0


def _fill_table(
    groups: np.ndarray, values: np.ndarray, n_rows: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scatter ``values`` (already grouped by ``groups``, in order) into a padded ``[n_rows, width]`` table.

    Returns ``(table, mask, slot)`` with ``slot`` the column each value landed in.
    """
    counts = np.bincount(groups, minlength=n_rows)
    starts = np.cumsum(counts) - counts
    # Flat position = row * width + (i - start[row]); the per-row shift is computed once per row.
    flat = np.arange(len(groups), dtype=np.int64)
    flat += np.repeat(np.arange(n_rows, dtype=np.int64) * width - starts, counts)
    table = np.zeros((n_rows, width), np.int32)
    mask = np.zeros((n_rows, width), bool)
    table.ravel()[flat] = values
    mask.ravel()[flat] = True
    slot = (flat % max(width, 1)).astype(np.int32)
    return table, mask, slot


def _synapses_by_endpoints(
    pre: np.ndarray, post: np.ndarray, candidates: np.ndarray, candidate_mask: np.ndarray, chunk: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(location, synapse)`` pairs where both endpoints are members, grouped by location."""
    locs, syns = [], []
    for e0 in range(0, len(pre), chunk):
        p, q = pre[e0 : e0 + chunk], post[e0 : e0 + chunk]
        cp, mp = candidates[p], candidate_mask[p]
        cq, mq = candidates[q], candidate_mask[q]
        both = mp & ((cp[:, :, None] == cq[:, None, :]) & mq[:, None, :]).any(-1)
        e_local, col = np.nonzero(both)
        locs.append(cp[e_local, col])
        syns.append((e_local + e0).astype(np.int32))
    loc = np.concatenate(locs) if locs else np.zeros(0, np.int32)
    syn = np.concatenate(syns) if syns else np.zeros(0, np.int32)
    order = _stable_order(loc, int(candidates.max(initial=0)) + 1)
    return loc[order], syn[order]


def build_tables(
    xyz: np.ndarray,
    grid: Grid,
    *,
    syn_xyz: np.ndarray | None = None,
    pre: np.ndarray | None = None,
    post: np.ndarray | None = None,
    max_members: int | None = None,
    max_candidates: int | None = None,
    max_synapses: int | None = None,
    chunk: int = 256,
    source: str = "build_tables",
) -> SpatialTables:
    """Static padded index tables for `grid` over the neurons at `xyz` (and optionally synapses).

    ``members[l] = {i : |x_i - µ_l| <= r}`` sorted by distance then id; ``candidates`` is its inverse.
    Synapses go to a sphere by position (``syn_xyz``) or, without positions, when both ``pre`` and
    ``post`` neurons are members there.

    Unplaced neurons (all-NaN rows of ``xyz``) are members of no sphere and have no candidates
    (``candidate_mask[i]`` all False, ``candidates[i]`` and ``candidate_slot[i]`` 0); the tables of the
    placed neurons are exactly those of ``xyz[placed]`` with neuron indices mapped back to rows of
    ``xyz``. Without ``syn_xyz``, a synapse touching an unplaced neuron is therefore in no sphere; with
    ``syn_xyz`` a synapse goes by its own position whatever its endpoints.

    Args:
      xyz: ``[N, 3]`` neuron positions in µm (all-NaN row = position unknown).
      grid: from :func:`build_grid` (normally on the same ``xyz``).
      syn_xyz: ``[E, 3]`` synapse positions in µm, or None.
      pre, post: ``[E]`` endpoint neuron indices; used when ``syn_xyz`` is None.
      max_members, max_candidates, max_synapses: fixed widths ``K``, ``C``, ``Ks`` (static shapes
        across data sets); exceeding one is an error. ``None``: the data's maximum.
      chunk: locations per KD-tree query batch (bounds the memory of scipy's Python lists); also
        ``chunk * 4096`` synapses per endpoint batch.
      source: named in errors.

    Returns:
      :class:`SpatialTables` with ``L`` padded to ``grid.spec.location_multiple``.

    Raises:
      ValidationError: a placed neuron lies in no sphere (gap in coverage, or a neuron outside the grid),
        a position is partly NaN or infinite, or a width exceeds its ``max_*``.

    Example:
        >>> xyz = np.array([[0, 0, 0], [5, 0, 0], [30, 0, 0]], np.float32)
        >>> t = build_tables(xyz, build_grid(xyz, GridSpec(20.0)), pre=np.array([0]), post=np.array([1]))
        >>> t.members[t.member_mask].tolist(), t.synapses[t.synapse_mask].tolist()
        ([0, 1, 1, 0, 2, 2], [0, 0])
    """
    xyz, placed = _check_neuron_points(source, "xyz", xyz)
    all_placed = bool(placed.all())  # the common case: no copies
    if not all_placed:
        xyz = np.where(placed[:, None], xyz, np.float32(0))  # NaN-free; unplaced rows are never members
    n = xyz.shape[0]
    spec = grid.spec
    l_real = grid.n_locations
    l_pad = _round_up(max(l_real, 1), spec.location_multiple)
    centers = grid.centers.astype(np.float32)
    # Work in scaled coordinates, where every receptive field has radius (and, for columns, half-height) r.
    scale = np.asarray(grid.scale, np.float64)
    column_axis = spec.axis if spec.shape == "column" else None
    unit = bool((scale == 1.0).all())
    xyz_s = xyz if unit else (xyz * scale).astype(np.float32)
    centers_s = centers if unit else (centers * scale).astype(np.float32)

    # Members, grouped by location, by distance then id: query the placed neurons only and map their
    # indices back to rows of xyz (monotone, so the id tie-break is unchanged).
    placed_rows = None if all_placed else np.flatnonzero(placed).astype(np.int32)
    points = xyz_s if all_placed else xyz_s[placed_rows]
    loc, nid = _field_pairs(points, centers_s, grid.radius, column_axis, sort_by_distance=True, chunk=chunk)
    if not all_placed:
        nid = placed_rows[nid]
    m_counts = np.bincount(loc, minlength=l_pad)
    k = _table_width(m_counts, max_members, spec.width_multiple, source=source, field="members",
                     what="neurons in one sphere")
    members, member_mask, slot = _fill_table(loc, nid, l_pad, k)

    # Candidates: the same pairs regrouped by neuron; a stable sort keeps locations ascending.
    c_counts = np.bincount(nid, minlength=n)
    uncovered = placed & (c_counts == 0)
    if uncovered.any():
        row = int(np.flatnonzero(uncovered)[0])
        raise V.ValidationError(
            source, "xyz", row,
            f"neuron at {xyz[row].tolist()} lies in no {spec.shape} of the grid (diameter {spec.diameter_um}, "
            f"stride {grid.stride}); use diameter >= sqrt(3) * stride (columns: sqrt(2) * stride, and "
            "height_stride <= height) and a grid built on these positions",
        )
    c = _table_width(c_counts, max_candidates, spec.width_multiple, source=source, field="candidates",
                     what="spheres holding one neuron")
    by_neuron = np.argsort(nid, kind="stable")
    candidates, candidate_mask, cand_col = _fill_table(nid[by_neuron], loc[by_neuron], n, c)
    candidate_slot = np.zeros((n, c), np.int32)
    candidate_slot[nid[by_neuron], cand_col] = slot[by_neuron]
    member_candidate = np.zeros((l_pad, k), np.int32)
    member_candidate[loc[by_neuron], slot[by_neuron]] = cand_col

    centers_pad = np.zeros((l_pad, 3), np.float32)
    centers_pad[:l_real] = centers
    centers_s_pad = np.zeros((l_pad, 3), np.float32)
    centers_s_pad[:l_real] = centers_s
    member_offset = np.where(
        member_mask[..., None], (xyz_s[members] - centers_s_pad[:, None, :]) / np.float32(grid.radius), 0.0
    ).astype(np.float32)
    location_mask = np.arange(l_pad) < l_real

    # Synapses.
    if syn_xyz is not None:
        syn_xyz = _check_points(source, "syn_xyz", syn_xyz)
        syn_s = syn_xyz if unit else (syn_xyz * scale).astype(np.float32)
        s_loc, s_id = _field_pairs(syn_s, centers_s, grid.radius, column_axis, sort_by_distance=False, chunk=chunk)
    elif pre is not None or post is not None:
        if pre is None or post is None:
            raise V.ValidationError(source, "pre" if pre is None else "post", None,
                                    "pre and post must be given together")
        pre, post = V.check_edges(source, pre, post, n)
        s_loc, s_id = _synapses_by_endpoints(pre, post, candidates, candidate_mask, chunk * 4096)
    else:
        s_loc, s_id = np.zeros(0, np.int32), np.zeros(0, np.int32)
    s_counts = np.bincount(s_loc, minlength=l_pad)
    ks = _table_width(s_counts, max_synapses, spec.width_multiple, source=source, field="synapses",
                      what="synapses in one sphere")
    synapses, synapse_mask, _ = _fill_table(s_loc, s_id, l_pad, ks)

    return SpatialTables(
        centers=centers_pad, location_mask=location_mask, members=members, member_mask=member_mask,
        member_offset=member_offset, member_candidate=member_candidate, candidates=candidates,
        candidate_slot=candidate_slot, candidate_mask=candidate_mask, synapses=synapses,
        synapse_mask=synapse_mask,
    )


class StimulusTables(NamedTuple):
    """Which stimulus channels each receptive field reads (retinotopic stimulus; numpy, a pytree).

    Attributes:
      channels: ``[L, Sl]`` int32 stimulus channels inside each location's field, nearest to the centre
        first (so slot 0 is the field's own pixel on a column lattice); 0 where masked.
      mask: ``[L, Sl]`` bool.
    """

    channels: np.ndarray
    mask: np.ndarray


def stimulus_tables(positions: np.ndarray, grid: Grid, *, max_channels: int | None = None, chunk: int = 256,
                    source: str = "stimulus_tables") -> StimulusTables:
    """The stimulus channels inside every receptive field (the same sphere / column test as neurons).

    A shared filter then reads, at every location, the few channels of its own field in a fixed order
    (nearest first) instead of the whole stimulus vector, so one filter can serve every column of a
    retinotopic circuit. Locations are padded like :func:`build_tables`' (padded rows hold no channel).

    Args:
      positions: ``[S, 3]`` µm position of each stimulus channel.
      grid: from :func:`build_grid`.
      max_channels: fixed width ``Sl`` (an error when a field holds more); None: the data's maximum.
      chunk: locations per KD-tree query batch.
      source: named in errors.

    Returns:
      :class:`StimulusTables` with ``Sl ≥ 1`` columns.

    Raises:
      ValidationError: non-finite positions, no channel inside any field, or more than `max_channels`.

    Example:
        >>> g = build_grid(np.array([[0, 0, 0], [30, 0, 0]], np.float32), GridSpec(20.0))
        >>> st = stimulus_tables(np.array([[30, 0, 0], [0, 0, 0]], np.float32), g)
        >>> st.channels[st.mask].tolist()
        [1, 0]
    """
    points = _check_points(source, "stimulus_positions", positions)
    spec = grid.spec
    l_pad = _round_up(max(grid.n_locations, 1), spec.location_multiple)
    scale = np.asarray(grid.scale, np.float64)
    column_axis = spec.axis if spec.shape == "column" else None
    loc, ch = _field_pairs((points * scale).astype(np.float32), (grid.centers * scale).astype(np.float32),
                           grid.radius, column_axis, sort_by_distance=True, chunk=chunk)
    if loc.size == 0:
        raise V.ValidationError(source, "stimulus_positions", None,
                                f"no stimulus channel lies inside any {spec.shape} of the grid: are the "
                                "positions in the neurons' coordinates (µm)?")
    width = _table_width(np.bincount(loc, minlength=l_pad), max_channels, 1, source=source,
                         field="stimulus_positions", what="stimulus channels in one field")
    channels, mask, _ = _fill_table(loc, ch, l_pad, width)
    return StimulusTables(channels, mask)


def connectome_tables(connectome: Any, spec: GridSpec, **kwargs: Any) -> tuple[Grid, SpatialTables]:
    """Grid and tables of a :class:`mesojax.data.Connectome` (synapses by position when it has them).

    Example:
        >>> from mesojax.data import Connectome
        >>> c = Connectome(ids=[0, 1], xyz=[[0, 0, 0], [5, 0, 0]], cell_type=None, pre=[0], post=[1])
        >>> grid, t = connectome_tables(c, GridSpec(20.0))
        >>> int(t.synapse_mask.sum()) >= 1
        True
    """
    grid = build_grid(connectome.xyz, spec, source=connectome.source)
    if connectome.syn_xyz is not None:
        kwargs.setdefault("syn_xyz", connectome.syn_xyz)
    else:
        kwargs.setdefault("pre", connectome.pre)
        kwargs.setdefault("post", connectome.post)
    return grid, build_tables(connectome.xyz, grid, source=connectome.source, **kwargs)


# ----------------------------------------------------------------------------------------------- gathers
def _expand_mask(mask: jax.Array, x: jax.Array) -> jax.Array:
    return mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))


def gather_members(x: jax.Array, tables: SpatialTables) -> jax.Array:
    """Per-location view of per-neuron values: ``out[l, k] = x[members[l, k]]`` (0 where masked).

    Args:
      x: ``[N, ...]`` per-neuron values.
      tables: the spatial tables (numpy or jax arrays; may be sharded along L).

    Returns:
      ``[L, K, ...]``.

    Example:
        >>> xyz = np.array([[0, 0, 0], [5, 0, 0]], np.float32)
        >>> t = build_tables(xyz, build_grid(xyz, GridSpec(20.0)))
        >>> gather_members(jnp.array([10.0, 20.0]), t).tolist()
        [[10.0, 20.0], [20.0, 10.0]]
    """
    x = jnp.asarray(x)
    out = jnp.take(x, jnp.asarray(tables.members), axis=0)
    return jnp.where(_expand_mask(jnp.asarray(tables.member_mask), out), out, 0)


def candidate_to_member(a: jax.Array, tables: SpatialTables) -> jax.Array:
    """Per-(neuron, candidate) values in the location layout (the inverse of the candidate gather).

    ``out[l, k] = a[members[l, k], member_candidate[l, k]]``.

    Used e.g. to hand each interface the assignment weights of its members.

    Args:
      a: ``[N, C, ...]``.

    Returns:
      ``[L, K, ...]`` (0 where masked).
    """
    a = jnp.asarray(a)
    out = a[jnp.asarray(tables.members), jnp.asarray(tables.member_candidate)]
    return jnp.where(_expand_mask(jnp.asarray(tables.member_mask), out), out, 0)


def scatter_to_neurons(y: jax.Array, weights: jax.Array | None, tables: SpatialTables) -> jax.Array:
    r"""Combine per-location outputs back onto neurons through their candidates (a gather, not a scatter).

    .. math:: x_i = \sum_c m_{ic}\, w_{ic}\, y[\mathrm{cand}_{ic}, \mathrm{slot}_{ic}]

    A neuron with no candidate (unplaced: ``candidate_mask[i]`` all False) gets 0.

    Args:
      y: ``[L, K, ...]`` per-location, per-member values.
      weights: ``[N, C]`` (e.g. assignment weights), or None for the mean over a neuron's spheres.
      tables: the spatial tables.

    Returns:
      ``[N, ...]``.

    Example:
        >>> xyz = np.array([[0, 0, 0], [5, 0, 0]], np.float32)
        >>> t = build_tables(xyz, build_grid(xyz, GridSpec(20.0)))
        >>> scatter_to_neurons(jnp.array([[1.0, 2.0], [4.0, 3.0]]), None, t).tolist()
        [2.0, 3.0]
    """
    y = jnp.asarray(y)
    mask = jnp.asarray(tables.candidate_mask)
    if weights is None:
        weights = mask / jnp.maximum(mask.sum(1, keepdims=True), 1)
    w = jnp.where(mask, jnp.asarray(weights), 0).astype(y.dtype)
    vals = y[jnp.asarray(tables.candidates), jnp.asarray(tables.candidate_slot)]  # [N, C, ...]
    return jnp.einsum("nc,nc...->n...", w, vals)
