r"""Events from calcium traces and transmission-response graphs (DESIGN.md "Space and graphs", §4.2).

**Events.** :func:`detect_events` turns ``[T, N]`` traces into a sparse ``[T, N]`` boolean matrix
(``scipy.sparse.csr_matrix``, row = frame) by one of two documented rules; see its docstring.

**Transmission-response graphs.** Time is cut into intervals of ``I`` frames, ``p = ⌊t / I⌋`` (the last
interval may be shorter). Given the connectome edges ``e: pre[e] = i → post[e] = j``, edge ``e`` is
*active* in interval ``p`` iff

.. math:: ∃\, t ∈ \mathrm{ev}(i),\ ⌊t / I⌋ = p,\ ∃\, t' ∈ \mathrm{ev}(j):\ t < t' ≤ t + Δ,

i.e. the pre-synaptic neuron has an event in ``p`` and the post-synaptic one responds strictly later but
within ``Δ`` frames. The response ``t'`` may lie in a later interval (it is credited to the interval of
the *pre* event) and frames past the end of the recording hold no events. Edges are the rows of the
connectome, so multigraph duplicates are active together.

:class:`TRGraphs` stores the static topology ``senders / receivers [E]`` and the activity as a sparse
``[P, E]`` boolean CSR matrix (dense is out of reach at fly scale: 10⁴ × 10⁷), plus which neurons have an
event in each interval (``[P, N]``). :func:`to_graphs_tuples` hands a batch of intervals to a model as
one ``jraph.GraphsTuple``.

:func:`transmission_response` works only from the sparse events. Edges are grouped by pre
neuron once (a CSR counting sort); then, frame by frame, one C++ row gather (scipy) expands the out-edges
of every neuron with an event, and each post neuron is looked up in a dense ``[frames, N]`` "has an event
within Δ after t" window of the current chunk of intervals. Work is ``O(Σ_events out-degree)`` (about
2·10⁹ edge tests at fly scale with 2 % events per frame); memory is the events, the ``[P, E]`` result
and one window per chunk; chunks run on ``workers`` threads (scipy and numpy release the GIL).

Example:
    >>> import numpy as np
    >>> from mesojax import graphs
    >>> ev = np.zeros((4, 3), bool); ev[0, 0] = ev[1, 1] = ev[2, 2] = True   # A, B, C fire in turn
    >>> tr = graphs.transmission_response(np.array([0, 1, 0]), np.array([1, 2, 2]), ev, interval=1, window=1)
    >>> tr.dense(0, 4).astype(int).tolist()       # edges A→B, B→C, A→C per interval
    [[1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0]]
"""

from __future__ import annotations

import concurrent.futures
import os
from typing import Any, NamedTuple, Sequence

import jraph
import numpy as np
import scipy.sparse

from mesojax.data import validation as V

_MAD_TO_SIGMA = 1.4826  # MAD of a Gaussian is 0.6745 σ


# ----------------------------------------------------------------------------------------------- events
def _robust_z(x: np.ndarray) -> np.ndarray:
    """Per-column ``(x - median) / (1.4826 · MAD)``, NaN-safe; NaN where the column is flat or all NaN."""
    with np.errstate(all="ignore"), _quiet_nan_warnings():
        med = np.nanmedian(x, axis=0)
        mad = np.nanmedian(np.abs(x - med), axis=0) * _MAD_TO_SIGMA
        scale = np.where(mad > 0, mad, np.nan)
        return (x - med) / scale


