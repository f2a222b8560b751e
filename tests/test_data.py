"""Tests for the core data model: Connectome, Recording, validation and registration."""

import dataclasses
import doctest
import warnings

import networkx as nx
import numpy as np
import pytest

import mesojax.data.connectome
import mesojax.data.recording
import mesojax.data.registration
import mesojax.data.validation
from mesojax.data import (
    CHEMICAL,
    ELECTRICAL,
    Connectome,
    Recording,
    ValidationError,
    register_by_id,
    register_by_position,
)


def random_connectome(n=30, e=120, seed=0, str_ids=False):
    rng = np.random.default_rng(seed)
    ids = np.array([f"n{i}" for i in range(n)]) if str_ids else rng.permutation(10_000)[:n] + 1
    return Connectome(
        ids=ids,
        xyz=rng.uniform(0, 100, (n, 3)),
        cell_type=rng.choice(["E", "I"], n),
        pre=rng.integers(0, n, e),
        post=rng.integers(0, n, e),
        syn_xyz=rng.uniform(0, 100, (e, 3)),
        strength=rng.uniform(0, 2, (e, 2)),
        strength_names=("size", "vesicles"),
        sign=rng.choice([-1, 0, 1], e),
        kind=rng.choice([CHEMICAL, ELECTRICAL], e),
        source="random",
    )


@pytest.mark.parametrize(
    "module",
    [mesojax.data.connectome, mesojax.data.recording, mesojax.data.registration, mesojax.data.validation],
)
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.failed == 0


# ------------------------------------------------------------------ connectome


@pytest.mark.parametrize("str_ids", [False, True])
def test_connectome_dtypes_and_sizes(str_ids):
    c = random_connectome(str_ids=str_ids)
    assert c.n_neurons == 30 and c.n_synapses == 120
    assert c.xyz.dtype == np.float32 and c.pre.dtype == np.int32 and c.sign.dtype == np.int8
    assert c.ids.dtype.kind == ("U" if str_ids else "i")
    np.testing.assert_array_equal(c.index(c.ids[[3, 1, 7]]), [3, 1, 7])


@pytest.mark.parametrize("weight", ["count", "size"])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("kind", [None, CHEMICAL, ELECTRICAL])
def test_weighted_matches_networkx_multigraph(weight, signed, kind):
    c = random_connectome()
    w = c.synapse_weight(weight, signed)
    g = nx.MultiDiGraph()
    g.add_nodes_from(range(c.n_neurons))
    for e in range(c.n_synapses):
        if kind is None or c.kind[e] == kind:
            g.add_edge(int(c.pre[e]), int(c.post[e]), w=float(w[e]))
    expected = np.zeros((c.n_neurons, c.n_neurons))
    for i, j, data in g.edges(data=True):
        expected[i, j] += data["w"]
    np.testing.assert_allclose(c.weighted(weight=weight, signed=signed, kind=kind).toarray(), expected, atol=1e-5)


def test_ball_selects_exactly_the_neurons_within_radius():
    c = random_connectome(n=200, e=2000, seed=3)
    center, radius = np.array([50.0, 40.0, 60.0]), 30.0
    sub, rows = c.ball(center, radius)
    inside = np.linalg.norm(c.xyz - center, axis=1) <= radius
    np.testing.assert_array_equal(np.sort(rows), np.flatnonzero(inside))
    np.testing.assert_array_equal(sub.ids, c.ids[rows])
    # Synapses kept are exactly those with both endpoints inside, in original order.
    keep = inside[c.pre] & inside[c.post]
    assert sub.n_synapses == keep.sum()
    np.testing.assert_array_equal(sub.ids[sub.pre], c.ids[c.pre[keep]])
    np.testing.assert_array_equal(sub.ids[sub.post], c.ids[c.post[keep]])
    np.testing.assert_array_equal(sub.syn_xyz, c.syn_xyz[keep])
    np.testing.assert_array_equal(sub.strength, c.strength[keep])


def test_from_id_table_resolves_ids():
    c = Connectome.from_id_table(
        ids=[7, 3, 9], xyz=np.zeros((3, 3)), cell_type=None, pre_ids=[3, 9, 7], post_ids=[9, 7, 3]
    )
    np.testing.assert_array_equal(c.pre, [1, 2, 0])
    np.testing.assert_array_equal(c.post, [2, 0, 1])
    assert "3 neurons, 3 synapses" in c.summary()


BASE = dict(ids=[1, 2, 3], xyz=np.zeros((3, 3)), cell_type=["a", "b", "c"], pre=[0, 1], post=[1, 2])


