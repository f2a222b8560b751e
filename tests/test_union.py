"""Tests for mesojax.data.union: the circuit of a recording's sources, and disjoint unions of circuits."""

import numpy as np
import pytest

from mesojax import spatial
from mesojax.data import Connectome, Recording, ValidationError
from mesojax.data.union import UNIDENTIFIED, disjoint_union, source_circuit

# A connectome of 5 neurons and 6 synapses (with positions, strengths, signs and kinds).
IDS = ["A", "B", "C", "D", "E"]
XYZ = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [20, 5, 5], [3, 4, 5]], np.float32)
TYPES = ["sensory", "inter", "motor", "motor", "inter"]
PRE = ["A", "B", "C", "D", "B", "E"]
POST = ["B", "C", "D", "A", "A", "C"]
SIGN = np.array([1, -1, 0, 1, 1, -1], np.int8)
KIND = np.array([0, 1, 0, 0, 1, 0], np.int8)
STRENGTH = np.arange(1, 7, dtype=np.float32)[:, None]
SYN_XYZ = np.arange(18, dtype=np.float32).reshape(6, 3)

# Recording columns: C, unidentified, A, "Z" (not in the connectome), B, unidentified.
REC_IDS = ["C", "", "A", "Z", "B", ""]
REGISTERED = np.array([True, False, True, False, True, False])


def _connectome(**kw):
    return Connectome.from_id_table(
        IDS, XYZ, TYPES, PRE, POST, sign=SIGN, kind=KIND, strength=STRENGTH, strength_names=("count",),
        syn_xyz=SYN_XYZ, source="toy-connectome", **kw)


def _recording(t=6, **kw):
    rng = np.random.default_rng(t)
    return Recording(traces=rng.normal(size=(t, len(REC_IDS))).astype(np.float32),
                     timestamps=np.arange(t) / 2.0, neuron_ids=REC_IDS, source="toy-recording", **kw)


@pytest.fixture(scope="module")
def circuit():
    rec = _recording()
    circ, renamed, report = source_circuit(rec, _connectome())
    return dict(rec=rec, circuit=circ, renamed=renamed, report=report)


# --------------------------------------------------------------------------------------- source_circuit


def test_source_circuit_ids_positions_and_cell_types(circuit):
    c = circuit["circuit"]
    assert c.n_neurons == len(REC_IDS)
    assert c.ids.tolist() == ["C", "unidentified_1", "A", "Z", "B", "unidentified_5"]
    np.testing.assert_array_equal(c.placed, REGISTERED)
    index = {name: IDS.index(name) for name in ("C", "A", "B")}
    for col, name in [(0, "C"), (2, "A"), (4, "B")]:
        np.testing.assert_array_equal(c.xyz[col], XYZ[index[name]])
        assert c.cell_type[col] == TYPES[index[name]]
    for col in (1, 3, 5):
        assert np.isnan(c.xyz[col]).all()
        assert c.cell_type[col] == UNIDENTIFIED


def test_source_circuit_keeps_exactly_the_synapses_among_registered_sources(circuit):
    c = circuit["circuit"]
    source_of = {"C": 0, "A": 2, "B": 4}
    kept = [e for e, (p, q) in enumerate(zip(PRE, POST)) if p in source_of and q in source_of]
    assert kept == [0, 1, 4]  # A->B, B->C, B->A; C->D, D->A and E->C have an unrecorded end
    assert c.pre.tolist() == [source_of[PRE[e]] for e in kept]
    assert c.post.tolist() == [source_of[POST[e]] for e in kept]
    np.testing.assert_array_equal(c.sign, SIGN[kept])
    np.testing.assert_array_equal(c.kind, KIND[kept])
    np.testing.assert_array_equal(c.strength, STRENGTH[kept])
    np.testing.assert_array_equal(c.syn_xyz, SYN_XYZ[kept])
    assert c.strength_names == ("count",)
    # No synapse touches an unregistered source.
    assert REGISTERED[c.pre].all() and REGISTERED[c.post].all()


def test_source_circuit_recording_is_renamed_one_to_one(circuit):
    rec, renamed, c = circuit["rec"], circuit["renamed"], circuit["circuit"]
    assert renamed.neuron_ids.tolist() == c.ids.tolist()
    assert renamed.n_sources == c.n_neurons
    np.testing.assert_array_equal(renamed.traces, rec.traces)
    np.testing.assert_array_equal(renamed.timestamps, rec.timestamps)
    assert renamed.rate_hz == rec.rate_hz


