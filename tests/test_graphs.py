"""Tests for mesojax.graphs: event detection and transmission-response graphs (against brute force)."""

import jax
import jraph
import numpy as np
import pytest
import scipy.sparse

from mesojax import graphs
from mesojax.data import ValidationError

A, B, C = 0, 1, 2
# Edges of the hand-made circuit: A→B, B→C, A→C, C→A.
PRE = np.array([A, B, A, C])
POST = np.array([B, C, C, A])


def _abc_events(n_frames: int = 6) -> np.ndarray:
    ev = np.zeros((n_frames, 3), bool)
    ev[0, A] = ev[1, B] = ev[2, C] = True  # A, then B, then C, one frame apart
    return ev


@pytest.mark.parametrize(
    "interval, window, expected",
    [
        # Δ = 1: A→B credited to A's interval 0 though B fires in interval 1; A→C not (C is 2 late).
        (1, 1, {0: {"A→B"}, 1: {"B→C"}}),
        # All three events in one interval: A→B and B→C, still not A→C, never C→A.
        (3, 1, {0: {"A→B", "B→C"}}),
        # Δ = 2 reaches C from A.
        (1, 2, {0: {"A→B", "A→C"}, 1: {"B→C"}}),
        (2, 2, {0: {"A→B", "A→C", "B→C"}}),
    ],
)
def test_three_neuron_chain(interval, window, expected):
    names = ["A→B", "B→C", "A→C", "C→A"]
    tr = graphs.transmission_response(PRE, POST, _abc_events(), interval=interval, window=window)
    assert tr.n_intervals == -(-6 // interval)
    got = {p: {names[e] for e in np.flatnonzero(row)} for p, row in enumerate(tr.dense(0, tr.n_intervals))}
    assert {p: s for p, s in got.items() if s} == expected


def test_simultaneous_events_do_not_count():
    ev = np.zeros((3, 2), bool)
    ev[1, 0] = ev[1, 1] = True  # t' = t is not a response (strictly later)
    tr = graphs.transmission_response(np.array([0, 1]), np.array([1, 0]), ev, interval=1, window=2)
    assert tr.active.nnz == 0


def _brute_force(pre, post, ev, interval, window):
    t_len, _ = ev.shape
    p_len = -(-t_len // interval)
    out = np.zeros((p_len, len(pre)), bool)
    for e, (i, j) in enumerate(zip(pre, post)):
        for t in np.flatnonzero(ev[:, i]):
            if ev[t + 1 : t + window + 1, j].any():
                out[t // interval, e] = True
    return out


@pytest.fixture(scope="module")
def random_case():
    rng = np.random.default_rng(0)
    n, e, t = 15, 80, 47
    pre, post = rng.integers(0, n, e), rng.integers(0, n, e)
    pre[:5], post[:5] = 3, 3  # self-loops and duplicate edges
    ev = rng.random((t, n)) < 0.15
    return pre, post, ev


@pytest.mark.parametrize("interval, window", [(1, 1), (3, 2), (4, 5), (10, 1)])
def test_matches_brute_force(random_case, interval, window):
    pre, post, ev = random_case
    want = _brute_force(pre, post, ev, interval, window)
    sparse_ev = scipy.sparse.csr_matrix(ev)
    tr = graphs.transmission_response(pre, post, sparse_ev, interval=interval, window=window)
    np.testing.assert_array_equal(tr.dense(0, tr.n_intervals), want)
    assert tr.active.has_sorted_indices
    # Chunking (one interval per chunk) and threading do not change the answer.
    tiny = graphs.transmission_response(
        pre, post, ev, interval=interval, window=window, max_candidates=1, workers=2
    )
    np.testing.assert_array_equal(tiny.active.toarray(), want)
    single = graphs.transmission_response(pre, post, ev, interval=interval, window=window, workers=1)
    np.testing.assert_array_equal(single.active.indices, tr.active.indices)
    # Node activity: any event in the interval.
    node = np.add.reduceat(ev, np.arange(0, ev.shape[0], interval), axis=0) > 0
    np.testing.assert_array_equal(tr.node_active.toarray(), node)


def test_tr_graphs_accessors(random_case):
    pre, post, ev = random_case
    tr = graphs.transmission_response(pre, post, ev, interval=2, window=2)
    dense = tr.dense(0, tr.n_intervals)
    np.testing.assert_allclose(tr.edge_activity(), dense.mean(0))
    np.testing.assert_array_equal(tr.dense(3, 7), dense[3:7])
    np.testing.assert_array_equal(tr.senders, pre)
    assert "P=24" in tr.summary()
    with pytest.raises(ValidationError, match="dense"):
        tr.dense(0, 99)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(pre=np.array([0, 5]), post=np.array([1, 1])), "field 'pre', row 1: index 5 out of range"),
        (dict(pre=np.array([0, 1]), post=np.array([1])), "field 'post'"),
        (dict(pre=np.array([0.0]), post=np.array([1])), "integer neuron indices"),
        (dict(interval=0), "field 'interval'"),
        (dict(window=1.5), "field 'window'"),
        (dict(events=np.zeros((4, 3), np.float32)), "boolean"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = dict(pre=np.array([0]), post=np.array([1]), events=np.zeros((4, 3), bool), interval=1, window=1)
    args.update(kwargs)
    with pytest.raises(ValidationError, match=match):
        graphs.transmission_response(args.pop("pre"), args.pop("post"), args.pop("events"), **args)


# ----------------------------------------------------------------------------------------------- events
def _calcium(spike_frames, n_frames=400, tau=6.0, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    s = np.zeros(n_frames)
    s[spike_frames] = 1.0
    c = np.zeros(n_frames)
    for t in range(n_frames):  # instantaneous rise, exponential decay
        c[t] = (c[t - 1] * np.exp(-1 / tau) if t else 0.0) + s[t]
    return c + noise * rng.normal(size=n_frames)


SPIKES = [[20, 60, 130, 210, 300, 380], [45, 100, 170, 250, 330]]


@pytest.mark.parametrize(
    "method, kw", [("threshold", {}), ("deconvolve", {"decay_frames": 6.0}), ("deconvolve", {})]
)
def test_detect_events_recovers_onsets(method, kw):
    traces = np.stack([_calcium(s, seed=k) for k, s in enumerate(SPIKES)], 1).astype(np.float32)
    ev = graphs.detect_events(traces, method=method, threshold=4.0, **kw)
    assert isinstance(ev, scipy.sparse.csr_matrix) and ev.dtype == bool and ev.shape == traces.shape
    for k, spikes in enumerate(SPIKES):
        assert np.flatnonzero(ev[:, k].toarray()).tolist() == spikes


def test_detect_events_nan_and_flat():
    traces = np.stack([_calcium(SPIKES[0]), _calcium(SPIKES[0]), np.zeros(400), np.full(400, np.nan)], 1)
    traces[20, 1] = np.nan  # the onset sample of neuron 1 is missing
    traces[:10, 0] = np.nan
    for method in ("threshold", "deconvolve"):
        ev = graphs.detect_events(traces.astype(np.float32), method=method, threshold=4.0).toarray()
        assert np.flatnonzero(ev[:, 0]).tolist() == SPIKES[0]
        assert 20 not in np.flatnonzero(ev[:, 1]) and set(SPIKES[0][1:]) <= set(np.flatnonzero(ev[:, 1]))
        assert not ev[:, 2:].any()


@pytest.mark.parametrize("refractory, expected", [(0, [50, 51, 150]), (1, [50, 150]), (2, [50, 150])])
def test_refractory(refractory, expected):
    trace = _calcium([50, 51, 150], noise=0.02)[:, None]
    ev = graphs.detect_events(
        trace, method="deconvolve", decay_frames=6.0, refractory=refractory, threshold=4.0
    )
    assert np.flatnonzero(ev.toarray()[:, 0]).tolist() == expected


def test_detect_events_blocks_do_not_matter():
    traces = np.random.default_rng(1).normal(size=(200, 10)).cumsum(0).astype(np.float32)
    a = graphs.detect_events(traces, method="deconvolve")
    b = graphs.detect_events(traces, method="deconvolve", block=3)
    assert (a != b).nnz == 0 and a.nnz > 0


def test_detect_events_bad_method():
    with pytest.raises(ValidationError, match="field 'method'"):
        graphs.detect_events(np.zeros((5, 2)), method="oasis")


# ----------------------------------------------------------------------------------------------- jraph
@pytest.fixture(scope="module")
def tr_random(random_case):
    pre, post, ev = random_case
    return graphs.transmission_response(pre, post, ev, interval=2, window=2)


def test_graphs_tuple_active_edges(tr_random):
    tr = tr_random
    ps = [1, 4, 5]
    g = graphs.to_graphs_tuples(tr, ps)
    n = tr.n_nodes
    assert g.n_node.tolist() == [n] * 3 and g.nodes["active"].shape == (3 * n,)
    offset = 0
    for b, p in enumerate(ps):
        edges = np.flatnonzero(tr.dense(p, p + 1)[0])
        sl = slice(offset, offset + g.n_edge[b])
        np.testing.assert_array_equal(g.edges["edge"][sl], edges)
        np.testing.assert_array_equal(g.senders[sl], tr.senders[edges] + b * n)
        np.testing.assert_array_equal(g.receivers[sl], tr.receivers[edges] + b * n)
        np.testing.assert_array_equal(g.nodes["active"][b * n : (b + 1) * n], tr.node_active[p].toarray()[0])
        offset += g.n_edge[b]
    assert (g.edges["active"] == 1).all()


def test_graphs_tuple_all_edges_with_features(tr_random):
    tr = tr_random
    feats = np.random.default_rng(0).normal(size=(tr.n_nodes, 4)).astype(np.float32)
    g = graphs.to_graphs_tuples(tr, [0, 3], feats, edges="all")
    assert g.n_edge.tolist() == [tr.n_edges] * 2
    np.testing.assert_array_equal(g.edges["active"].reshape(2, -1), tr.active[[0, 3]].toarray())
    np.testing.assert_array_equal(g.nodes["features"], np.concatenate([feats, feats]))


def test_static_padding_compiles_once(tr_random):
    tr = tr_random
    sizes = graphs.pad_sizes(tr, batch_size=2)
    traces = []

    @jax.jit
    def messages(g):
        traces.append(1)
        msg = g.edges["active"][:, None] * g.nodes["active"][g.senders][:, None]
        return jax.ops.segment_sum(msg, g.receivers, num_segments=g.nodes["active"].shape[0])

    shapes = set()
    for ps in ([0, 1], [5, 9], [10, 11]):
        g = graphs.to_graphs_tuples(tr, ps, pad=sizes)
        shapes.add(tuple(np.shape(leaf) for leaf in jax.tree_util.tree_leaves(g)))
        mask = np.asarray(jraph.get_graph_padding_mask(g))
        assert mask.tolist() == [True, True] + [False] * (sizes[2] - 2)
        assert g.globals["interval"][:2].tolist() == ps and (g.globals["interval"][2:] == -1).all()
        out = np.asarray(messages(g))
        want = graphs.to_graphs_tuples(tr, ps)
        ref = np.zeros(2 * tr.n_nodes)
        np.add.at(ref, want.receivers, want.nodes["active"][want.senders])
        np.testing.assert_allclose(out[: 2 * tr.n_nodes, 0], ref)
        assert out[2 * tr.n_nodes :].sum() == 0  # padding edges carry active = 0
    assert len(shapes) == 1 and len(traces) == 1
    with pytest.raises(ValidationError, match="too small"):
        graphs.to_graphs_tuples(tr, [0, 1, 2], pad=sizes)


def test_graphs_tuple_bad_interval(tr_random):
    with pytest.raises(ValidationError, match="p_indices"):
        graphs.to_graphs_tuples(tr_random, [0, tr_random.n_intervals])