@pytest.mark.parametrize(
    "change, field, row, fragment",
    [
        (dict(ids=[1, 2, 1]), "ids", 2, "duplicate value 1 (first seen at row 0)"),
        (dict(xyz=[[0, 0, 0], [0, np.nan, 0], [0, 0, 0]]), "xyz", 1, "non-finite"),
        (dict(xyz=[[0, 0, 0], [0, 0, 0], [np.inf, 0, 0]]), "xyz", 2, "non-finite"),
        (dict(xyz=[[0, 0, 0], [np.nan, np.nan, 0], [np.nan] * 3]), "xyz", 1, "non-finite"),
        (dict(xyz=[[np.nan] * 3, [0, 0, 0], [np.inf] * 3]), "xyz", 2, "non-finite"),
        (dict(xyz=[[np.nan] * 3, [np.nan, np.nan, np.inf], [0, 0, 0]]), "xyz", 1, "non-finite"),
        (dict(xyz=np.zeros((3, 2))), "xyz", None, "expected shape [3, 3], got [3, 2]"),
        (dict(xyz=[["a", "b", "c"]] * 3), "xyz", None, "numeric"),
        (dict(pre=[0, 5]), "pre", 1, "out of range"),
        (dict(post=[-1, 0]), "post", 0, "out of range"),
        (dict(pre=[0.0, 1.0]), "pre", None, "expected integer neuron indices, got dtype float64"),
        (dict(post=[1]), "post", None, "does not match 'pre' length 2"),
        (dict(sign=[1, 2]), "sign", 1, "not in allowed set"),
        (dict(kind=[0, 3]), "kind", 1, "not in allowed set"),
        (dict(syn_xyz=[[0, 0, 0], [0, 0, np.nan]]), "syn_xyz", 1, "non-finite"),
        (dict(strength=[1.0, -2.0]), "strength", 1, "negative"),
        (dict(strength=[1.0, 2.0], strength_names=("a", "b")), "strength_names", None, "2 names for 1"),
        (dict(cell_type=["a"]), "cell_type", None, "expected shape [3]"),
    ],
)
def test_connectome_validation_errors(change, field, row, fragment):
    with pytest.raises(ValidationError) as info:
        Connectome(**{**BASE, **change, "source": "test.json"})
    err = info.value
    assert (err.source, err.field, err.row) == ("test.json", field, row), str(err)
    assert fragment in str(err)
    assert str(err).startswith("test.json: field ")


def _with_unplaced(c, rows):
    """`c` with the positions of `rows` made unknown (all-NaN)."""
    xyz = c.xyz.copy()
    xyz[rows] = np.nan
    return dataclasses.replace(c, xyz=xyz)


@pytest.mark.parametrize("rows", [[], [0], [3, 7, 29], list(range(30))])
def test_unplaced_neurons_are_accepted(rows):
    c = _with_unplaced(random_connectome(), rows)
    want = np.ones(30, bool)
    want[rows] = False
    assert c.placed.dtype == bool
    np.testing.assert_array_equal(c.placed, want)
    np.testing.assert_array_equal(np.isnan(c.xyz).all(1), ~want)
    # select keeps the unknown positions; placed follows the rows.
    order = np.arange(30)[::-1]
    np.testing.assert_array_equal(c.select(order).placed, want[order])
    text = c.summary()
    assert (f"{len(rows)} unplaced" in text) == bool(rows) and "nan" not in text
    if len(rows) < 30:  # the extent is over the placed neurons only
        lo = c.xyz[want].min(0)
        assert f"x[{lo[0]:.1f}," in text


@pytest.mark.parametrize("rows", [[0, 5], list(range(0, 200, 3))])
def test_ball_never_selects_unplaced_neurons(rows):
    full = random_connectome(n=200, e=2000, seed=3)
    c = _with_unplaced(full, rows)
    center, radius = np.array([50.0, 40.0, 60.0]), 30.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sub, got = c.ball(center, radius)
    _, want = full.ball(center, radius)
    np.testing.assert_array_equal(got, np.setdiff1d(want, rows))
    assert sub.placed.all()
    # A ball holding everything still leaves the unplaced neurons out.
    _, every = c.ball(center, 1e6)
    np.testing.assert_array_equal(every, np.flatnonzero(c.placed))


def test_check_positions():
    xyz = np.array([[0, 0, 0], [np.nan] * 3, [1, 2, 3]], np.float32)
    assert mesojax.data.connectome.check_positions("s", "xyz", xyz).tolist() == [True, False, True]
    xyz[2, 1] = np.nan
    with pytest.raises(ValidationError, match=r"s: field 'xyz', row 2: non-finite value \[1.0, nan, 3.0\]"):
        mesojax.data.connectome.check_positions("s", "xyz", xyz)