def test_source_circuit_report_notes_what_was_left_out(circuit):
    report = circuit["report"]
    text = "\n".join(report.notes)
    assert "registered 3/6 sources by id" in text
    assert "1 identified sources are not in the connectome" in text and "Z" in text
    assert "2 unidentified sources are kept without position" in text
    assert "3 of 6 connectome synapses" in text
    assert report.excluded["sources_not_in_connectome"] == ("Z",)
    assert {1, 5} <= set(report.excluded["sources_without_position"])


def test_source_circuit_all_registered_has_no_unplaced_neurons():
    rec = Recording(traces=np.zeros((3, 2)), timestamps=np.arange(3.0), neuron_ids=["B", "A"])
    c, renamed, report = source_circuit(rec, _connectome())
    assert c.ids.tolist() == ["B", "A"] and c.placed.all()
    assert (c.pre.tolist(), c.post.tolist()) == ([1, 0], [0, 1])  # A->B and B->A
    assert "sources_not_in_connectome" not in report.excluded
    assert "sources_without_position" not in report.excluded


def test_source_circuit_integer_ids_with_unidentified_sources():
    c = Connectome(ids=[10, 11, 12], xyz=XYZ[:3], cell_type=None, pre=[0], post=[1])
    rec = Recording(traces=np.zeros((3, 4)), timestamps=np.arange(3.0), neuron_ids=[11, -1, 10, -1])
    circ, _, report = source_circuit(rec, c)
    assert circ.ids.tolist() == ["11", "unidentified_1", "10", "unidentified_3"]
    assert "sources_not_in_connectome" not in report.excluded
    assert report.excluded["sources_without_position"] == (1, 3)


def test_source_circuit_generated_names_never_collide_with_real_ids():
    c = Connectome(ids=["A", "unidentified_1"], xyz=XYZ[:2], cell_type=None, pre=[], post=[])
    rec = Recording(traces=np.zeros((3, 3)), timestamps=np.arange(3.0), neuron_ids=["A", "", "unidentified_1"])
    circ, _, _ = source_circuit(rec, c)
    assert len(set(circ.ids.tolist())) == 3 and circ.ids[2] == "unidentified_1"


# --------------------------------------------------------------------------------------- disjoint_union


def _part2():
    """A second circuit: 3 neurons (one unplaced), 2 synapses, shorter traces, behaviour and modes."""
    c = Connectome(ids=["p", "q", "r"], xyz=[[100, 50, 0], [np.nan] * 3, [130, -5, 2]],
                   cell_type=["x", "y", "x"],
                   pre=[0, 2], post=[2, 0], sign=[-1, 1], kind=[1, 0], strength=[[2.0], [3.0]],
                   strength_names=("count",), syn_xyz=[[110, 0, 0], [120, 0, 0]], source="part2")
    rng = np.random.default_rng(2)
    rec = Recording(traces=rng.normal(size=(4, 3)), timestamps=np.arange(4) / 2.0, neuron_ids=["p", "q", "r"],
                    behaviour=rng.normal(size=(4, 1)), behaviour_names=("velocity",), source="rec2")
    return c, rec


@pytest.fixture(scope="module")
def union(circuit):
    c1, r1 = circuit["circuit"], circuit["renamed"]
    beh = np.random.default_rng(3).normal(size=(r1.n_timesteps, 2)).astype(np.float32)
    modes = np.array([0, 1, 2, -1, 1, 0], np.int32)
    r1 = Recording(traces=r1.traces, timestamps=r1.timestamps, neuron_ids=r1.neuron_ids, behaviour=beh,
                   behaviour_names=("velocity", "head"), modes=modes, mode_names=("fwd", "rev", "turn"),
                   source="rec1")
    c2, r2 = _part2()
    gap = 25.0
    u = disjoint_union([("w1", c1, r1), ("w2", c2, r2)], gap_um=gap)
    return dict(u=u, parts=[(c1, r1), (c2, r2)], gap=gap, beh=beh, modes=modes)


def test_union_groups_ids_and_cell_types(union):
    u, (c1, _), (c2, _) = union["u"], *union["parts"]
    assert u.names == ("w1", "w2")
    assert u.neuron_group.tolist() == [0] * c1.n_neurons + [1] * c2.n_neurons
    assert u.connectome.ids.tolist() == [f"w1/{i}" for i in c1.ids] + [f"w2/{i}" for i in c2.ids]
    assert u.connectome.cell_type.tolist() == c1.cell_type.tolist() + c2.cell_type.tolist()
    assert u.recording.neuron_ids.tolist() == u.connectome.ids.tolist()


