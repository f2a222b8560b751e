r"""Level-I features (§4.3, Supplement A): per-neuron and per-location descriptors of the circuit.

Everything here is host-side numpy/scipy except the graph network, which is pure JAX. The features
are inputs to the assignment and interface networks (DESIGN.md, "The model"): a neuron's features say
what role it can play, a location's features say what sub-circuit it holds.

**The graph.** Structural features are computed on the *collapsed simple directed graph* of the
connectome: ``A[i, j] = 1`` iff at least one synapse ``i → j`` exists, self-loops (autapses) dropped.
Electrical synapses are symmetric; :func:`adjacency` adds them in both directions by default
(``electrical="reciprocal"``), or as recorded (``"directed"``), or not at all (``"drop"``). The dyad
of a pair ``{i, j}`` is *mutual* (``M``: both edges), *asymmetric* (``S``: one edge) or *null*.

**Features and their cost** (``N`` neurons, ``E`` edges of ``A``, ``d_i`` the number of distinct
neighbours of ``i`` in the undirected skeleton ``U = A ∨ Aᵀ``):

* degrees, reciprocity and synaptic strength — ``O(N + E)``;
* the triad census (:func:`motif_counts`, all 16 Holland–Leinhardt / networkx classes) and the
  per-neuron participation in the 13 *connected* 3-node classes (:func:`triad_participation`) —
  exact. Every triangle of ``U`` is listed once through the degree ordering (wedges ``v ≺ a ≺ b``,
  ``O(Σ_a in≺(a)·out≺(a)) ≤ O(E^1.5)``), the open triads follow from degrees by inclusion–exclusion;
  chunks hold at most ``work`` candidates, so memory is ``O(N + E + work)``;
* directed cliques (:func:`directed_clique_counts`) — directed ``k``-simplices, i.e. ordered tuples
  ``(v_0..v_k)`` with ``v_a → v_b`` for all ``a < b`` (transitive tournaments; Reimann et al. 2017, the
  flagser convention, so a reciprocal pair holds two 1-simplices). Enumerated depth-first in chunks of
  at most ``work`` candidates: time ``O(Σ_b in_b·out_b + Σ_σ out(sink σ))`` over the simplices ``σ`` of
  dimensions 2..``max_dim - 1``; memory ``O(N + E + work)``. The most expensive feature: lower
  ``max_dim`` on dense, clustered graphs, where the number of simplices explodes;
* transmission-response activity statistics (:func:`activity_features`) — ``O(nnz(active) + E + N)``;
* per-location pooling (:func:`location_features`) — ``O(L·K·F)``, internal edges ``O(Σ_l Σ_{i∈l} out_i)``.

Measured (random graph, 100k neurons, 10M synapses, one shared and loaded CPU core): adjacency 8 s,
degrees 4 s, degree+strength features 21 s, triad participation 64 s, simplices to dimension 3
54 s, peak memory 1.6 GB.

Example:

>>> import numpy as np
>>> from mesojax import features
>>> pre, post = np.array([0, 1, 2, 0]), np.array([1, 2, 0, 2])
>>> feats, names = features.neuron_features(pre, post, 3)
>>> float(feats[0, names.index("out_degree")])               # 0 -> 1 and 0 <-> 2
2.0
>>> features.motif_counts(features.adjacency(pre, post, 3))["120C"]   # A -> B -> C, A <-> C
1
>>> features.directed_clique_counts(features.adjacency(pre, post, 3), max_dim=2).total.tolist()
[3, 4, 1]
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jraph
import numpy as np
import scipy.sparse

from mesojax import nn
from mesojax.data import validation as V

__all__ = [
    "TRIAD_NAMES",
    "CONNECTED_TRIADS",
    "ELECTRICAL_MODES",
    "adjacency",
    "degree_features",
    "motif_counts",
    "triad_participation",
    "CliqueCounts",
    "directed_clique_counts",
    "neuron_features",
    "connectome_features",
    "ACTIVITY_NAMES",
    "activity_features",
    "location_features",
    "RobustStats",
    "robust_stats",
    "standardize",
    "to_graphs_tuple",
    "GraphNetwork",
    "make_graph_network",
]

TRIAD_NAMES: tuple[str, ...] = (
    "003", "012", "102", "021D", "021U", "021C", "111D", "111U",
    "030T", "030C", "201", "120D", "120U", "120C", "210", "300",
)
"""The 16 directed triad classes, in the order and with the names of ``networkx.triadic_census``."""

CONNECTED_TRIADS: tuple[str, ...] = TRIAD_NAMES[3:]
"""The 13 weakly connected 3-node classes (the per-neuron motif features)."""

ELECTRICAL_MODES: tuple[str, ...] = ("reciprocal", "directed", "drop")
"""How :func:`adjacency` treats electrical synapses (``kind == 1``)."""

DEFAULT_WORK = 1 << 23
"""Default bound on the entries of one chunk's intermediate (≈ 100 MB of scratch)."""

# One representative of each class, as edges on nodes A=0, B=1, C=2 (networkx's documented examples).
_TRIAD_EXAMPLES: dict[str, tuple[tuple[int, int], ...]] = {
    "003": (),
    "012": ((0, 1),),
    "102": ((0, 1), (1, 0)),
    "021D": ((1, 0), (1, 2)),
    "021U": ((0, 1), (2, 1)),
    "021C": ((0, 1), (1, 2)),
    "111D": ((0, 1), (1, 0), (2, 1)),
    "111U": ((0, 1), (1, 0), (1, 2)),
    "030T": ((0, 1), (2, 1), (0, 2)),
    "030C": ((1, 0), (2, 1), (0, 2)),
    "201": ((0, 1), (1, 0), (1, 2), (2, 1)),
    "120D": ((1, 0), (1, 2), (0, 2), (2, 0)),
    "120U": ((0, 1), (2, 1), (0, 2), (2, 0)),
    "120C": ((0, 1), (1, 2), (0, 2), (2, 0)),
    "210": ((0, 1), (1, 2), (2, 1), (0, 2), (2, 0)),
    "300": ((0, 1), (1, 0), (1, 2), (2, 1), (0, 2), (2, 0)),
}
_PAIRS = ((0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1))


def _triad_code(edges: set[tuple[int, int]]) -> int:
    """Canonical code of a 3-node digraph: the smallest 6-bit edge code over the 6 relabellings."""
    best = 64
    for perm in itertools.permutations(range(3)):
        code = sum(1 << k for k, (p, q) in enumerate(_PAIRS) if (perm[p], perm[q]) in edges)
        best = min(best, code)
    return best