class _quiet_nan_warnings:
    """Silence numpy's 'All-NaN slice' warnings: all-NaN columns are expected (missing neurons)."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


def _apply_refractory(candidate: np.ndarray, refractory: int) -> np.ndarray:
    """Greedy in time: keep a candidate frame unless a kept event lies within `refractory` frames before."""
    if refractory <= 0:
        return candidate
    t_len, n = candidate.shape
    keep = np.zeros_like(candidate)
    last = np.full(n, -(refractory + 1), np.int64)
    # Loop over frames that hold a candidate only; vectorised over neurons.
    for t in np.flatnonzero(candidate.any(1)):
        k = candidate[t] & (t - last > refractory)
        keep[t] = k
        last[k] = t
    return keep


def detect_events(
    traces: Any,
    *,
    method: str = "threshold",
    threshold: float = 3.0,
    refractory: int = 2,
    hysteresis: float = 0.5,
    decay_frames: float | None = None,
    block: int = 4096,
    source: str = "traces",
) -> scipy.sparse.csr_matrix:
    r"""Event onsets from calcium traces, per neuron, as a sparse ``[T, N]`` boolean matrix.

    Both methods standardise robustly per neuron, ``z = (u - median u) / (1.4826 · MAD u)`` over time
    (NaN samples ignored; a flat or all-NaN neuron has no events), then keep candidate frames greedily
    so that two events of one neuron are more than ``refractory`` frames apart.

    * ``"threshold"`` — ``u = x`` (the trace level); a candidate is the onset of a supra-threshold
      excursion: ``z[t] > θ`` with no frame above ``θ`` since ``z`` last fell to ``hysteresis · θ`` or
      below (the trace starts armed). The hysteresis stops noise on a decaying transient re-triggering.
    * ``"deconvolve"`` — inverse filter of the AR(1) calcium model ``c[t] = γ c[t-1] + s[t]`` with
      ``s ≥ 0``: ``u[t] = x[t] - γ x[t-1]`` for ``t ≥ 1`` (the innovations; robust statistics are taken
      before rectifying, so the noise scale is not biased), with ``γ = exp(-1 / decay_frames)`` or, when
      ``decay_frames`` is None, per neuron the lag-1 autocorrelation clipped to ``[0, 0.99]``; a candidate
      is a large positive innovation ``z[t] > θ``. Sharper timing than the level rule.

    A NaN sample (or a NaN neighbour for the difference) never yields an event.

    Args:
      traces: ``[T, N]`` float traces (numpy or a lazy array sliceable along neurons: ``traces[:, a:b]``).
      method: ``"threshold"`` or ``"deconvolve"``.
      threshold: ``θ`` in robust standard deviations.
      refractory: after an event, no other event of that neuron for this many frames (0 disables).
      hysteresis: re-arm level of ``"threshold"`` as a fraction of ``θ``.
      decay_frames: calcium decay time constant in frames for ``"deconvolve"``.
      block: neurons processed at once (bounds memory).
      source: named in errors.

    Returns:
      ``[T, N]`` ``scipy.sparse.csr_matrix`` of dtype bool, row ``t`` = the neurons with an event at ``t``.

    Example:
        >>> x = np.zeros((50, 2), np.float32); x[10:20, 0] = 5.0; x += 0.1 * np.sin(np.arange(50))[:, None]
        >>> ev = detect_events(x)
        >>> np.argwhere(ev.toarray()).tolist()
        [[10, 0]]
    """
    if method not in ("threshold", "deconvolve"):
        raise V.ValidationError(
            source, "method", None, f"unknown method {method!r}; use 'threshold' or 'deconvolve'"
        )
    if not (np.ndim(traces) == 2 if isinstance(traces, np.ndarray) else len(traces.shape) == 2):
        raise V.ValidationError(
            source, "traces", None, f"expected shape [T, N], got {list(np.shape(traces))}"
        )
    if decay_frames is not None and not decay_frames > 0:
        raise V.ValidationError(source, "decay_frames", None, f"must be positive, got {decay_frames}")
    if np.dtype(traces.dtype).kind not in "iuf":
        raise V.ValidationError(source, "traces", None, f"expected a numeric array, got dtype {traces.dtype}")
    t_len, n = traces.shape
    rows, cols = [], []
    for b0 in range(0, n, block):
        x = np.asarray(traces[:, b0 : b0 + block], np.float64)
        if method == "threshold":
            z = _robust_z(x)
            with np.errstate(invalid="ignore"):
                above, below = z > threshold, z <= hysteresis * threshold
            frames = np.arange(t_len)[:, None]
            last_below = np.maximum.accumulate(np.where(below, frames, -1), axis=0)
            last_above = np.maximum.accumulate(np.where(above, frames, -2), axis=0)
            last_above_before = np.concatenate([np.full((1, x.shape[1]), -2), last_above[:-1]])
            cand = above & (last_above_before < last_below)
        else:
            with np.errstate(all="ignore"), _quiet_nan_warnings():
                if decay_frames is not None:
                    gamma = np.full(x.shape[1], np.exp(-1.0 / decay_frames))
                else:
                    xc = x - np.nanmean(x, axis=0)
                    num = np.nansum(xc[1:] * xc[:-1], axis=0)
                    den = np.nansum(xc * xc, axis=0)
                    gamma = np.clip(np.where(den > 0, num / den, 0.0), 0.0, 0.99)
                # Innovations of the AR(1) calcium model; NaN wherever a sample or its predecessor is.
                u = np.concatenate([np.full((1, x.shape[1]), np.nan), x[1:] - gamma * x[:-1]])
                z = _robust_z(u)
                cand = z > threshold
        ev = _apply_refractory(cand, refractory)
        r, c = np.nonzero(ev)
        rows.append(r)
        cols.append(c + b0)
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    return scipy.sparse.csr_matrix((np.ones(len(r), bool), (r, c)), shape=(t_len, n))


def _as_event_csr(events: Any, source: str) -> scipy.sparse.csr_matrix:
    if scipy.sparse.issparse(events):
        ev = scipy.sparse.csr_matrix(events)
    else:
        events = np.asarray(events)
        V.check_shape(source, "events", events, (None, None))
        if events.dtype.kind not in "biu":
            raise V.ValidationError(
                source, "events", None, f"expected a boolean array, got dtype {events.dtype}"
            )
        ev = scipy.sparse.csr_matrix(events.astype(bool))
    ev.sum_duplicates()
    ev.eliminate_zeros()
    ev.sort_indices()
    return ev


# ----------------------------------------------------------------------------------------------- TR graphs
class TRGraphs(NamedTuple):
    """Transmission-response graphs: static topology plus a sparse per-interval activity mask.

    Attributes:
      senders: ``[E]`` int32 pre-synaptic neuron of each edge.
      receivers: ``[E]`` int32 post-synaptic neuron.
      active: ``[P, E]`` bool CSR, ``active[p, e]`` iff edge e is active in interval p (sorted indices).
      node_active: ``[P, N]`` bool CSR, neuron has an event in interval p.
      n_nodes: N.
      interval: frames per interval ``I``.
      window: response window ``Δ`` in frames.
    """

    senders: np.ndarray
    receivers: np.ndarray
    active: scipy.sparse.csr_matrix
    node_active: scipy.sparse.csr_matrix
    n_nodes: int
    interval: int
    window: int

    @property
    def n_intervals(self) -> int:
        return int(self.active.shape[0])

    @property
    def n_edges(self) -> int:
        return int(self.senders.shape[0])

    def dense(self, p0: int, p1: int) -> np.ndarray:
        """Dense ``[p1 - p0, E]`` bool activity of intervals ``p0 <= p < p1`` (small slices only)."""
        if not 0 <= p0 <= p1 <= self.n_intervals:
            raise V.ValidationError(
                "TRGraphs", "dense", None, f"[{p0}, {p1}) not inside [0, {self.n_intervals})"
            )
        return self.active[p0:p1].toarray()

    def edge_activity(self) -> np.ndarray:
        """``[E]`` fraction of intervals in which each edge is active."""
        counts = np.bincount(self.active.indices, minlength=self.n_edges)
        return counts / max(self.n_intervals, 1)

    def summary(self) -> str:
        nnz = self.active.nnz
        return (
            f"TRGraphs: N={self.n_nodes}, E={self.n_edges}, P={self.n_intervals} intervals of "
            f"{self.interval} frames, Δ={self.window}; {nnz} active edge-intervals "
            f"({nnz / max(self.n_intervals, 1):.1f} per interval)"
        )


def _interval_chunks(cost: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Split intervals into consecutive runs whose summed cost stays under `budget` (>= 1 interval each)."""
    cum = np.cumsum(cost, dtype=np.int64)
    bounds, p0, base = [], 0, 0
    n = len(cost)
    while p0 < n:
        p1 = int(np.searchsorted(cum, base + budget, side="right"))
        p1 = max(p1, p0 + 1)
        bounds.append((p0, min(p1, n)))
        p0 = min(p1, n)
        base = int(cum[p0 - 1])
    return bounds


