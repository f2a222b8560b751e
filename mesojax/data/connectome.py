"""Connectome: neurons embedded in 3D and their synapses as a directed multigraph (DESIGN.md, Data model).

Neurons ``i = 0..N-1`` have a stable id, a position ``xyz`` in µm and a cell type. A neuron whose
position is unknown ("unplaced", e.g. an unidentified point source of a recording) has an all-NaN row
in ``xyz``; :attr:`Connectome.placed` tells them apart and spatial code skips them. Synapses
``e = 0..E-1`` are one row each (a multigraph, §4.1): ``pre[e] -> post[e]`` as neuron indices, an
optional position ``syn_xyz[e]``, optional strength features ``strength[e, F]`` (count, size, vesicles...),
a sign (+1 excitatory, -1 inhibitory, 0 unknown) and a kind (0 chemical, 1 electrical).

Example:
    >>> import numpy as np
    >>> from mesojax.data import Connectome
    >>> c = Connectome.from_id_table(
    ...     ids=["A", "B", "C"], xyz=np.eye(3), cell_type=["s", "i", "m"],
    ...     pre_ids=["A", "B", "B"], post_ids=["B", "C", "C"])
    >>> c.n_neurons, c.n_synapses
    (3, 3)
    >>> c.weighted().toarray().astype(int).tolist()
    [[0, 1, 0], [0, 0, 2], [0, 0, 0]]
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import scipy.sparse

from mesojax.data import validation as V

CHEMICAL = 0
ELECTRICAL = 1
KIND_NAMES = ("chemical", "electrical")


def _as_id_array(ids: Any) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.dtype.kind in "iu":
        return ids.astype(np.int64)
    if ids.dtype.kind in "US":
        return ids.astype(str)
    if ids.dtype.kind == "O":
        return np.asarray([str(x) for x in ids.tolist()], dtype=str) if ids.size else ids.astype(str)
    raise V.ValidationError("ids", "ids", None, f"ids must be integers or strings, got dtype {ids.dtype}")


def index_ids(
    table_ids: np.ndarray, query_ids: np.ndarray, *, source: str, field: str, missing_ok: bool = False
) -> np.ndarray:
    """Map each of `query_ids` to its row in `table_ids` (which must be unique).

    Args:
      table_ids: ``[N]`` unique ids.
      query_ids: ``[Q]`` ids to look up.
      source, field: named in the error for an unknown id.
      missing_ok: return -1 for unknown ids instead of raising.

    Returns:
      ``[Q]`` int64 indices into `table_ids` (-1 where unknown and `missing_ok`).
    """
    table_ids = np.asarray(table_ids)
    query_ids = np.asarray(query_ids)
    if query_ids.size == 0:
        return np.zeros((0,), np.int64)
    order = np.argsort(table_ids, kind="stable")
    sorted_ids = table_ids[order]
    if table_ids.dtype.kind != query_ids.dtype.kind and not (
        table_ids.dtype.kind in "iu" and query_ids.dtype.kind in "iu"
    ):
        # Mixed string/int ids cannot match; compare as strings so the error names the real value.
        sorted_ids = sorted_ids.astype(str)
        query_ids = query_ids.astype(str)
    pos = np.searchsorted(sorted_ids, query_ids)
    pos_clipped = np.minimum(pos, len(sorted_ids) - 1)
    found = (pos < len(sorted_ids)) & (sorted_ids[pos_clipped] == query_ids)
    out = np.where(found, order[pos_clipped], -1).astype(np.int64)
    if not missing_ok and not found.all():
        row = int(np.flatnonzero(~found)[0])
        raise V.ValidationError(source, field, row, f"unknown neuron id {V.show(query_ids[row])}")
    return out


def check_positions(source: str, field: str, xyz: np.ndarray) -> np.ndarray:
    """Validate neuron positions where an all-NaN row means "position unknown"; return which are known.

    Args:
      source, field: named in the error.
      xyz: ``[N, 3]`` numeric positions (shape already checked).

    Returns:
      ``[N]`` bool, True where the row is finite (the neuron is placed), False where it is all NaN.

    Raises:
      ValidationError: naming the first row that is partly NaN or holds an inf.

    Example:
        >>> check_positions("t", "xyz", np.array([[0, 0, 0], [np.nan] * 3])).tolist()
        [True, False]
    """
    xyz = np.asarray(xyz)
    finite = np.isfinite(xyz)
    placed = finite.all(axis=1)
    bad = ~placed & ~np.isnan(xyz).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise V.ValidationError(
            source, field, row,
            f"non-finite value {V.show(xyz[row])} (a position is either finite or all NaN = unknown)",
        )
    return placed


@dataclasses.dataclass(frozen=True, eq=False)
class Connectome:
    """Neurons in 3D and a directed multigraph of synapses between them.

    Attributes:
      ids: ``[N]`` unique neuron ids (int64 or str).
      xyz: ``[N, 3]`` float32 neuron positions in µm; finite, or an all-NaN row = position unknown
        (an "unplaced" neuron: see :attr:`placed`).
      cell_type: ``[N]`` str cell-type labels ("" when unknown).
      pre: ``[E]`` int32 index of the presynaptic neuron of each synapse.
      post: ``[E]`` int32 index of the postsynaptic neuron.
      syn_xyz: ``[E, 3]`` float32 synapse positions in µm, or None.
      strength: ``[E, F]`` float32 non-negative strength features, or None.
      strength_names: names of the F strength features.
      sign: ``[E]`` int8 in {-1, 0, +1} (0 = unknown).
      kind: ``[E]`` int8, 0 chemical / 1 electrical.
      source: where the data came from (named in error messages).
    """

    ids: np.ndarray
    xyz: np.ndarray
    cell_type: np.ndarray
    pre: np.ndarray
    post: np.ndarray
    syn_xyz: np.ndarray | None = None
    strength: np.ndarray | None = None
    strength_names: tuple[str, ...] = ()
    sign: np.ndarray | None = None
    kind: np.ndarray | None = None
    source: str = "Connectome"

    def __post_init__(self):
        src = self.source
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        set_("ids", _as_id_array(self.ids))
        n = len(self.ids)
        V.check_shape(src, "ids", self.ids, (n,))
        V.check_unique(src, "ids", self.ids)
        V.check_numeric(src, "xyz", self.xyz)
        set_("xyz", np.asarray(self.xyz, np.float32))
        V.check_shape(src, "xyz", self.xyz, (n, 3))
        check_positions(src, "xyz", self.xyz)
        cell_type = np.asarray(self.cell_type if self.cell_type is not None else [""] * n).astype(str)
        set_("cell_type", cell_type)
        V.check_shape(src, "cell_type", cell_type, (n,))

        pre, post = V.check_edges(src, self.pre, self.post, n)
        set_("pre", pre.astype(np.int32))
        set_("post", post.astype(np.int32))
        e = len(self.pre)
        if self.syn_xyz is not None:
            V.check_numeric(src, "syn_xyz", self.syn_xyz)
            set_("syn_xyz", np.asarray(self.syn_xyz, np.float32))
            V.check_shape(src, "syn_xyz", self.syn_xyz, (e, 3))
            V.check_finite(src, "syn_xyz", self.syn_xyz)
        if self.strength is not None:
            strength = np.asarray(self.strength)
            V.check_numeric(src, "strength", strength)
            if strength.ndim == 1:
                strength = strength[:, None]
            strength = strength.astype(np.float32)
            set_("strength", strength)
            V.check_shape(src, "strength", strength, (e, None))
            V.check_finite(src, "strength", strength)
            V.check_nonnegative(src, "strength", strength)
            names = tuple(self.strength_names) or tuple(f"f{k}" for k in range(strength.shape[1]))
            if len(names) != strength.shape[1]:
                raise V.ValidationError(
                    src, "strength_names", None,
                    f"{len(names)} names for {strength.shape[1]} strength features",
                )
            set_("strength_names", names)
        elif self.strength_names:
            raise V.ValidationError(src, "strength_names", None, "names given but strength is None")
        sign = np.zeros((e,), np.int8) if self.sign is None else np.asarray(self.sign)
        V.check_shape(src, "sign", sign, (e,))
        V.check_in_set(src, "sign", sign, (-1, 0, 1))
        set_("sign", sign.astype(np.int8))
        kind = np.zeros((e,), np.int8) if self.kind is None else np.asarray(self.kind)
        V.check_shape(src, "kind", kind, (e,))
        V.check_in_set(src, "kind", kind, (CHEMICAL, ELECTRICAL))
        set_("kind", kind.astype(np.int8))

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_id_table(
        cls,
        ids: Sequence[Any],
        xyz: np.ndarray,
        cell_type: Sequence[str] | None,
        pre_ids: Sequence[Any],
        post_ids: Sequence[Any],
        *,
        syn_xyz: np.ndarray | None = None,
        strength: np.ndarray | None = None,
        strength_names: Sequence[str] = (),
        sign: np.ndarray | None = None,
        kind: np.ndarray | None = None,
        source: str = "Connectome",
    ) -> "Connectome":
        """Build from a neuron table and a synapse table whose endpoints are given as neuron ids.

        Raises:
          ValidationError: naming the synapse row of the first endpoint that is not a known neuron id.
        """
        ids = _as_id_array(ids)
        V.check_unique(source, "ids", ids)
        pre = index_ids(ids, _as_id_array(pre_ids), source=source, field="pre")
        post = index_ids(ids, _as_id_array(post_ids), source=source, field="post")
        return cls(
            ids=ids, xyz=xyz, cell_type=cell_type, pre=pre, post=post, syn_xyz=syn_xyz,
            strength=strength, strength_names=tuple(strength_names), sign=sign, kind=kind, source=source,
        )

    # ---------------------------------------------------------------- basic properties
    @property
    def n_neurons(self) -> int:
        return len(self.ids)

    @property
    def n_synapses(self) -> int:
        return len(self.pre)

    @property
    def placed(self) -> np.ndarray:
        """``[N]`` bool: True where the neuron's position is known (its ``xyz`` row is not all NaN)."""
        return np.isfinite(self.xyz).all(axis=1)

    def index(self, ids: Sequence[Any], *, missing_ok: bool = False) -> np.ndarray:
        """Row index of each id (``[Q]`` int64; -1 for unknown ids when `missing_ok`)."""
        return index_ids(self.ids, _as_id_array(ids), source=self.source, field="ids", missing_ok=missing_ok)

    def synapse_weight(self, weight: str = "count", signed: bool = False) -> np.ndarray:
        """Per-synapse scalar weight ``[E]``: 1 per row ("count") or a named strength feature; optionally × sign."""
        if weight == "count":
            w = np.ones((self.n_synapses,), np.float32)
        else:
            if weight not in self.strength_names:
                raise V.ValidationError(
                    self.source, "strength_names", None,
                    f"no strength feature {weight!r}; have {list(self.strength_names)}",
                )
            w = self.strength[:, self.strength_names.index(weight)]
        return w * self.sign if signed else w

    # ---------------------------------------------------------------- graph views
    def weighted(
        self, *, weight: str = "count", signed: bool = False, kind: int | None = None
    ) -> scipy.sparse.csr_matrix:
        """Collapse the multigraph to a weighted simple graph.

        ``W[i, j] = Σ_{e: pre[e]=i, post[e]=j} w[e]`` with ``w`` from :meth:`synapse_weight`.

        Args:
          weight: "count" (number of synapses) or a strength feature name (summed).
          signed: multiply each synapse's weight by its sign before summing.
          kind: restrict to CHEMICAL or ELECTRICAL synapses (None: all).

        Returns:
          ``[N, N]`` scipy CSR matrix, float32, duplicates summed.
        """
        w = self.synapse_weight(weight, signed)
        keep = slice(None) if kind is None else self.kind == kind
        n = self.n_neurons
        mat = scipy.sparse.coo_matrix((w[keep], (self.pre[keep], self.post[keep])), shape=(n, n))
        mat = mat.tocsr()
        mat.sum_duplicates()
        return mat.astype(np.float32)

    def select(self, neurons: np.ndarray) -> "Connectome":
        """Induced sub-connectome on the neuron rows `neurons` (kept in the given order).

        Synapses are kept iff both endpoints are selected; their rows keep their original order.
        """
        neurons = np.asarray(neurons, np.int64)
        V.check_index_range(self.source, "neurons", neurons, self.n_neurons)
        V.check_unique(self.source, "neurons", neurons)
        new_index = np.full((self.n_neurons,), -1, np.int64)
        new_index[neurons] = np.arange(len(neurons))
        keep = (new_index[self.pre] >= 0) & (new_index[self.post] >= 0)
        opt = lambda a: None if a is None else a[keep]  # noqa: E731
        return Connectome(
            ids=self.ids[neurons], xyz=self.xyz[neurons], cell_type=self.cell_type[neurons],
            pre=new_index[self.pre[keep]], post=new_index[self.post[keep]], syn_xyz=opt(self.syn_xyz),
            strength=opt(self.strength), strength_names=self.strength_names, sign=self.sign[keep],
            kind=self.kind[keep], source=self.source,
        )

    def ball(self, center: Sequence[float], radius: float) -> tuple["Connectome", np.ndarray]:
        """Sub-connectome of the neurons within `radius` µm of `center` (``|xyz - center| <= radius``).

        Unplaced neurons (unknown position) are never selected.

        Returns:
          ``(sub, neurons)``: the induced sub-connectome and the ``[n]`` original row of each of its neurons.
        """
        center = np.asarray(center, np.float32)
        V.check_shape(self.source, "center", center, (3,))
        placed = self.placed
        d2 = ((np.where(placed[:, None], self.xyz, 0) - center) ** 2).sum(axis=1)  # NaN-free
        neurons = np.flatnonzero(placed & (d2 <= np.float32(radius) ** 2))
        return self.select(neurons), neurons

    def summary(self) -> str:
        """A few lines describing sizes, extent (of the placed neurons) and synapse kinds."""
        placed = self.placed
        xyz = self.xyz[placed]
        lo, hi = (xyz.min(0), xyz.max(0)) if len(xyz) else (np.zeros(3), np.zeros(3))
        n_unplaced = self.n_neurons - int(placed.sum())
        unplaced_text = f" ({n_unplaced} unplaced: position unknown)" if n_unplaced else ""
        kinds = np.bincount(self.kind, minlength=2) if self.n_synapses else np.zeros(2, int)
        types, counts = np.unique(self.cell_type, return_counts=True)
        type_text = ", ".join(f"{t or '?'}:{c}" for t, c in zip(types[:8], counts[:8]))
        return (
            f"Connectome '{self.source}': {self.n_neurons} neurons, {self.n_synapses} synapses "
            f"({kinds[0]} chemical, {kinds[1]} electrical)\n"
            f"  extent µm: x[{lo[0]:.1f}, {hi[0]:.1f}] y[{lo[1]:.1f}, {hi[1]:.1f}] z[{lo[2]:.1f}, {hi[2]:.1f}]"
            f"{unplaced_text}\n"
            f"  cell types: {type_text}{' ...' if len(types) > 8 else ''}"
        )