_CODE_TO_CLASS = {_triad_code(set(edges)): TRIAD_NAMES.index(name) for name, edges in _TRIAD_EXAMPLES.items()}
assert len(_CODE_TO_CLASS) == 16  # the 16 representatives are pairwise non-isomorphic

# Dyad types seen from one endpoint: o = out (asymmetric p→q), i = in (q→p), m = mutual, n = null.
_O, _I, _M, _N = range(4)
_FLIP = (_I, _O, _M, _N)  # the same dyad seen from the other endpoint


def _dyad_edges(p: int, q: int, t: int) -> list[tuple[int, int]]:
    return {_O: [(p, q)], _I: [(q, p)], _M: [(p, q), (q, p)], _N: []}[t]


def _class_of(x: int, y: int, z: int) -> int:
    """Triad class of nodes (v, a, b) with dyads x = (v, a), y = (a, b), z = (v, b) seen from the first."""
    edges = set(_dyad_edges(0, 1, x) + _dyad_edges(1, 2, y) + _dyad_edges(0, 2, z))
    return _CODE_TO_CLASS[_triad_code(edges)]


_CLASS_TABLE = np.array(
    [[[_class_of(x, y, z) for z in range(4)] for y in range(4)] for x in range(4)], np.int64
)


# ------------------------------------------------------------------------------------------- graphs
def _electrical_mask(source: str, kind: Any, n_edges: int, electrical: str) -> np.ndarray | None:
    if electrical not in ELECTRICAL_MODES:
        raise V.ValidationError(source, "electrical", None, f"{electrical!r} not in {list(ELECTRICAL_MODES)}")
    if kind is None:
        return None
    kind = np.asarray(kind)
    V.check_shape(source, "kind", kind, (n_edges,))
    V.check_in_set(source, "kind", kind, (0, 1))
    return kind == 1