def _tr_chunk(
    ev: scipy.sparse.csr_matrix, out_edges: scipy.sparse.csr_matrix, p0: int, p1: int, *, interval: int,
    window: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Active edges of intervals ``p0 <= p < p1``: ``(counts [p1 - p0], edges)``, each interval sorted.

    ``out_edges`` is ``[N, N]`` CSR whose row i lists i's out-edges: column = post neuron, data = edge row.
    """
    t_len, n = ev.shape
    f0, f1 = p0 * interval, min(p1 * interval, t_len)
    # resp[t - f0, j]: j has an event in (t, t + Δ]; frames past the end hold none.
    future = ev[min(f0 + 1, t_len) : min(f1 + window, t_len)].toarray()
    future = np.concatenate([future, np.zeros((f1 - f0 + window - 1 - future.shape[0], n), bool)])
    resp = future[: f1 - f0].copy()
    for k in range(1, window):
        resp |= future[k : k + f1 - f0]

    counts = np.zeros(p1 - p0, np.int64)
    found = []
    for p in range(p0, p1):
        hits = []
        for t in range(p * interval, min((p + 1) * interval, t_len)):
            pre = ev.indices[ev.indptr[t] : ev.indptr[t + 1]]
            if len(pre) == 0:
                continue
            # One C++ row gather expands the out-edges of every neuron with an event at t.
            cand = out_edges[pre]
            hits.append(cand.data[resp[t - f0][cand.indices]])
        if hits:
            edges = np.sort(np.concatenate(hits))
            if interval > 1 and len(edges):  # one pre neuron may fire twice in an interval
                edges = edges[np.concatenate([[True], edges[1:] != edges[:-1]])]
            counts[p - p0] = len(edges)
            found.append(edges)
    return counts, (np.concatenate(found) if found else np.zeros(0, np.int32))


def transmission_response(
    pre: np.ndarray,
    post: np.ndarray,
    events: Any,
    *,
    interval: int,
    window: int,
    max_candidates: int = 1 << 24,
    workers: int | None = None,
    source: str = "transmission_response",
) -> TRGraphs:
    r"""Per-interval activity of every connectome edge (the transmission-response graphs, §4.2).

    ``active[p, e]`` iff ``pre[e]`` has an event at ``t`` with ``⌊t / interval⌋ = p`` and ``post[e]`` one
    at ``t'`` with ``t < t' <= t + window`` (``t'`` may fall in a later interval; see the module docstring).

    Args:
      pre, post: ``[E]`` neuron indices of each edge (e.g. ``Connectome.pre/post``).
      events: ``[T, N]`` bool events (``scipy.sparse`` or dense), e.g. from :func:`detect_events`.
      interval: frames per interval ``I >= 1``; ``P = ⌈T / I⌉``.
      window: response window ``Δ >= 1`` in frames.
      max_candidates: edge tests per chunk of intervals; sets the chunk length and so the size of its
        ``[frames, N]`` bool window (the default gives ~10 MB windows at fly scale).
      workers: threads (None: all CPUs).
      source: named in errors.

    Returns:
      :class:`TRGraphs`.

    Example:
        >>> ev = np.zeros((3, 2), bool); ev[0, 0] = ev[2, 1] = True
        >>> tr = transmission_response(np.array([0]), np.array([1]), ev, interval=1, window=2)
        >>> tr.active.toarray()[:, 0].tolist()
        [True, False, False]
    """
    ev = _as_event_csr(events, source)
    t_len, n = ev.shape
    pre, post = V.check_edges(source, pre, post, n)
    for name, value in (("interval", interval), ("window", window)):
        if int(value) != value or value < 1:
            raise V.ValidationError(
                source, name, None, f"must be a positive integer number of frames, got {value}"
            )
    interval, window = int(interval), int(window)
    n_edges = len(pre)
    p_len = -(-t_len // interval)

    # Out-edges per neuron as CSR (a stable counting sort by pre, in C++): row i = i's edges,
    # column = post neuron, data = edge row. Built via columns = edge rows so no duplicate is summed.
    by_pre = scipy.sparse.csr_matrix(
        (post.astype(np.int32), (pre, np.arange(n_edges, dtype=np.int32))), shape=(n, max(n_edges, 1))
    )
    out_edges = scipy.sparse.csr_matrix(
        (by_pre.indices.astype(np.int32), by_pre.data, by_pre.indptr), shape=(n, n)
    )
    del by_pre
    out_deg = np.diff(out_edges.indptr)

    # Cost per interval = Σ out-degree over its events; chunk intervals under the budget.
    event_interval = np.repeat(np.arange(t_len) // interval, np.diff(ev.indptr))
    interval_cost = np.bincount(event_interval, weights=out_deg[ev.indices], minlength=p_len)
    del event_interval
    chunks = _interval_chunks(interval_cost.astype(np.int64) + 1, max_candidates)
    run = lambda c: _tr_chunk(ev, out_edges, c[0], c[1], interval=interval, window=window)  # noqa: E731
    workers = workers or os.cpu_count() or 1
    if workers > 1 and len(chunks) > 1:
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(run, chunks))
    else:
        results = [run(c) for c in chunks]
    counts = np.concatenate([r[0] for r in results]) if results else np.zeros(0, np.int64)
    e_all = np.concatenate([r[1] for r in results]) if results else np.zeros(0, np.int32)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    active = scipy.sparse.csr_matrix((np.ones(len(e_all), bool), e_all, indptr), shape=(p_len, n_edges))

    coo = ev.tocoo()
    node_active = scipy.sparse.csr_matrix(
        (np.ones(coo.nnz, bool), (coo.row // interval, coo.col)), shape=(p_len, n)
    )
    node_active.sum_duplicates()
    return TRGraphs(
        senders=pre.astype(np.int32), receivers=post.astype(np.int32), active=active,
        node_active=node_active, n_nodes=n, interval=interval, window=window,
    )


# ----------------------------------------------------------------------------------------------- jraph
def pad_sizes(
    tr: TRGraphs, batch_size: int, *, edges: str = "active", multiple: int = 256
) -> tuple[int, int, int]:
    """``(n_node, n_edge, n_graph)`` that fit ANY batch of `batch_size` intervals, for static padding.

    With these sizes :func:`to_graphs_tuples` always returns the same shapes, so a jitted model compiles
    once. ``n_edge`` is ``batch_size ×`` the busiest interval's edge count, rounded up to `multiple`.
    """
    per = int(np.diff(tr.active.indptr).max(initial=0)) if edges == "active" else tr.n_edges
    n_edge = _round_up(batch_size * per + 1, multiple)
    return batch_size * tr.n_nodes + 1, n_edge, batch_size + 1


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def to_graphs_tuples(
    tr: TRGraphs,
    p_indices: Sequence[int],
    node_features: np.ndarray | None = None,
    *,
    edges: str = "active",
    pad: tuple[int, int, int] | None = None,
) -> jraph.GraphsTuple:
    """A batch of intervals as one ``jraph.GraphsTuple`` (one graph per interval, all N neurons as nodes).

    * ``edges="active"`` — each graph holds only the edges active in its interval; edge features
      ``{"edge": connectome row [n_edge] int32, "active": 1.0}``.
    * ``edges="all"`` — each graph holds all E edges with ``"active"`` ∈ {0, 1} (shape is static, but
      the batch is ``len(p_indices) × E`` edges).

    Nodes: ``{"active": [n_node] float32}`` (event in the interval) plus ``"features"`` when
    `node_features` is given (``[N, F]`` shared by all intervals, or ``[len(p_indices), N, F]``).
    Globals: ``{"interval": [n_graph] int32}`` (``-1`` for padding). With ``pad=(n_node, n_edge, n_graph)``
    (see :func:`pad_sizes`) the batch is padded by ``jraph.pad_with_graphs`` to static shapes; use
    ``jraph.get_graph_padding_mask`` to ignore the padding graph.

    Example:
        >>> ev = np.zeros((2, 2), bool); ev[0, 0] = ev[1, 1] = True
        >>> tr = transmission_response(np.array([0, 1]), np.array([1, 0]), ev, interval=1, window=1)
        >>> g = to_graphs_tuples(tr, [0, 1])
        >>> g.n_node.tolist(), g.n_edge.tolist(), g.senders.tolist(), g.receivers.tolist()
        ([2, 2], [1, 0], [0], [1])
    """
    if edges not in ("active", "all"):
        raise V.ValidationError(
            "to_graphs_tuples", "edges", None, f"unknown mode {edges!r}; use 'active' or 'all'"
        )
    p_indices = np.asarray(p_indices, np.int64)
    V.check_index_range("to_graphs_tuples", "p_indices", p_indices, tr.n_intervals)
    b, n = len(p_indices), tr.n_nodes
    rows = tr.active[p_indices]
    if edges == "active":
        counts = np.diff(rows.indptr)
        edge_id = rows.indices.astype(np.int32)
        active = np.ones(len(edge_id), np.float32)
    else:
        counts = np.full(b, tr.n_edges)
        edge_id = np.tile(np.arange(tr.n_edges, dtype=np.int32), b)
        active = rows.toarray().astype(np.float32).ravel()
    graph_of_edge = np.repeat(np.arange(b), counts)
    offset = graph_of_edge * n
    nodes = {"active": tr.node_active[p_indices].toarray().astype(np.float32).ravel()}
    if node_features is not None:
        f = np.asarray(node_features, np.float32)
        if f.ndim == 2:
            V.check_shape("to_graphs_tuples", "node_features", f, (n, None))
            f = np.broadcast_to(f, (b,) + f.shape)
        V.check_shape("to_graphs_tuples", "node_features", f, (b, n, None))
        nodes["features"] = f.reshape(b * n, -1)
    graph = jraph.GraphsTuple(
        nodes=nodes,
        edges={"edge": edge_id, "active": active},
        senders=(tr.senders[edge_id] + offset).astype(np.int32),
        receivers=(tr.receivers[edge_id] + offset).astype(np.int32),
        globals={"interval": p_indices.astype(np.int32)},
        n_node=np.full(b, n, np.int32),
        n_edge=counts.astype(np.int32),
    )
    if pad is not None:
        n_node, n_edge, n_graph = pad
        if n_node < b * n + 1 or n_edge < len(edge_id) or n_graph < b + 1:
            raise V.ValidationError(
                "to_graphs_tuples", "pad", None,
                f"{pad} too small for {b} graphs, {b * n} nodes, {len(edge_id)} edges (see pad_sizes)",
            )
        graph = jraph.pad_with_graphs(graph, n_node, n_edge, n_graph)
        graph = graph._replace(globals={"interval": np.where(
            np.arange(n_graph) < b, np.asarray(graph.globals["interval"]), -1).astype(np.int32)})
    return graph