def test_union_positions_are_shifted_along_x_and_separated_by_the_gap(union):
    u, gap = union["u"], union["gap"]
    xyz, groups = u.connectome.xyz, u.neuron_group
    assert u.offset_um.shape == (2, 3)
    np.testing.assert_array_equal(u.offset_um[:, 1:], 0.0)  # only x moves
    for g, (c, _) in enumerate(union["parts"]):
        # NaN rows stay NaN (assert_allclose compares NaN positions too).
        np.testing.assert_allclose(xyz[groups == g], c.xyz + u.offset_um[g], rtol=0, atol=1e-4)
    np.testing.assert_array_equal(u.connectome.placed, np.concatenate([c.placed for c, _ in union["parts"]]))
    placed = u.connectome.placed
    x0, x1 = xyz[placed & (groups == 0), 0], xyz[placed & (groups == 1), 0]
    assert x1.min() - x0.max() >= gap - 1e-4
    # Hence every cross-part pair of placed neurons is at least `gap` apart.
    d = np.linalg.norm(xyz[placed & (groups == 0)][:, None] - xyz[placed & (groups == 1)][None], axis=-1)
    assert d.min() >= gap - 1e-4
    # Synapse positions move with their part.
    np.testing.assert_allclose(u.connectome.syn_xyz[: union["parts"][0][0].n_synapses],
                               union["parts"][0][0].syn_xyz + u.offset_um[0], atol=1e-4)
    np.testing.assert_allclose(u.connectome.syn_xyz[union["parts"][0][0].n_synapses:],
                               union["parts"][1][0].syn_xyz + u.offset_um[1], atol=1e-4)


def test_union_synapses_are_offset_per_part(union):
    u, (c1, _), (c2, _) = union["u"], *union["parts"]
    e1 = c1.n_synapses
    assert u.connectome.n_synapses == e1 + c2.n_synapses
    np.testing.assert_array_equal(u.connectome.pre, np.concatenate([c1.pre, c2.pre + c1.n_neurons]))
    np.testing.assert_array_equal(u.connectome.post, np.concatenate([c1.post, c2.post + c1.n_neurons]))
    np.testing.assert_array_equal(u.connectome.sign, np.concatenate([c1.sign, c2.sign]))
    np.testing.assert_array_equal(u.connectome.kind, np.concatenate([c1.kind, c2.kind]))
    np.testing.assert_array_equal(u.connectome.strength, np.concatenate([c1.strength, c2.strength]))
    # Synapses never cross parts.
    assert (u.neuron_group[u.connectome.pre] == u.neuron_group[u.connectome.post]).all()


def test_union_traces_are_concatenated_and_the_shorter_part_nan_padded(union):
    u, (c1, r1), (c2, r2) = union["u"], *union["parts"]
    tr = u.recording.traces
    assert tr.shape == (6, c1.n_neurons + c2.n_neurons)
    np.testing.assert_array_equal(tr[:, : c1.n_neurons], r1.traces)
    np.testing.assert_array_equal(tr[:4, c1.n_neurons:], r2.traces.astype(np.float32))
    assert np.isnan(tr[4:, c1.n_neurons:]).all()
    assert u.recording.n_timesteps == 6
    np.testing.assert_allclose(np.diff(u.recording.timestamps), 1.0 / u.recording.rate_hz)


def test_union_behaviour_and_mode_columns(union):
    u, beh, modes = union["u"], union["beh"], union["modes"]
    rec = u.recording
    assert rec.behaviour_names == ("w1/velocity", "w1/head", "w1/rev", "w1/turn", "w2/velocity")
    assert u.behaviour_group.tolist() == [0, 0, 0, 0, 1]
    assert rec.modes is None
    b = rec.behaviour
    np.testing.assert_array_equal(b[:, :2], beh)
    for col, k in ((2, 1), (3, 2)):  # one 0/1 column per mode after the first; NaN where the mode is unknown
        want = np.where(modes < 0, np.nan, (modes == k).astype(np.float32))
        np.testing.assert_array_equal(b[:, col], want)
    r2 = union["parts"][1][1]
    np.testing.assert_array_equal(b[:4, 4], r2.behaviour[:, 0])
    assert np.isnan(b[4:, 4]).all()