def _expand_electrical(
    pre: np.ndarray, post: np.ndarray, weight: np.ndarray, is_elec: np.ndarray | None, electrical: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if is_elec is None or electrical == "directed":
        return pre, post, weight
    if electrical == "drop":
        keep = ~is_elec
        return pre[keep], post[keep], weight[keep]
    return (
        np.concatenate([pre, post[is_elec]]),
        np.concatenate([post, pre[is_elec]]),
        np.concatenate([weight, weight[is_elec]]),
    )


def adjacency(
    pre: Any,
    post: Any,
    n_neurons: int,
    *,
    kind: Any = None,
    electrical: str = "reciprocal",
    source: str = "adjacency",
) -> scipy.sparse.csr_matrix:
    """Binary adjacency of the collapsed simple directed graph: ``A[i, j] = 1`` iff some synapse ``i → j``.

    Self-loops are dropped; parallel synapses collapse to one edge.

    Args:
      pre, post: ``[E]`` integer neuron indices of each synapse (one row per synapse).
      n_neurons: ``N``.
      kind: ``[E]`` 0 chemical / 1 electrical, or None (all chemical).
      electrical: one of :data:`ELECTRICAL_MODES`: add electrical synapses in both directions, as
        recorded, or not at all.
      source: named in validation errors.

    Returns:
      ``[N, N]`` CSR matrix, int32, entries in {0, 1}, sorted indices, no explicit zeros.

    Raises:
      ValidationError: a non-integer or out-of-range index, mismatched lengths, a bad `kind`/`electrical`.

    Example:
      >>> adjacency([0, 0, 1, 1], [1, 1, 1, 0], 2, kind=[0, 0, 0, 1], electrical="drop").toarray().tolist()
      [[0, 1], [0, 0]]
    """
    pre, post = V.check_edges(source, pre, post, n_neurons)
    is_elec = _electrical_mask(source, kind, len(pre), electrical)
    pre, post, _ = _expand_electrical(pre, post, np.zeros(len(pre)), is_elec, electrical)
    keep = pre != post
    ones = np.ones(int(keep.sum()), np.int32)
    mat = scipy.sparse.csr_matrix((ones, (pre[keep], post[keep])), shape=(n_neurons, n_neurons))
    mat.sum_duplicates()
    mat.data[:] = 1
    return mat


def _binary(adj: Any, source: str = "adj") -> scipy.sparse.csr_matrix:
    """``adj`` (sparse or dense, square) as an int64 0/1 CSR matrix without diagonal, sorted indices."""
    mat = scipy.sparse.csr_matrix(adj)
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        raise V.ValidationError(
            source, "adj", None, f"expected a square [N, N] matrix, got shape {list(mat.shape)}"
        )
    mat = mat.astype(np.int64)  # a copy: the caller's matrix is never modified
    mat.sum_duplicates()
    if mat.diagonal().any():
        mat.setdiag(0)
    mat.eliminate_zeros()
    mat.data[:] = 1
    mat.sort_indices()
    return mat


def _dyad_parts(a: scipy.sparse.csr_matrix) -> tuple[scipy.sparse.csr_matrix, ...]:
    """``(S, Sᵀ, M)``: the asymmetric out-edges, asymmetric in-edges and mutual edges of binary ``a``."""
    at = a.T.tocsr()
    mutual = a.multiply(at).tocsr()
    asym = (a - mutual).tocsr()
    asym.eliminate_zeros()
    parts = (asym, asym.T.tocsr(), mutual)
    for part in parts:
        part.sort_indices()
    return parts


def _row_chunks(cost: np.ndarray, work: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` row ranges whose summed cost stays ≤ `work` (≥ 1 row each)."""
    n = len(cost)
    if n == 0:
        return []
    csum = np.cumsum(cost, dtype=np.float64)
    chunks, start = [], 0
    while start < n:
        base = csum[start - 1] if start else 0.0
        stop = int(np.searchsorted(csum, base + work, side="right"))
        stop = min(max(stop, start + 1), n)
        chunks.append((start, stop))
        start = stop
    return chunks


# ------------------------------------------------------------------------------------------ degrees
def degree_features(
    adj: Any, weighted: scipy.sparse.spmatrix | None = None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Per-neuron degree, reciprocity and (optionally) strength.

    ``in_degree = Σ_j A[j, i]``, ``out_degree = Σ_j A[i, j]``, ``degree = in + out`` (networkx's
    ``DiGraph.degree``), ``reciprocal_degree = Σ_j A[i, j] A[j, i]`` and
    ``reciprocity = 2·reciprocal_degree / degree`` (``networkx.reciprocity(G, i)``; 0 for isolated neurons).
    With ``weighted`` (``W[i, j]`` = summed synapse weight): ``in_strength = Σ_j W[j, i]``,
    ``out_strength = Σ_j W[i, j]`` (diagonal ignored).

    Args:
      adj: ``[N, N]`` adjacency (nonzero = edge, diagonal ignored), sparse or dense.
      weighted: optional ``[N, N]`` weighted graph for the strengths.

    Returns:
      ``(features [N, F] float64, names)``.
    """
    a = _binary(adj)
    out_deg = a.getnnz(axis=1).astype(np.float64)
    in_deg = a.getnnz(axis=0).astype(np.float64)
    recip = a.multiply(a.T).tocsr().getnnz(axis=1).astype(np.float64)
    total = in_deg + out_deg
    ratio = np.divide(2.0 * recip, total, out=np.zeros_like(total), where=total > 0)
    cols = [in_deg, out_deg, total, recip, ratio]
    names = ["in_degree", "out_degree", "degree", "reciprocal_degree", "reciprocity"]
    if weighted is not None:
        w = scipy.sparse.csr_matrix(weighted, dtype=np.float64)
        if w.shape != a.shape:
            raise V.ValidationError(
                "degree_features", "weighted", None, f"shape {list(w.shape)} != adj {list(a.shape)}"
            )
        diag = w.diagonal()
        cols += [np.asarray(w.sum(axis=0)).ravel() - diag, np.asarray(w.sum(axis=1)).ravel() - diag]
        names += ["in_strength", "out_strength"]
    return np.stack(cols, axis=1), tuple(names)


# ------------------------------------------------------------------------------------------- triads
def _gather_neighbours(
    mat: scipy.sparse.csr_matrix, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the stored entries of each row in `rows`: ``(parent [W], position [W])``."""
    deg = (mat.indptr[rows + 1] - mat.indptr[rows]).astype(np.int64)
    parent = np.repeat(np.arange(len(rows)), deg)
    offset = np.arange(len(parent)) - np.repeat(np.cumsum(deg) - deg, deg)
    return parent, np.repeat(mat.indptr[rows].astype(np.int64), deg) + offset


_FLIP_TYPES = np.array(_FLIP[:3], np.int64)
_DENSE_BLOCK = 1 << 24  # bytes of the per-block dense lookup table


def _triangle_tensor(parts: Sequence[scipy.sparse.csr_matrix], work: int) -> np.ndarray:
    """``T[v, x, y, z]`` = #ordered ``(a, b)`` with dyads x(v, a), y(a, b), z(v, b), types in {S, Sᵀ, M}.

    Each triangle of the skeleton ``U`` is listed exactly once through the degree ordering ``≺``
    (rank by degree, ties by index): as ``v ≺ a ≺ b`` from the wedge ``v → a → b`` of the oriented
    graph, closed when ``(v, b)`` is an edge, checked in a dense ``[rows, N]`` table of the current
    block of ``v`` rows. It then adds its six ordered views to ``T``. Time ``O(Σ_a in≺(a)·out≺(a))``
    (``≤ O(E^1.5)``), memory ``O(N + E + work)``.
    """
    s, st, m = parts
    n = s.shape[0]
    code = (s + 2 * st + 3 * m).tocsr()  # 1 + the dyad type seen from the row neuron
    code.sort_indices()
    deg = np.diff(code.indptr)
    rank = np.empty(n, np.int64)
    rank[np.argsort(deg, kind="stable")] = np.arange(n)
    rows = np.repeat(np.arange(n), deg)
    keep = rank[rows] < rank[code.indices]
    low = scipy.sparse.csr_matrix(
        (code.data[keep].astype(np.int8), (rows[keep], code.indices[keep])), shape=(n, n)
    )
    low.sort_indices()
    first_v = np.repeat(np.arange(n), np.diff(low.indptr))
    first_a = low.indices.astype(np.int64)
    cost = np.diff(low.indptr)[first_a]
    flat = np.zeros(n * 27, np.int64)
    pending: list[np.ndarray] = []
    pending_size = 0
    block = max(1, _DENSE_BLOCK // max(n, 1))
    table = np.zeros((min(block, n), n), np.int8)  # reused: only the entries set are cleared
    flat_table = table.reshape(-1)
    for r0 in range(0, n, block):
        r1 = min(n, r0 + block)
        e0, e1 = low.indptr[r0], low.indptr[r1]
        if e0 == e1:
            continue
        table[first_v[e0:e1] - r0, first_a[e0:e1]] = low.data[e0:e1]
        for c0, c1 in _row_chunks(cost[e0:e1], work):
            edge = np.arange(e0 + c0, e0 + c1)
            parent, pos = _gather_neighbours(low, first_a[edge])
            b = low.indices[pos]
            z = flat_table.take((first_v[edge] - r0)[parent] * n + b)
            hit = np.flatnonzero(z)
            pos, parent = pos[hit], parent[hit]
            v, a, b = first_v[edge][parent], first_a[edge][parent], b[hit].astype(np.int64)
            z = z[hit].astype(np.int64) - 1
            x = low.data[edge][parent].astype(np.int64) - 1
            y = low.data[pos].astype(np.int64) - 1
            fx, fy, fz = _FLIP_TYPES[x], _FLIP_TYPES[y], _FLIP_TYPES[z]
            pending += [
                v * 27 + x * 9 + y * 3 + z, v * 27 + z * 9 + fy * 3 + x,
                a * 27 + fx * 9 + z * 3 + y, a * 27 + y * 9 + fz * 3 + fx,
                b * 27 + fz * 9 + x * 3 + fy, b * 27 + fy * 9 + fx * 3 + fz,
            ]
            pending_size += 6 * len(v)
            if pending_size > work:
                flat += np.bincount(np.concatenate(pending), minlength=n * 27)
                pending, pending_size = [], 0
        table[first_v[e0:e1] - r0, first_a[e0:e1]] = 0
    if pending:
        flat += np.bincount(np.concatenate(pending), minlength=n * 27)
    return flat.reshape(n, 3, 3, 3)


class _TriadStats(NamedTuple):
    participation: np.ndarray  # [N, 16] int64 (columns 0..2 unused: zero)
    n_012_ordered: int  # Σ_v #(a, b): v→a asymmetric, b isolated from both
    n_102_ordered: int  # Σ_v #(a, b): v↔a, b isolated from both (each triad twice)


def _triad_stats(adj: Any, work: int) -> _TriadStats:
    """Per-neuron triad counts: ordered pairs ``(a, b)`` by the dyad types of ``(v, a, b)``, then by class."""
    a = _binary(adj)
    n = a.shape[0]
    parts = _dyad_parts(a)
    tri = _triangle_tensor(parts, work)
    deg = np.stack([p.getnnz(axis=1) for p in parts], axis=1).astype(np.int64)  # [N, 3]: o, i, m
    du = deg.sum(axis=1)

    def endpoint(x: int, y: int) -> np.ndarray:
        # v -x- a -y- b with b ∉ {v} and b not adjacent to v.
        reach = parts[x] @ deg[:, y]
        back = deg[:, x] if _FLIP[y] == x else 0  # b = v
        return reach - back - tri[:, x, y, :].sum(axis=1)

    part = np.zeros((n, 16), np.int64)
    for x, y, z in itertools.product(range(4), repeat=3):
        nulls = (x == _N) + (y == _N) + (z == _N)
        if nulls > 1:
            continue
        if nulls == 0:
            count = tri[:, x, y, z]
        elif y == _N:  # v is the centre: a and b are not adjacent
            count = deg[:, x] * deg[:, z] - (deg[:, x] if x == z else 0) - tri[:, x, :, z].sum(axis=1)
        elif z == _N:
            count = endpoint(x, y)
        else:  # x == _N: swap a and b
            count = endpoint(z, _FLIP[y])
        part[:, _CLASS_TABLE[x, y, z]] += count
    # Each triad {v, a, b} was counted as (a, b) and as (b, a).
    assert not (part % 2).any(), "internal error: odd ordered-pair count"
    part //= 2

    def isolated_pairs(x: int) -> int:
        # Σ_{a: x(v,a)} (n - d_v - d_a + |N(v) ∩ N(a)|) summed over v.
        common = tri[:, :, :, x].sum(axis=(1, 2))
        per_v = deg[:, x] * (n - du) - parts[x] @ du + common
        return int(per_v.sum())

    return _TriadStats(part, isolated_pairs(_O), isolated_pairs(_M))


def motif_counts(adj: Any, *, work: int = DEFAULT_WORK) -> dict[str, int]:
    """Global directed triad census: the number of node triples in each of the 16 classes.

    Classes and names follow ``networkx.triadic_census`` (Holland–Leinhardt MAN codes). Exact;
    Cost: see the module docstring (triangle listing, ``≤ O(E^1.5)``).

    Args:
      adj: ``[N, N]`` adjacency (nonzero = edge; diagonal ignored), scipy sparse or dense.
      work: bound on one chunk's intermediate entries (memory), not on the result.

    Returns:
      ``{name: count}`` in :data:`TRIAD_NAMES` order; the counts sum to ``C(N, 3)``.

    Example:
      >>> motif_counts(np.array([[0, 1, 1], [0, 0, 1], [0, 0, 0]]))["030T"]
      1
    """
    a = _binary(adj)
    n = a.shape[0]
    stats = _triad_stats(a, work)
    counts = {name: 0 for name in TRIAD_NAMES}
    totals = stats.participation.sum(axis=0)
    for k, name in enumerate(TRIAD_NAMES[3:], start=3):
        counts[name] = int(totals[k]) // 3  # every triad has three members
    counts["012"] = stats.n_012_ordered
    counts["102"] = stats.n_102_ordered // 2
    counts["003"] = math.comb(n, 3) - sum(counts.values())
    return counts


def triad_participation(adj: Any, *, work: int = DEFAULT_WORK) -> tuple[np.ndarray, tuple[str, ...]]:
    """Per-neuron participation in the 13 connected 3-node motif classes.

    ``P[i, t]`` = the number of node triples ``{i, a, b}`` of class ``t`` that contain neuron ``i``
    (so ``Σ_i P[i, t] = 3·census[t]``). Exact; cost in the module docstring.

    Args:
      adj: ``[N, N]`` adjacency (nonzero = edge; diagonal ignored).
      work: bound on one chunk's intermediate entries.

    Returns:
      ``(P [N, 13] int64, names)`` with names ``"triad_<class>"`` for :data:`CONNECTED_TRIADS`.
    """
    stats = _triad_stats(adj, work)
    return stats.participation[:, 3:], tuple(f"triad_{name}" for name in CONNECTED_TRIADS)


# ----------------------------------------------------------------------------------------- simplices
class CliqueCounts(NamedTuple):
    """Directed-clique (simplex) counts.

    Attributes:
      total: ``[max_dim + 1]`` int64, the number of directed ``k``-simplices for ``k = 0..max_dim``.
      per_neuron: ``[N, max_dim + 1]`` int64, the number of ``k``-simplices each neuron belongs to
        (``Σ_i per_neuron[i, k] = (k + 1)·total[k]``).
    """

    total: np.ndarray
    per_neuron: np.ndarray


def _expand(
    simplices: np.ndarray, a: scipy.sparse.csr_matrix, keys: np.ndarray, table: np.ndarray, row0: int
) -> np.ndarray:
    """All ``(σ, d)`` with ``d`` an out-neighbour of every vertex of ``σ`` (``[m, k]`` -> ``[m', k + 1]``).

    The source's edges are looked up in ``table`` (dense rows ``row0..`` of ``a``), the others by
    binary search in the sorted edge ``keys``; the sink's edge holds by construction.
    """
    n = a.shape[0]
    parent, pos = _gather_neighbours(a, simplices[:, -1])
    cand = a.indices[pos].astype(np.int64)
    ok = table[simplices[parent, 0] - row0, cand]
    parent, cand = parent[ok], cand[ok]
    for col in range(1, simplices.shape[1] - 1):
        query = simplices[parent, col] * n + cand
        pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
        ok = keys[pos] == query
        parent, cand = parent[ok], cand[ok]
    return np.concatenate([simplices[parent], cand[:, None]], axis=1)


def directed_clique_counts(adj: Any, max_dim: int = 3, *, work: int = DEFAULT_WORK) -> CliqueCounts:
    """Count directed ``k``-simplices (directed ``(k+1)``-cliques) globally and per neuron.

    A directed ``k``-simplex is an ordered tuple ``(v_0, …, v_k)`` of distinct neurons with
    ``A[v_a, v_b] = 1`` for every ``a < b`` (a transitive tournament; Reimann et al. 2017, flagser).
    ``k = 0``: neurons; ``k = 1``: directed edges (a reciprocal pair gives two); ``k = 2``: transitive
    triangles. Exact enumeration, depth-first, in chunks of at most ``work`` candidate extensions,
    so memory is ``O(N + E + work)``; time grows with the number of simplices (module docstring).

    Args:
      adj: ``[N, N]`` adjacency (nonzero = edge; diagonal ignored).
      max_dim: largest dimension counted (≥ 0).
      work: candidate extensions checked per chunk.

    Returns:
      :class:`CliqueCounts`.

    Example:
      >>> full = np.ones((4, 4)) - np.eye(4)                 # all 12 edges: every ordering is a simplex
      >>> directed_clique_counts(full, max_dim=3).total.tolist()
      [4, 12, 24, 24]
    """
    if isinstance(max_dim, bool) or not isinstance(max_dim, (int, np.integer)) or max_dim < 0:
        raise V.ValidationError(
            "directed_clique_counts", "max_dim", None, f"must be an integer ≥ 0, got {max_dim!r}"
        )
    a = _binary(adj)
    n = a.shape[0]
    total = np.zeros(max_dim + 1, np.int64)
    per = np.zeros((n, max_dim + 1), np.int64)
    total[0], per[:, 0] = n, 1
    if max_dim == 0 or a.nnz == 0:
        if max_dim >= 1:
            total[1] = 0
        return CliqueCounts(total, per)
    total[1] = a.nnz
    per[:, 1] = a.getnnz(axis=0) + a.getnnz(axis=1)
    if max_dim == 1:
        return CliqueCounts(total, per)
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(a.indptr))
    keys = rows * n + a.indices  # sorted: canonical CSR is row-major with sorted columns
    out_deg = np.diff(a.indptr)

    def descend(simplices: np.ndarray, table: np.ndarray, row0: int) -> None:
        dim = simplices.shape[1]  # dimension of the extensions
        for start, stop in _row_chunks(out_deg[simplices[:, -1]], work):
            ext = _expand(simplices[start:stop], a, keys, table, row0)
            if not len(ext):
                continue
            total[dim] += len(ext)
            per[:, dim] += np.bincount(ext.ravel(), minlength=n)
            if dim < max_dim:
                descend(ext, table, row0)

    # Simplices are grown per block of source neurons, whose rows sit in a dense lookup table.
    block = max(1, _DENSE_BLOCK // n)
    table = np.zeros((min(block, n), n), bool)  # reused: only the entries set are cleared
    for r0 in range(0, n, block):
        r1 = min(n, r0 + block)
        e0, e1 = a.indptr[r0], a.indptr[r1]
        if e0 == e1:
            continue
        table[rows[e0:e1] - r0, a.indices[e0:e1]] = True
        descend(np.stack([rows[e0:e1], a.indices[e0:e1].astype(np.int64)], axis=1), table, r0)
        table[rows[e0:e1] - r0, a.indices[e0:e1]] = False
    return CliqueCounts(total, per)


# ------------------------------------------------------------------------------- neuron features
def neuron_features(
    pre: Any,
    post: Any,
    n_neurons: int,
    *,
    weight: Any = None,
    kind: Any = None,
    electrical: str = "reciprocal",
    max_dim: int = 3,
    motifs: bool = True,
    work: int = DEFAULT_WORK,
    source: str = "neuron_features",
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Structural Level-I features of every neuron of a connectome.

    Columns, in order: ``in_degree, out_degree, degree, reciprocal_degree, reciprocity`` and
    ``in_strength, out_strength`` (:func:`degree_features`; strength = summed synapse ``weight`` over
    the multigraph, self-synapses dropped, electrical synapses treated like the edges); then, with
    ``motifs``, ``triad_<class>`` for the 13 connected classes (:func:`triad_participation`); then
    ``simplex_<k>`` for ``k = 2..max_dim``, the number of directed ``k``-simplices holding the neuron
    (:func:`directed_clique_counts`; ``k = 1`` equals ``degree`` and is not repeated).

    Args:
      pre, post: ``[E]`` integer neuron indices, one row per synapse.
      n_neurons: ``N``.
      weight: ``[E]`` non-negative synapse weights for the strengths (None: 1 per synapse).
      kind: ``[E]`` 0 chemical / 1 electrical (None: all chemical).
      electrical: see :func:`adjacency`.
      max_dim: largest simplex dimension (< 2: no simplex columns).
      motifs: include the triad columns (``≤ O(E^1.5)``).
      work: chunk bound for the expensive features.
      source: named in validation errors.

    Returns:
      ``(features [N, F] float32, names tuple[str])``.
    """
    pre_i, post_i = V.check_edges(source, pre, post, n_neurons)
    if weight is None:
        w = np.ones(len(pre_i), np.float64)
    else:
        w = np.asarray(weight)
        V.check_numeric(source, "weight", w)
        V.check_shape(source, "weight", w, (len(pre_i),))
        V.check_finite(source, "weight", w)
        V.check_nonnegative(source, "weight", w)
        w = w.astype(np.float64)
    is_elec = _electrical_mask(source, kind, len(pre_i), electrical)
    p, q, w = _expand_electrical(pre_i, post_i, w, is_elec, electrical)
    keep = p != q
    strength = [np.bincount(ends[keep], weights=w[keep], minlength=n_neurons) for ends in (q, p)]
    a = adjacency(pre_i, post_i, n_neurons, kind=kind, electrical=electrical, source=source)
    cols, names = degree_features(a)
    blocks = [cols, np.stack(strength, axis=1)]
    all_names = list(names) + ["in_strength", "out_strength"]
    if motifs:
        tri, tri_names = triad_participation(a, work=work)
        blocks.append(tri)
        all_names += tri_names
    if max_dim >= 2:
        cliques = directed_clique_counts(a, max_dim, work=work)
        blocks.append(cliques.per_neuron[:, 2:])
        all_names += [f"simplex_{k}" for k in range(2, max_dim + 1)]
    return np.concatenate([b.astype(np.float64) for b in blocks], axis=1).astype(np.float32), tuple(all_names)


def connectome_features(
    connectome: Any, *, weight: str = "count", **kwargs: Any
) -> tuple[np.ndarray, tuple[str, ...]]:
    """:func:`neuron_features` of a :class:`mesojax.data.Connectome` (its pre, post, kind and weights).

    Args:
      connectome: the connectome.
      weight: "count" or a strength-feature name (see ``Connectome.synapse_weight``).
      **kwargs: passed to :func:`neuron_features` (``electrical``, ``max_dim``, ``motifs``, ``work``).
    """
    return neuron_features(
        connectome.pre, connectome.post, connectome.n_neurons,
        weight=connectome.synapse_weight(weight), kind=connectome.kind, source=connectome.source, **kwargs,
    )


# ------------------------------------------------------------------------------ activity features
ACTIVITY_NAMES: tuple[str, ...] = (
    "act_out_interval_frac", "act_in_interval_frac",
    "act_out_degree_mean", "act_in_degree_mean",
    "act_out_edge_rate_mean", "act_in_edge_rate_mean",
    "act_out_edge_rate_max", "act_in_edge_rate_max",
)
"""Column names of :func:`activity_features`."""


def activity_features(
    senders: Any, receivers: Any, active: Any, n_neurons: int, *, source: str = "activity_features"
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Per-neuron statistics of the transmission-response graphs (§4.2).

    With ``act[p, e] ∈ {0, 1}`` (edge ``e`` active in interval ``p``, ``P`` intervals) and the edge rate
    ``r_e = (1/P) Σ_p act[p, e]``, for neuron ``i`` (out: edges with sender ``i``; in: receiver ``i``):

    * ``act_out_interval_frac`` = fraction of intervals in which ≥ 1 out-edge of ``i`` is active;
    * ``act_out_degree_mean`` = mean number of active out-edges per interval = ``Σ_{e∈out(i)} r_e``;
    * ``act_out_edge_rate_mean`` = ``act_out_degree_mean / |out(i)|`` (0 without out-edges);
    * ``act_out_edge_rate_max`` = ``max_{e∈out(i)} r_e`` (0 without out-edges);

    and the same four for in-edges. ``O(nnz(act) + E + N)``.

    Args:
      senders, receivers: ``[E]`` neuron indices of the static graph's edges.
      active: ``[P, E]`` activity mask, scipy sparse or dense (nonzero = active).
      n_neurons: ``N``.
      source: named in validation errors.

    Returns:
      ``(features [N, 8] float32, ACTIVITY_NAMES)``.
    """
    s, r = V.check_edges(source, senders, receivers, n_neurons)
    n_edges = len(s)
    act = scipy.sparse.csr_matrix(active)
    if act.ndim != 2 or act.shape[1] != n_edges:
        raise V.ValidationError(
            source, "active", None, f"expected shape [P, {n_edges}], got {list(act.shape)}"
        )
    n_int = act.shape[0]
    if n_int == 0:
        raise V.ValidationError(source, "active", None, "no intervals (P = 0)")
    act = act.astype(bool).astype(np.float64)
    act.eliminate_zeros()
    rate = np.bincount(act.indices, minlength=n_edges) / n_int
    cols = []
    for ends in (s, r):
        incidence = scipy.sparse.csr_matrix(
            (np.ones(n_edges), (np.arange(n_edges), ends)), shape=(n_edges, n_neurons)
        )
        per_interval = (act @ incidence).tocsr()  # [P, N] active edges of each neuron per interval
        per_interval.eliminate_zeros()
        cols.append(np.bincount(per_interval.indices, minlength=n_neurons) / n_int)
    deg = [np.bincount(ends, minlength=n_neurons).astype(np.float64) for ends in (s, r)]
    mean_deg = [np.bincount(ends, weights=rate, minlength=n_neurons) for ends in (s, r)]
    cols += mean_deg
    cols += [np.divide(m, d, out=np.zeros(n_neurons), where=d > 0) for m, d in zip(mean_deg, deg)]
    for ends in (s, r):
        best = np.zeros(n_neurons)
        np.maximum.at(best, ends, rate)
        cols.append(best)
    return np.stack(cols, axis=1).astype(np.float32), ACTIVITY_NAMES


# ------------------------------------------------------------------------------ location features
def location_features(
    neuron_feats: Any,
    members: Any,
    member_mask: Any,
    *,
    names: Sequence[str] | None = None,
    pre: Any = None,
    post: Any = None,
    chunk: int = 1 << 22,
    work: int = DEFAULT_WORK,
    source: str = "location_features",
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Per-location features: pooled member features plus sphere-local counts.

    For location ``µ`` with members ``m(µ) = {members[µ, k] : member_mask[µ, k]}``: ``mean_<f>`` and
    ``max_<f>`` over the members of each neuron feature (NaN entries ignored; 0 when none is left),
    ``n_members = |m(µ)|`` and, when ``pre``/``post`` are given, ``internal_edges`` = the number of
    edges ``i → j`` of the collapsed graph of ``pre → post`` (:func:`adjacency`; each row as
    recorded, so pass both directions of electrical synapses yourself) with ``i, j ∈ m(µ)``, and
    ``internal_density = internal_edges / (n(n-1))`` (0 when ``n < 2``).

    Args:
      neuron_feats: ``[N, F]`` per-neuron features (e.g. :func:`standardize` of :func:`neuron_features`).
      members: ``[L, K]`` integer neuron indices, padded.
      member_mask: ``[L, K]`` bool, True for real members (no repeats within a row).
      names: the F feature names (default ``f0..``).
      pre, post: ``[E]`` synapse endpoints, for the internal-edge columns.
      chunk: pooling processes ``≈ chunk / (K·F)`` locations at a time (memory bound).
      work: chunk bound for the internal-edge sparse product.
      source: named in validation errors.

    Returns:
      ``(features [L, 2F + 1 (+ 2)] float32, names)``.
    """
    feats = np.asarray(neuron_feats)
    V.check_numeric(source, "neuron_feats", feats)
    if feats.ndim != 2:
        raise V.ValidationError(
            source, "neuron_feats", None, f"expected shape [N, F], got {list(feats.shape)}"
        )
    n, f = feats.shape
    members, mask = np.asarray(members), np.asarray(member_mask)
    if members.dtype.kind not in "iu":
        raise V.ValidationError(
            source, "members", None, f"expected integer neuron indices, got dtype {members.dtype}"
        )
    if members.ndim != 2:
        raise V.ValidationError(source, "members", None, f"expected shape [L, K], got {list(members.shape)}")
    V.check_shape(source, "member_mask", mask, members.shape)
    if mask.dtype != bool:
        raise V.ValidationError(source, "member_mask", None, f"expected bool, got dtype {mask.dtype}")
    outside = mask & ((members < 0) | (members >= n))
    if outside.any():
        row = V.first_row(outside)
        value = int(members[row][outside[row]][0])
        raise V.ValidationError(source, "members", row, f"index {value} out of range for {n} neurons")
    n_loc, k = members.shape
    ordered = np.sort(np.where(mask, members, -1 - np.arange(k)), axis=1)  # padding never collides
    repeat = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)
    if repeat.any():
        row = V.first_row(repeat)
        dup = ordered[row, 1:][repeat[row]][0]
        raise V.ValidationError(source, "members", row, f"neuron {int(dup)} listed twice")
    names = tuple(names) if names is not None else tuple(f"f{j}" for j in range(f))
    if len(names) != f:
        raise V.ValidationError(source, "names", None, f"{len(names)} names for {f} features")

    feats = feats.astype(np.float64)
    mean = np.zeros((n_loc, f))
    high = np.zeros((n_loc, f))
    step = max(1, chunk // max(1, k * f))
    for start in range(0, n_loc, step):
        sl = slice(start, start + step)
        vals = feats[np.where(mask[sl], members[sl], 0)]  # [l, K, F]
        valid = mask[sl][..., None] & ~np.isnan(vals)
        count = valid.sum(axis=1)
        mean[sl] = np.where(valid, vals, 0.0).sum(axis=1) / np.maximum(count, 1)
        high[sl] = np.where(count > 0, np.where(valid, vals, -np.inf).max(axis=1), 0.0)
    n_members = mask.sum(axis=1).astype(np.float64)
    cols = [mean, high, n_members[:, None]]
    out_names = [f"mean_{name}" for name in names] + [f"max_{name}" for name in names] + ["n_members"]
    if (pre is None) != (post is None):
        raise V.ValidationError(
            source, "pre" if pre is None else "post", None, "give both pre and post, or neither"
        )
    if pre is not None:
        a = _binary(adjacency(pre, post, n, source=source))
        loc, slot = np.nonzero(mask)
        belongs = scipy.sparse.csr_matrix(
            (np.ones(len(loc), np.int64), (loc, members[loc, slot])), shape=(n_loc, n)
        )
        internal = np.zeros(n_loc)
        out_deg = a.getnnz(axis=1).astype(np.float64)
        for start, stop in _row_chunks(belongs @ out_deg, work):
            block = belongs[start:stop]
            internal[start:stop] = np.asarray((block @ a).multiply(block).sum(axis=1)).ravel()
        pairs = n_members * (n_members - 1)
        density = np.divide(internal, pairs, out=np.zeros(n_loc), where=pairs > 0)
        cols += [internal[:, None], density[:, None]]
        out_names += ["internal_edges", "internal_density"]
    return np.concatenate(cols, axis=1).astype(np.float32), tuple(out_names)


# ---------------------------------------------------------------------------------- standardise
class RobustStats(NamedTuple):
    """Per-feature centre and scale of :func:`robust_stats` (``[F]`` float64 each)."""

    center: np.ndarray
    scale: np.ndarray


# IQR of a standard normal: dividing by it makes the scale comparable to a standard deviation.
_IQR_NORMAL = 1.3489795003921634
_MAD_NORMAL = math.sqrt(math.pi / 2)  # E|x - median| = σ·sqrt(2/π) for a normal


def robust_stats(features: Any) -> RobustStats:
    """Median and normal-consistent IQR of every column, ignoring NaN.

    ``scale = IQR / 1.349``; where the IQR is 0 (e.g. a count that is mostly 0) the mean absolute
    deviation from the median ``× sqrt(π/2)`` is used, and 1 where that is 0 too (constant column).
    All-NaN columns get centre 0, scale 1.

    Args:
      features: ``[N, F]``.

    Returns:
      :class:`RobustStats`.
    """
    x = np.asarray(features, np.float64)
    if x.ndim != 2:
        raise V.ValidationError(
            "robust_stats", "features", None, f"expected shape [N, F], got {list(x.shape)}"
        )
    seen = ~np.isnan(x).all(axis=0)
    center = np.zeros(x.shape[1])
    scale = np.ones(x.shape[1])
    if seen.any():
        xs = x[:, seen]
        med = np.nanmedian(xs, axis=0)
        q1, q3 = np.nanpercentile(xs, [25, 75], axis=0)
        iqr = (q3 - q1) / _IQR_NORMAL
        mad = np.nanmean(np.abs(xs - med), axis=0) * _MAD_NORMAL
        spread = np.where(iqr > 0, iqr, np.where(mad > 0, mad, 1.0))
        center[seen], scale[seen] = med, spread
    return RobustStats(center, scale)


def standardize(features: Any, stats: RobustStats | None = None, *, nan_value: float = 0.0) -> np.ndarray:
    """Robust scaling ``z = (x - median) / scale`` per column (:func:`robust_stats`); NaN becomes `nan_value`.

    Args:
      features: ``[N, F]``.
      stats: statistics to apply (e.g. from a training circuit); default: those of `features`.
      nan_value: value written where the input is NaN (0 = the median).

    Returns:
      ``[N, F]`` float32.

    Example:
      >>> z = standardize(np.array([[1.0], [2.0], [3.0], [np.nan]]))    # median 2, IQR 1
      >>> np.round(z.astype(float).ravel(), 3).tolist()
      [-1.349, 0.0, 1.349, 0.0]
    """
    x = np.asarray(features, np.float64)
    stats = robust_stats(x) if stats is None else stats
    if x.ndim != 2 or x.shape[1] != len(stats.center):
        raise V.ValidationError(
            "standardize", "features", None, f"expected shape [N, {len(stats.center)}], got {list(x.shape)}"
        )
    z = (x - stats.center) / stats.scale
    return np.where(np.isnan(z), nan_value, z).astype(np.float32)


# -------------------------------------------------------------------------------- graph network
def to_graphs_tuple(adj: Any, node_features: Any, edge_features: Any = None) -> jraph.GraphsTuple:
    """One ``jraph.GraphsTuple`` holding the directed graph ``adj`` (edges in CSR order).

    Args:
      adj: ``[N, N]`` adjacency (nonzero = edge; diagonal ignored).
      node_features: ``[N, Fn]``.
      edge_features: ``[E, Fe]`` in the CSR (row-major) edge order of `adj`, or None.

    Returns:
      ``GraphsTuple`` with ``senders/receivers [E]`` int32, ``n_node = [N]``, ``n_edge = [E]``.
    """
    a = _binary(adj)
    nodes = jnp.asarray(node_features, jnp.float32)
    if nodes.ndim != 2 or nodes.shape[0] != a.shape[0]:
        raise V.ValidationError(
            "to_graphs_tuple", "node_features", None,
            f"expected shape [{a.shape[0]}, F], got {list(nodes.shape)}",
        )
    senders = np.repeat(np.arange(a.shape[0]), np.diff(a.indptr))
    edges = None if edge_features is None else jnp.asarray(edge_features, jnp.float32)
    if edges is not None and (edges.ndim != 2 or edges.shape[0] != a.nnz):
        raise V.ValidationError(
            "to_graphs_tuple", "edge_features", None, f"expected shape [{a.nnz}, F], got {list(edges.shape)}"
        )
    return jraph.GraphsTuple(
        nodes=nodes, edges=edges, senders=jnp.asarray(senders, jnp.int32),
        receivers=jnp.asarray(a.indices, jnp.int32), globals=None,
        n_node=jnp.asarray([a.shape[0]], jnp.int32), n_edge=jnp.asarray([a.nnz], jnp.int32),
    )


Params = dict[str, Any]


class GraphNetwork(NamedTuple):
    """A learned Level-I feature extractor: pure functions over an explicit parameter pytree.

    Attributes:
      init: ``init(key, node_dim, edge_dim=0) -> params``.
      apply: ``apply(params, graph: jraph.GraphsTuple) -> [n_nodes, out_dim]`` node embeddings.
    """

    init: Callable[..., Params]
    apply: Callable[[Params, jraph.GraphsTuple], jax.Array]


def make_graph_network(
    hidden: int = 32,
    n_layers: int = 2,
    out_dim: int = 16,
    *,
    activation: Callable[[jax.Array], jax.Array] = jax.nn.gelu,
    mean_aggregation: bool = True,
) -> GraphNetwork:
    r"""Directed message-passing network producing node embeddings (an interaction network).

    .. math::

        h^0_i &= \mathrm{enc}(x_i) \\
        m^{\to}_e &= φ^{\to}_l([h_{s_e}, h_{r_e}, e_e]), \qquad
            m^{\leftarrow}_e = φ^{\leftarrow}_l([h_{r_e}, h_{s_e}, e_e]) \\
        h^{l}_i &= h^{l-1}_i + ψ_l\big([h^{l-1}_i,\ \textstyle\sum_{e: r_e = i} m^{\to}_e / c^{in}_i,\
                   \sum_{e: s_e = i} m^{\leftarrow}_e / c^{out}_i]\big) \\
        y_i &= \mathrm{dec}(h^{L}_i)

    Messages travel both ways along each synapse with separate networks, so the direction of the
    connection is visible; sums are ``jraph.segment_sum`` (``c = max(1, degree)`` with
    ``mean_aggregation``, else 1). Equivariant to node permutations; padded/batched graphs
    (``jraph.batch``, ``jraph.pad_with_graphs``) never mix because messages follow edges only.

    Args:
      hidden: width of the node state and of every MLP hidden layer.
      n_layers: message-passing rounds.
      out_dim: embedding width.
      activation: nonlinearity of the MLPs.
      mean_aggregation: divide summed messages by the in/out degree.

    Returns:
      :class:`GraphNetwork`.

    Example:
      >>> net = make_graph_network(hidden=8, n_layers=1, out_dim=4)
      >>> g = to_graphs_tuple(np.array([[0, 1], [0, 0]]), np.ones((2, 3)))
      >>> net.apply(net.init(jax.random.key(0), node_dim=3), g).shape
      (2, 4)
    """
    for name, value in (("hidden", hidden), ("n_layers", n_layers), ("out_dim", out_dim)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(
                f"mesojax.features.make_graph_network: {name} must be a positive integer, got {value!r}"
            )

    def init(key: jax.Array, node_dim: int, edge_dim: int = 0) -> Params:
        k_enc, k_dec, *k_layers = jax.random.split(key, 2 + n_layers)
        layers = []
        for k in k_layers:
            k_fwd, k_bwd, k_upd = jax.random.split(k, 3)
            layers.append({
                "fwd": nn.init_mlp(k_fwd, (hidden, hidden), 2 * hidden + edge_dim),
                "bwd": nn.init_mlp(k_bwd, (hidden, hidden), 2 * hidden + edge_dim),
                "update": nn.init_mlp(k_upd, (hidden, hidden), 3 * hidden),
            })
        return {
            "encoder": nn.init_mlp(k_enc, (hidden,), node_dim),
            "layers": layers,
            "decoder": nn.init_mlp(k_dec, (out_dim,), hidden),
        }

    def apply(params: Params, graph: jraph.GraphsTuple) -> jax.Array:
        """Node embeddings ``[n_nodes, out_dim]`` of every node of (a batch of) graphs."""
        nodes = jnp.asarray(graph.nodes, jnp.float32)
        n = nodes.shape[0]
        snd, rcv = graph.senders, graph.receivers
        edge_in = nn.mlp_widths(params["layers"][0]["fwd"])[0] - 2 * hidden if params["layers"] else 0
        if edge_in and graph.edges is None:
            raise ValueError(
                f"mesojax.features.GraphNetwork.apply: params expect {edge_in} edge features, "
                "graph.edges is None"
            )
        extra = [] if not edge_in else [jnp.asarray(graph.edges, jnp.float32)]
        ones = jnp.ones_like(snd, jnp.float32)
        c_in = jnp.maximum(jraph.segment_sum(ones, rcv, n), 1.0)[:, None] if mean_aggregation else 1.0
        c_out = jnp.maximum(jraph.segment_sum(ones, snd, n), 1.0)[:, None] if mean_aggregation else 1.0
        # Leading (node/edge) axes broadcast through the dense layers, as a vmap over rows would.
        def mlp(p: Any, x: jax.Array) -> jax.Array:
            return nn.apply_mlp(p, x, activation=activation)

        h = mlp(params["encoder"], nodes)
        for layer in params["layers"]:
            hs, hr = h[snd], h[rcv]
            fwd = mlp(layer["fwd"], jnp.concatenate([hs, hr, *extra], axis=-1))
            bwd = mlp(layer["bwd"], jnp.concatenate([hr, hs, *extra], axis=-1))
            agg_in = jraph.segment_sum(fwd, rcv, n) / c_in
            agg_out = jraph.segment_sum(bwd, snd, n) / c_out
            h = h + mlp(layer["update"], jnp.concatenate([h, agg_in, agg_out], axis=-1))
        return mlp(params["decoder"], h)

    return GraphNetwork(init, apply)