@pytest.mark.parametrize(
    "pre, post, field, row, fragment",
    [
        (np.array([0.0, 1.0]), [1, 2], "pre", None, "expected integer neuron indices, got dtype float64"),
        ([0, 1], np.array([1, 2], np.float32), "post", None, "got dtype float32"),
        ([True, False], [1, 2], "pre", None, "got dtype bool"),
        ([[0, 1]], [[1, 2]], "pre", None, "expected shape [*], got [1, 2]"),
        ([0, 1], [1], "post", None, "length 1 does not match 'pre' length 2"),
        ([0, 3, 9], [1, 2, 0], "pre", 1, "index 3 out of range for 3 neurons"),
        ([0, 1, 2], [2, -1, 0], "post", 1, "index -1 out of range for 3 neurons"),
    ],
)
def test_check_edges_names_source_field_and_row(pre, post, field, row, fragment):
    with pytest.raises(ValidationError) as info:
        mesojax.data.validation.check_edges("edges.csv", pre, post, 3)
    err = info.value
    assert (err.source, err.field, err.row) == ("edges.csv", field, row), str(err)
    assert fragment in str(err)


@pytest.mark.parametrize("dtype", [np.int8, np.uint16, np.int32, np.int64, np.uint64])
def test_check_edges_returns_int64_copies_of_valid_edges(dtype):
    pre, post = np.array([2, 0, 1], dtype), np.array([0, 0, 2], dtype)
    got_pre, got_post = mesojax.data.validation.check_edges("edges.csv", pre, post, 3)
    assert got_pre.dtype == got_post.dtype == np.int64
    assert got_pre.tolist() == [2, 0, 1] and got_post.tolist() == [0, 0, 2]
    empty = mesojax.data.validation.check_edges("edges.csv", [], [], 3)  # np.asarray([]) is float64
    assert [e.dtype for e in empty] == [np.int64, np.int64] and [e.size for e in empty] == [0, 0]


def test_unknown_synapse_endpoint_names_row_and_id():
    with pytest.raises(ValidationError, match=r"syn.csv: field 'post', row 2: unknown neuron id 'Z'"):
        Connectome.from_id_table(
            ids=["A", "B"], xyz=np.zeros((2, 3)), cell_type=None,
            pre_ids=["A", "B", "A"], post_ids=["B", "A", "Z"], source="syn.csv",
        )


# ------------------------------------------------------------------ recording


def make_recording(t=50, n=4, **kw):
    rng = np.random.default_rng(0)
    return Recording(traces=rng.normal(size=(t, n)), timestamps=np.arange(t) * 0.5, **kw)


def test_recording_window_and_fields():
    r = make_recording(
        stimulus=np.ones(50), behaviour=np.zeros((50, 2)), behaviour_names=("v", "h"),
        modes=np.r_[np.zeros(25, int), np.ones(25, int)], mode_names=("fwd", "rev"),
        neuron_ids=["A", "", "B", ""],
    )
    assert r.rate_hz == pytest.approx(2.0)
    w = r.window(20, 30)
    np.testing.assert_array_equal(w.traces, r.traces[20:30])
    assert w.stimulus.shape == (10, 1) and w.modes.tolist() == [0] * 5 + [1] * 5
    assert "identified sources: 2/4" in r.summary() and "fwd=25, rev=25" in r.summary()
    sel = r.select_sources([2, 0])
    assert sel.neuron_ids.tolist() == ["B", "A"]
    np.testing.assert_array_equal(sel.traces, r.traces[:, [2, 0]])


class CountingArray:
    """A lazy [T, N] array that records which time rows were read."""

    def __init__(self, data):
        self._data, self.shape, self.dtype, self.rows_read = data, data.shape, data.dtype, 0

    def __getitem__(self, index):
        out = self._data[index]
        self.rows_read += out.shape[0]
        return out


def test_lazy_traces_read_only_the_window():
    data = np.random.default_rng(1).normal(size=(1000, 3)).astype(np.float32)
    lazy = CountingArray(data)
    r = Recording(traces=lazy, timestamps=np.arange(1000.0))
    assert r.is_lazy and lazy.rows_read == 0
    np.testing.assert_array_equal(r.window(100, 110).traces, data[100:110])
    assert lazy.rows_read == 10


