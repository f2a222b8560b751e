"""Tests for mesojax.features: structural features against networkx / brute force, activity and location
features against direct loops, robust scaling, and the jraph graph network's symmetries."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import jraph
import networkx as nx
import numpy as np
import pytest
import scipy.sparse

from mesojax import features as F
from mesojax.data import Connectome, ValidationError

GRAPH_CASES = [(seed, n, p) for seed, (n, p) in enumerate(
    [(3, 0.5), (6, 0.3), (9, 0.15), (12, 0.4), (15, 0.7), (18, 0.1), (20, 0.25), (11, 0.95)]
)]


def random_adj(seed: int, n: int, p: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = (rng.random((n, n)) < p).astype(np.int64)
    np.fill_diagonal(a, 0)
    return a


def to_nx(a: np.ndarray) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(range(a.shape[0]))
    g.add_edges_from(zip(*np.nonzero(a)))
    return g


def brute_simplices(a: np.ndarray, max_dim: int) -> tuple[np.ndarray, np.ndarray]:
    n = a.shape[0]
    total = np.zeros(max_dim + 1, np.int64)
    per = np.zeros((n, max_dim + 1), np.int64)
    for k in range(max_dim + 1):
        for tup in itertools.permutations(range(n), k + 1):
            if all(a[tup[i], tup[j]] for i in range(k + 1) for j in range(i + 1, k + 1)):
                total[k] += 1
                per[list(tup), k] += 1
    return total, per


# ----------------------------------------------------------------------------------- adjacency
def test_adjacency_collapses_parallel_synapses_and_drops_self_loops():
    a = F.adjacency([0, 0, 1, 2, 2], [1, 1, 1, 0, 1], 3)
    assert a.toarray().tolist() == [[0, 1, 0], [0, 0, 0], [1, 1, 0]]
    assert a.dtype == np.int32 and (a.data == 1).all()


@pytest.mark.parametrize(
    "mode, expected",
    [("reciprocal", [[0, 1, 1], [1, 0, 0], [0, 0, 0]]),
     ("directed", [[0, 1, 1], [0, 0, 0], [0, 0, 0]]),
     ("drop", [[0, 0, 1], [0, 0, 0], [0, 0, 0]])],
)
def test_adjacency_electrical_modes(mode, expected):
    a = F.adjacency([0, 0], [1, 2], 3, kind=[1, 0], electrical=mode)
    assert a.toarray().tolist() == expected


@pytest.mark.parametrize(
    "kwargs, field, row",
    [(dict(pre=[0, 5], post=[1, 1]), "pre", 1),
     (dict(pre=[0, 1], post=[1, -1]), "post", 1),
     (dict(pre=[0.0, 1.0], post=[1, 0]), "pre", None),
     (dict(pre=[0, 1], post=[1]), "post", None),
     (dict(pre=[0, 1], post=[1, 0], kind=[0, 2]), "kind", 1),
     (dict(pre=[0, 1], post=[1, 0], electrical="both"), "electrical", None)],
)
def test_adjacency_bad_input_names_field_and_row(kwargs, field, row):
    with pytest.raises(ValidationError) as err:
        F.adjacency(n_neurons=3, source="syn.csv", **kwargs)
    assert err.value.source == "syn.csv" and err.value.field == field and err.value.row == row


# ------------------------------------------------------------------------------------- degrees
@pytest.mark.parametrize("seed, n, p", GRAPH_CASES)
def test_degree_features_match_networkx(seed, n, p):
    a = random_adj(seed, n, p)
    g = to_nx(a)
    weights = np.random.default_rng(seed).random((n, n)) * a
    feats, names = F.degree_features(scipy.sparse.csr_matrix(a), scipy.sparse.csr_matrix(weights))
    col = dict(zip(names, feats.T))
    np.testing.assert_array_equal(col["in_degree"], [g.in_degree(i) for i in range(n)])
    np.testing.assert_array_equal(col["out_degree"], [g.out_degree(i) for i in range(n)])
    np.testing.assert_array_equal(col["degree"], [g.degree(i) for i in range(n)])
    expected_recip = [nx.reciprocity(g, i) if g.degree(i) else 0.0 for i in range(n)]
    np.testing.assert_allclose(col["reciprocity"], expected_recip)
    np.testing.assert_array_equal(col["reciprocal_degree"], (a * a.T).sum(1))
    np.testing.assert_allclose(col["in_strength"], weights.sum(0))
    np.testing.assert_allclose(col["out_strength"], weights.sum(1))
    if a.any():  # global reciprocity: the fraction of edges that are reciprocated
        assert col["reciprocal_degree"].sum() / a.sum() == pytest.approx(nx.overall_reciprocity(g))


# -------------------------------------------------------------------------------------- triads
@pytest.mark.parametrize("seed, n, p", GRAPH_CASES)
def test_motif_counts_match_networkx_triadic_census(seed, n, p):
    a = random_adj(seed, n, p)
    counts = F.motif_counts(scipy.sparse.csr_matrix(a))
    assert tuple(counts) == F.TRIAD_NAMES
    assert counts == dict(nx.triadic_census(to_nx(a)))
    assert sum(counts.values()) == math.comb(n, 3)


@pytest.mark.parametrize(
    "a, nonzero",
    [(np.zeros((4, 4)), {"003": 4}),
     (np.ones((4, 4)) - np.eye(4), {"300": 4}),
     (np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]]), {"030C": 1}),
     (np.array([[0, 1, 1], [0, 0, 1], [0, 0, 0]]), {"030T": 1}),
     (np.array([[0, 1], [1, 0]]), {}),  # fewer than three neurons: no triads
     (np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]]), {"012": 1})],  # self-loops are ignored
)
def test_motif_counts_special_graphs(a, nonzero):
    counts = F.motif_counts(a)
    assert {k: v for k, v in counts.items() if v} == nonzero


@pytest.mark.parametrize("seed, n, p", GRAPH_CASES[1:6])
def test_triad_participation_matches_brute_force(seed, n, p):
    a = random_adj(seed, n, p)
    g = to_nx(a)
    expected = np.zeros((n, 16), np.int64)
    for triple in itertools.combinations(range(n), 3):
        expected[list(triple), F.TRIAD_NAMES.index(nx.triad_type(g.subgraph(triple)))] += 1
    part, names = F.triad_participation(a)
    assert names == tuple(f"triad_{c}" for c in F.CONNECTED_TRIADS)
    np.testing.assert_array_equal(part, expected[:, 3:])


@pytest.mark.parametrize("seed, n, p", GRAPH_CASES[3:5])
def test_triad_results_do_not_depend_on_chunking(seed, n, p):
    a = random_adj(seed, n, p)
    whole, _ = F.triad_participation(a)
    one_row_chunks, _ = F.triad_participation(a, work=1)
    np.testing.assert_array_equal(whole, one_row_chunks)
    assert F.motif_counts(a, work=1) == F.motif_counts(a)


def test_triad_participation_is_permutation_equivariant():
    a = random_adj(3, 14, 0.3)
    perm = np.random.default_rng(0).permutation(14)
    part, _ = F.triad_participation(a)
    permuted, _ = F.triad_participation(a[np.ix_(perm, perm)])
    np.testing.assert_array_equal(permuted, part[perm])


# ------------------------------------------------------------------------------------ simplices
@pytest.mark.parametrize("seed, n, p", GRAPH_CASES[:6])
def test_directed_clique_counts_match_brute_force(seed, n, p):
    a = random_adj(seed, n, p + 0.2)
    total, per = brute_simplices(a, 3)
    got = F.directed_clique_counts(scipy.sparse.csr_matrix(a), max_dim=3)
    np.testing.assert_array_equal(got.total, total)
    np.testing.assert_array_equal(got.per_neuron, per)
    np.testing.assert_array_equal(got.per_neuron.sum(0), np.arange(1, 5) * got.total)
    chunked = F.directed_clique_counts(a, max_dim=3, work=1)
    np.testing.assert_array_equal(chunked.total, total)
    np.testing.assert_array_equal(chunked.per_neuron, per)


@pytest.mark.parametrize("seed, n, p", GRAPH_CASES)
def test_low_dimensional_simplices_agree_with_networkx(seed, n, p):
    a = random_adj(seed, n, p)
    g = to_nx(a)
    census = nx.triadic_census(g)
    # transitive orderings per triad class: 030T 1, 120C 1, 120D 2, 120U 2, 210 3, 300 6
    weights = {"030T": 1, "120C": 1, "120D": 2, "120U": 2, "210": 3, "300": 6}
    got = F.directed_clique_counts(a, max_dim=2)
    assert got.total.tolist() == [n, g.number_of_edges(), sum(w * census[k] for k, w in weights.items())]
    np.testing.assert_array_equal(got.per_neuron[:, 1], [g.degree(i) for i in range(n)])


@pytest.mark.parametrize("n", [1, 4, 6])
def test_complete_graph_simplices_are_all_orderings(n):
    got = F.directed_clique_counts(np.ones((n, n)) - np.eye(n), max_dim=4)
    expected = [math.perm(n, k + 1) for k in range(5)]
    assert got.total.tolist() == expected


def test_directed_clique_counts_rejects_bad_dimension():
    with pytest.raises(ValidationError, match="max_dim"):
        F.directed_clique_counts(np.zeros((3, 3)), max_dim=-1)


# ------------------------------------------------------------------------------ neuron features
@pytest.fixture(scope="module")
def synapse_table():
    rng = np.random.default_rng(7)
    n, e = 16, 70
    pre, post = rng.integers(0, n, e), rng.integers(0, n, e)
    kind = (rng.random(e) < 0.2).astype(np.int8)
    weight = rng.random(e).astype(np.float32) * 3
    return n, pre, post, kind, weight


@pytest.mark.parametrize("electrical", F.ELECTRICAL_MODES)
def test_neuron_features_columns_match_their_definitions(synapse_table, electrical):
    n, pre, post, kind, weight = synapse_table
    feats, names = F.neuron_features(pre, post, n, weight=weight, kind=kind, electrical=electrical, max_dim=3)
    assert feats.shape == (n, len(names)) and feats.dtype == np.float32
    assert names[:7] == ("in_degree", "out_degree", "degree", "reciprocal_degree", "reciprocity",
                         "in_strength", "out_strength")
    assert names[-2:] == ("simplex_2", "simplex_3")
    col = dict(zip(names, feats.T))
    a = F.adjacency(pre, post, n, kind=kind, electrical=electrical).toarray()
    elec = kind == 1
    if electrical == "drop":
        p, q, w = pre[~elec], post[~elec], weight[~elec]
    elif electrical == "directed":
        p, q, w = pre, post, weight
    else:
        p, q, w = (np.r_[pre, post[elec]], np.r_[post, pre[elec]], np.r_[weight, weight[elec]])
    strength_in, strength_out = np.zeros(n), np.zeros(n)
    for i, j, x in zip(p, q, w):
        if i != j:
            strength_out[i] += x
            strength_in[j] += x
    np.testing.assert_allclose(col["out_strength"], strength_out, rtol=1e-5)
    np.testing.assert_allclose(col["in_strength"], strength_in, rtol=1e-5)
    np.testing.assert_array_equal(col["out_degree"], a.sum(1))
    part, _ = F.triad_participation(a)
    np.testing.assert_array_equal(feats[:, 7:20], part)
    _, per = brute_simplices(a, 3)
    np.testing.assert_array_equal(col["simplex_3"], per[:, 3])


def test_neuron_features_optional_blocks_and_bad_weight(synapse_table):
    n, pre, post, _, weight = synapse_table
    feats, names = F.neuron_features(pre, post, n, motifs=False, max_dim=1)
    assert names == ("in_degree", "out_degree", "degree", "reciprocal_degree", "reciprocity",
                     "in_strength", "out_strength")
    np.testing.assert_array_equal(feats[:, 5], np.bincount(post[pre != post], minlength=n))
    bad = weight.copy()
    bad[4] = -1.0
    with pytest.raises(ValidationError) as err:
        F.neuron_features(pre, post, n, weight=bad)
    assert err.value.field == "weight" and err.value.row == 4


def test_connectome_features_use_connectome_fields(synapse_table):
    n, pre, post, kind, weight = synapse_table
    conn = Connectome(
        ids=np.arange(n), xyz=np.zeros((n, 3)), cell_type=None, pre=pre, post=post,
        strength=weight[:, None], strength_names=("size",), kind=kind, source="toy",
    )
    got, names = F.connectome_features(conn, weight="size", max_dim=2)
    expected, expected_names = F.neuron_features(pre, post, n, weight=weight, kind=kind, max_dim=2)
    assert names == expected_names
    np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------------------- activity features
def test_activity_features_match_direct_loops():
    rng = np.random.default_rng(3)
    n, e, p = 9, 25, 30
    senders, receivers = rng.integers(0, n, e), rng.integers(0, n, e)
    active = rng.random((p, e)) < 0.15
    feats, names = F.activity_features(senders, receivers, scipy.sparse.csr_matrix(active), n)
    assert names == F.ACTIVITY_NAMES and feats.shape == (n, 8)
    rate = active.mean(0)
    for i in range(n):
        for side, ends in (("out", senders), ("in", receivers)):
            edges = np.flatnonzero(ends == i)
            col = lambda name: feats[i, names.index(f"act_{side}_{name}")]  # noqa: E731
            assert col("interval_frac") == pytest.approx(active[:, edges].any(1).mean())
            assert col("degree_mean") == pytest.approx(active[:, edges].sum(1).mean())
            assert col("edge_rate_mean") == pytest.approx(rate[edges].mean() if len(edges) else 0.0)
            assert col("edge_rate_max") == pytest.approx(rate[edges].max() if len(edges) else 0.0)
    dense, _ = F.activity_features(senders, receivers, active, n)
    np.testing.assert_array_equal(dense, feats)


def test_activity_features_reject_mismatched_mask():
    with pytest.raises(ValidationError, match=r"expected shape \[P, 3\]"):
        F.activity_features([0, 1, 2], [1, 2, 0], np.zeros((4, 2), bool), 3)


# ---------------------------------------------------------------------------- location features
@pytest.fixture(scope="module")
def locations():
    rng = np.random.default_rng(11)
    n, n_loc, k = 20, 6, 7
    members = np.stack([rng.permutation(n)[:k] for _ in range(n_loc)])
    mask = np.arange(k)[None, :] < rng.integers(0, k + 1, n_loc)[:, None]
    mask[0] = False  # an empty location
    mask[1] = True
    members = np.where(mask, members, 0)
    return n, members, mask


def test_location_features_match_direct_loops(locations):
    n, members, mask = locations
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(n, 3))
    feats[members[1, 0], 2] = np.nan  # ignored by pooling
    pre, post = rng.integers(0, n, 120), rng.integers(0, n, 120)
    a = F.adjacency(pre, post, n).toarray()
    out, names = F.location_features(
        feats, members, mask, names=("x", "y", "z"), pre=pre, post=post, chunk=20
    )
    assert names == ("mean_x", "mean_y", "mean_z", "max_x", "max_y", "max_z", "n_members",
                     "internal_edges", "internal_density")
    for loc in range(len(members)):
        m = members[loc][mask[loc]]
        vals = feats[m]
        row = dict(zip(names, out[loc]))
        for j, f in enumerate("xyz"):
            good = vals[:, j][~np.isnan(vals[:, j])]
            assert row[f"mean_{f}"] == pytest.approx(good.mean() if len(good) else 0.0, abs=1e-6)
            assert row[f"max_{f}"] == pytest.approx(good.max() if len(good) else 0.0, abs=1e-6)
        sub = a[np.ix_(m, m)].sum()
        assert row["n_members"] == len(m) and row["internal_edges"] == sub
        assert row["internal_density"] == pytest.approx(sub / (len(m) * (len(m) - 1)) if len(m) > 1 else 0.0)


@pytest.mark.parametrize(
    "change, field, row",
    [("repeat", "members", 1), ("range", "members", 1), ("mask_dtype", "member_mask", None)],
)
def test_location_features_bad_tables(locations, change, field, row):
    n, members, mask = locations
    members, mask = members.copy(), mask.copy()
    if change == "repeat":
        members[1, 3] = members[1, 5]
    elif change == "range":
        members[1, 2] = n
    else:
        mask = mask.astype(np.int8)
    with pytest.raises(ValidationError) as err:
        F.location_features(np.zeros((n, 2)), members, mask)
    assert err.value.field == field and err.value.row == row


# ----------------------------------------------------------------------------------- standardize
def test_standardize_is_robust_nan_safe_and_reusable():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(2001, 4))
    x[:, 1] = 7.0  # constant column
    x[:, 2] = (rng.random(2001) < 0.1) * rng.integers(1, 5, 2001)  # mostly-zero count: IQR 0
    x[5, 0] = 1e9  # outlier
    x[10, 3] = np.nan
    stats = F.robust_stats(x)
    z = F.standardize(x, stats)
    assert np.isfinite(z).all() and z.dtype == np.float32
    assert stats.center[0] == pytest.approx(3.0, abs=0.2) and stats.scale[0] == pytest.approx(2.0, rel=0.1)
    assert np.median(np.delete(z[:, 0], 5)) == pytest.approx(0.0, abs=0.1)
    assert (z[:, 1] == 0).all() and stats.scale[1] == 1.0
    assert stats.scale[2] > 0 and np.unique(z[:, 2]).size == np.unique(x[:, 2]).size
    assert z[10, 3] == 0.0
    np.testing.assert_allclose(F.standardize(x[:50], stats), z[:50])
    all_nan = F.robust_stats(np.full((3, 1), np.nan))
    assert all_nan.center.tolist() == [0.0] and all_nan.scale.tolist() == [1.0]


# --------------------------------------------------------------------------------- graph network
HIDDEN, OUT = 8, 5


@pytest.fixture(scope="module")
def gnn():
    net = F.make_graph_network(hidden=HIDDEN, n_layers=2, out_dim=OUT)
    params = jax.jit(net.init, static_argnums=(1, 2))(jax.random.key(0), 3, 2)
    return net, params, jax.jit(net.apply)


def make_graph(seed: int, n: int) -> jraph.GraphsTuple:
    rng = np.random.default_rng(seed)
    a = random_adj(seed, n, 0.3)
    return F.to_graphs_tuple(a, rng.normal(size=(n, 3)), rng.normal(size=(int(a.sum()), 2)))


def test_graph_network_is_permutation_equivariant_and_direction_aware(gnn):
    net, params, apply = gnn
    g = make_graph(1, 9)
    perm = np.random.default_rng(5).permutation(9)
    inverse = np.argsort(perm)  # old node i is new node inverse[i]
    permuted = g._replace(nodes=g.nodes[perm], senders=jnp.asarray(inverse)[g.senders],
                          receivers=jnp.asarray(inverse)[g.receivers])
    out = apply(params, g)
    assert out.shape == (9, OUT)
    np.testing.assert_allclose(apply(params, permuted), out[perm], atol=1e-5)
    reversed_edges = g._replace(senders=g.receivers, receivers=g.senders)
    assert not np.allclose(apply(params, reversed_edges), out, atol=1e-3)  # direction matters


def test_graph_network_batched_and_padded_graphs_match_separate_ones(gnn):
    _, params, apply = gnn
    graphs = [make_graph(2, 7), make_graph(3, 10)]
    batch = jraph.batch(graphs)
    padded = jraph.pad_with_graphs(batch, n_node=20, n_edge=60, n_graph=3)
    out_batch = apply(params, batch)
    out_padded = apply(params, padded)
    np.testing.assert_allclose(out_padded[:17], out_batch, atol=1e-5)
    np.testing.assert_allclose(out_batch[:7], apply(params, graphs[0]), atol=1e-5)
    np.testing.assert_allclose(out_batch[7:], apply(params, graphs[1]), atol=1e-5)


def test_graph_network_gradients_are_finite_and_nonzero(gnn):
    net, params, _ = gnn
    g = make_graph(4, 8)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(net.apply(p, g) ** 2)))(params)
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(bool(jnp.isfinite(x).all()) for x in leaves)
    assert all(float(jnp.abs(x).sum()) > 0 for x in jax.tree_util.tree_leaves(grads["layers"]))


def test_graph_network_without_edge_features_jit_matches_eager_and_bad_arguments():
    net = F.make_graph_network(hidden=4, n_layers=1, out_dim=2, mean_aggregation=False)
    a = np.array([[0, 1, 0], [0, 0, 1], [0, 0, 0]])
    g = F.to_graphs_tuple(a, np.eye(3))
    params = net.init(jax.random.key(1), node_dim=3)
    out = net.apply(params, g)
    assert out.shape == (3, 2) and bool(jnp.isfinite(out).all())
    np.testing.assert_allclose(jax.jit(net.apply)(params, g), out, atol=1e-6)
    # One round of messages: node 0 cannot see node 2, two hops away; node 1 can.
    lonely = g._replace(nodes=g.nodes.at[2].set(5.0))
    moved = net.apply(params, lonely)
    np.testing.assert_allclose(moved[0], out[0], atol=1e-6)
    assert not np.allclose(moved[1], out[1], atol=1e-4)
    with pytest.raises(ValueError, match="edge features"):
        net.apply(net.init(jax.random.key(1), node_dim=3, edge_dim=2), g)
    with pytest.raises(ValueError, match="n_layers"):
        F.make_graph_network(n_layers=0)
    with pytest.raises(ValidationError, match="node_features"):
        F.to_graphs_tuple(a, np.eye(4))