def test_union_of_one_part_without_behaviour():
    c, rec = _part2()
    rec = Recording(traces=rec.traces, timestamps=rec.timestamps, neuron_ids=rec.neuron_ids)
    u = disjoint_union([("only", c, rec)], gap_um=10.0)
    assert u.recording.behaviour is None and u.behaviour_group.tolist() == []
    assert u.neuron_group.tolist() == [0, 0, 0]
    # The first part's leftmost placed neuron moves to x = 0.
    assert float(np.nanmin(u.connectome.xyz[:, 0])) == 0.0


def _invalid_cases():
    c, rec = _part2()
    short = Recording(traces=rec.traces[:, :2], timestamps=rec.timestamps, neuron_ids=rec.neuron_ids[:2])
    stim = Recording(traces=rec.traces, timestamps=rec.timestamps, neuron_ids=rec.neuron_ids,
                     stimulus=np.zeros((4, 1)))
    no_strength = Connectome(ids=c.ids, xyz=c.xyz, cell_type=c.cell_type, pre=c.pre, post=c.post)
    return {
        "no parts": ([], "no circuits"),
        "duplicate names": ([("a", c, rec), ("a", c, rec)], "duplicate"),
        "recording not 1:1": ([("a", c, short)], "1:1"),
        "stimulus": ([("a", c, rec), ("b", c, stim)], "stimulus"),
        "strength features": ([("a", c, rec), ("b", no_strength, rec)], "strength"),
    }


@pytest.mark.parametrize("case", list(_invalid_cases()))
def test_union_rejects_invalid_parts(case):
    parts, match = _invalid_cases()[case]
    with pytest.raises(ValidationError, match=match):
        disjoint_union(parts, gap_um=10.0)


# --------------------------------------------------------------------- property: spheres never mix parts


def _random_part(rng, name):
    """A random circuit (2..11 neurons, ~20 % unplaced, the first two placed) with a short recording."""
    n = int(rng.integers(2, 12))
    # Parts overlap in y and z (the union only separates them along x), anywhere along x.
    extent = rng.uniform(1.0, 30.0, 3)
    centre = [rng.uniform(-100, 100), rng.uniform(-2, 2), rng.uniform(-2, 2)]
    xyz = (rng.uniform(-1, 1, (n, 3)) * extent + centre).astype(np.float32)
    # The two x-extremes sit on the axis y = z = 0, so neighbouring parts come exactly `gap` close there.
    xyz[0] = [centre[0] - extent[0] - 1, 0, 0]
    xyz[1] = [centre[0] + extent[0] + 1, 0, 0]
    xyz[2:][rng.random(n - 2) < 0.2] = np.nan
    ids = [f"{name}{k}" for k in range(n)]
    c = Connectome(ids=ids, xyz=xyz, cell_type=None, pre=rng.integers(0, n, 3), post=rng.integers(0, n, 3))
    t = int(rng.integers(2, 5))
    rec = Recording(traces=np.zeros((t, n)), timestamps=np.arange(t, dtype=float), neuron_ids=ids)
    return c, rec


@pytest.mark.parametrize("seed", range(8))
def test_union_spheres_smaller_than_the_gap_never_hold_two_parts(seed):
    rng = np.random.default_rng(seed)
    n_parts = int(rng.integers(2, 5))
    parts = [(f"g{k}", *_random_part(rng, f"g{k}_")) for k in range(n_parts)]
    gap = float(rng.uniform(5.0, 40.0))
    u = disjoint_union(parts, gap_um=gap)
    diameter = gap * float(rng.uniform(0.3, 0.99))
    stride = diameter * float(rng.uniform(0.3, 0.577))  # keeps d >= sqrt(3) s (full coverage)
    spec = spatial.GridSpec(diameter_um=diameter, stride_um=stride, location_multiple=int(rng.integers(1, 4)))
    grid = spatial.build_grid(u.connectome.xyz, spec)
    tables = spatial.build_tables(u.connectome.xyz, grid, pre=u.connectome.pre, post=u.connectome.post)
    groups = np.where(tables.member_mask, u.neuron_group[tables.members], -1)
    for loc in range(tables.members.shape[0]):
        present = set(groups[loc][groups[loc] >= 0].tolist())
        assert len(present) <= 1, (loc, present)
    # Every placed neuron is covered, and unplaced ones have no candidate.
    np.testing.assert_array_equal(tables.candidate_mask.any(1), u.connectome.placed)