@pytest.mark.parametrize(
    "change, field, row, fragment",
    [
        (dict(timestamps=np.arange(49.0)), "timestamps", None, "length 49 does not match traces length T=50"),
        (dict(timestamps=np.r_[np.arange(10.0), 5.0, np.arange(11.0, 50.0)]), "timestamps", 10, "not strictly"),
        (dict(timestamps=np.r_[np.arange(10.0), np.nan, np.arange(11.0, 50.0)]), "timestamps", 10, "non-finite"),
        (dict(traces=np.zeros((50,))), "traces", None, "expected shape [*, *]"),
        (dict(traces=np.full((50, 4), "x")), "traces", None, "numeric"),
        (dict(positions=np.zeros((3, 3))), "positions", None, "expected shape [4, 3]"),
        (dict(positions=np.r_[np.zeros((3, 3)), [[np.nan, 0, 0]]]), "positions", 3, "non-finite"),
        (dict(neuron_ids=["A", "", "B", "A"]), "neuron_ids", 3, "duplicate value 'A'"),
        (dict(neuron_ids=[1, -1, 2]), "neuron_ids", None, "expected shape [4]"),
        (dict(stimulus=np.zeros((40, 1))), "stimulus", None, "expected shape [50, *]"),
        (dict(behaviour=np.r_[np.zeros((7, 1)), [[np.inf]], np.zeros((42, 1))]), "behaviour", 7, "infinite"),
        (dict(modes=np.zeros(50, int)), "mode_names", None, "without mode_names"),
        (dict(modes=np.r_[np.zeros(49, int), 2], mode_names=("a", "b")), "modes", 49, "not in allowed"),
        (dict(rate_hz=-1.0), "rate_hz", None, "positive"),
    ],
)
def test_recording_validation_errors(change, field, row, fragment):
    kw = dict(traces=np.zeros((50, 4)), timestamps=np.arange(50.0), source="rec.h5")
    with pytest.raises(ValidationError) as info:
        Recording(**{**kw, **change})
    err = info.value
    assert (err.source, err.field, err.row) == ("rec.h5", field, row), str(err)
    assert fragment in str(err)


def test_window_out_of_range():
    with pytest.raises(ValidationError, match="not inside"):
        make_recording().window(40, 60)


# ------------------------------------------------------------------ registration


def test_register_by_id_reports_unidentified_and_unknown():
    c = random_connectome(str_ids=True)
    r = make_recording(neuron_ids=["n5", "", "zzz", "n0"])
    reg = register_by_id(r, c)
    assert reg.neuron.tolist() == [5, -1, -1, 0]
    assert reg.unmatched_reason[1] == "source has no neuron id"
    assert "not in connectome" in reg.unmatched_reason[2]
    assert "registered 2/4 sources by id" in reg.report()
    with pytest.raises(ValidationError, match=r"field 'neuron_ids', row 2: id 'zzz' is not a neuron"):
        register_by_id(r, c, strict=True)


def test_register_by_position_one_to_one_and_within_tolerance():
    rng = np.random.default_rng(4)
    c = random_connectome(n=100, e=10, seed=4)
    perm = rng.permutation(100)[:60]
    positions = c.xyz[perm] + rng.normal(scale=0.1, size=(60, 3))
    positions[-5:] += 500.0  # far away: must stay unmatched
    r = Recording(traces=np.zeros((5, 60)), timestamps=np.arange(5.0), positions=positions)
    reg = register_by_position(r, c, tol_um=1.0)
    np.testing.assert_array_equal(reg.neuron[:55], perm[:55])
    assert (reg.neuron[55:] == -1).all()
    matched = reg.neuron[reg.neuron >= 0]
    assert len(np.unique(matched)) == len(matched)
    assert np.nanmax(reg.distance_um) <= 1.0
    assert "no neuron within" in reg.report()


def test_register_by_position_conflict_goes_to_the_closer_source():
    c = Connectome(ids=[1], xyz=[[0, 0, 0]], cell_type=None, pre=[], post=[])
    r = Recording(traces=np.zeros((2, 2)), timestamps=[0.0, 1.0], positions=[[0.5, 0, 0], [0, 0, 0]])
    reg = register_by_position(r, c, tol_um=1.0)
    assert reg.neuron.tolist() == [-1, 0]
    assert reg.distance_um[1] == 0.0
    assert "claimed by closer sources" in reg.unmatched_reason[0]


def test_register_by_position_skips_neurons_without_a_position():
    c = Connectome(ids=[1, 2, 3], xyz=[[np.nan] * 3, [0, 0, 0], [9, 0, 0]], cell_type=None, pre=[], post=[])
    r = Recording(traces=np.zeros((2, 2)), timestamps=[0.0, 1.0], positions=[[9.2, 0, 0], [0.1, 0, 0]])
    reg = register_by_position(r, c, tol_um=1.0)
    assert reg.neuron.tolist() == [2, 1]  # indices of the full connectome, the unplaced row never matched
