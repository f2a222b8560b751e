"""Tests for mesojax.spatial: grid, index tables (against brute force), gathers, sharding along L."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mesojax import spatial
from mesojax.data import Connectome, ValidationError

N, E = 300, 1500


def _tissue(seed: int, kind: str) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.uniform([0, 0, 0], [100, 60, 40], (N, 3)).astype(np.float32)
    # Clustered: dense blobs with empty space between them (exercises dropped spheres).
    centres = rng.uniform(0, 120, (5, 3))
    return (centres[rng.integers(0, 5, N)] + rng.normal(0, 6, (N, 3))).astype(np.float32)


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(1)
    xyz = _tissue(0, "clustered")
    pre, post = rng.integers(0, N, E), rng.integers(0, N, E)
    syn_xyz = (0.5 * (xyz[pre] + xyz[post]) + rng.normal(0, 3, (E, 3))).astype(np.float32)
    spec = spatial.GridSpec(diameter_um=30.0, location_multiple=4)
    grid = spatial.build_grid(xyz, spec)
    by_pos = spatial.build_tables(xyz, grid, syn_xyz=syn_xyz)
    by_end = spatial.build_tables(xyz, grid, pre=pre, post=post)
    return dict(xyz=xyz, pre=pre, post=post, syn_xyz=syn_xyz, grid=grid, t=by_pos, t_end=by_end)


def _inside(points: np.ndarray, centers: np.ndarray, radius: float) -> np.ndarray:
    """Brute force ``[L, M]`` bool: point within radius of centre (float64)."""
    d2 = ((centers[:, None, :].astype(np.float64) - points[None].astype(np.float64)) ** 2).sum(-1)
    return d2 <= radius**2


# ----------------------------------------------------------------------------------------------- grid
def test_grid_is_the_nonempty_lattice(case):
    grid, xyz = case["grid"], case["xyz"]
    s, r = grid.stride, grid.radius
    assert (s, r) == (15.0, 15.0)
    start = grid.centers[0] - grid.lattice[0] * s
    np.testing.assert_allclose(grid.centers, start + grid.lattice * s, atol=1e-4)
    # Every lattice point of the enclosing box is kept iff its sphere holds a neuron.
    lo, hi = grid.lattice.min(0) - 1, grid.lattice.max(0) + 1
    axes = [np.arange(a, b + 1) for a, b in zip(lo, hi)]
    full = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    nonempty = _inside(xyz, (start + full * s).astype(np.float32), r).any(1)
    kept = {tuple(v) for v in grid.lattice.tolist()}
    assert kept == {tuple(v) for v in full[nonempty].tolist()}
    assert grid.n_locations < len(full)  # clustered tissue: some spheres were dropped


def test_grid_covers_bounding_box(case):
    grid, xyz = case["grid"], case["xyz"]
    assert (grid.centers.min(0) <= xyz.min(0) + grid.stride / 2).all()
    assert (grid.centers.max(0) >= xyz.max(0) - grid.stride / 2).all()


def test_grid_origin_puts_centres_on_its_lattice():
    xyz = _tissue(3, "uniform")
    grid = spatial.build_grid(xyz, spatial.GridSpec(20.0, stride_um=12.0, origin=(1.0, 2.0, 3.0)))
    k = (grid.centers - np.array([1.0, 2.0, 3.0])) / 12.0
    np.testing.assert_allclose(k, np.round(k), atol=1e-4)
    np.testing.assert_array_equal(np.round(k).astype(int), grid.lattice)


@pytest.mark.parametrize(
    "spec, field",
    [
        (spatial.GridSpec(10.0, stride_um=10.0), "stride_um"),
        (spatial.GridSpec(10.0, stride_um=-1.0), "stride_um"),
        (spatial.GridSpec(0.0), "diameter_um"),
        (spatial.GridSpec(10.0, location_multiple=0), "location_multiple"),
        (spatial.GridSpec(1e-3), "stride_um"),  # absurd lattice size (units mistake)
    ],
)
def test_bad_spec_raises_naming_field(spec, field):
    xyz = _tissue(0, "uniform")
    with pytest.raises(ValidationError, match=field):
        spatial.build_grid(xyz, spec)


def test_bad_positions_name_the_row():
    xyz = _tissue(0, "uniform")
    xyz[17, 1] = np.nan
    with pytest.raises(ValidationError, match="field 'xyz', row 17"):
        spatial.build_grid(xyz, spatial.GridSpec(30.0))


# ----------------------------------------------------------------------------------------------- tables
def test_members_match_brute_force(case):
    t, grid, xyz = case["t"], case["grid"], case["xyz"]
    inside = _inside(xyz, grid.centers, grid.radius)
    for l in range(grid.n_locations):
        got = t.members[l][t.member_mask[l]]
        want = np.flatnonzero(inside[l])
        assert sorted(got.tolist()) == want.tolist()
        d = np.linalg.norm(xyz[got].astype(np.float64) - grid.centers[l], axis=1)
        assert (np.diff(d) >= 0).all(), "members are sorted by distance to the centre"
    # Padded columns are masked, in bounds and zero.
    assert (t.members[~t.member_mask] == 0).all()
    assert t.member_mask.sum(1).max() == t.members.shape[1]


def test_candidates_are_the_inverse_of_members(case):
    t, grid, xyz = case["t"], case["grid"], case["xyz"]
    inside = _inside(xyz, grid.centers, grid.radius)
    i_idx, c_idx = np.nonzero(t.candidate_mask)
    locs, slots = t.candidates[i_idx, c_idx], t.candidate_slot[i_idx, c_idx]
    np.testing.assert_array_equal(t.members[locs, slots], i_idx)
    assert t.member_mask[locs, slots].all()
    # Each valid (l, k) appears exactly once among the valid candidates.
    assert len(set(zip(locs.tolist(), slots.tolist()))) == len(locs) == t.member_mask.sum()
    # Candidates of each neuron are exactly the spheres holding it, ascending.
    for i in range(N):
        got = t.candidates[i][t.candidate_mask[i]]
        np.testing.assert_array_equal(got, np.flatnonzero(inside[:, i]))
    # member_candidate points back.
    l_idx, k_idx = np.nonzero(t.member_mask)
    back = t.candidates[t.members[l_idx, k_idx], t.member_candidate[l_idx, k_idx]]
    np.testing.assert_array_equal(back, l_idx)


@pytest.mark.parametrize("kind", ["uniform", "clustered"])
@pytest.mark.parametrize("diameter, stride", [(30.0, None), (20.0, 11.0), (25.0, 25.0 / np.sqrt(3) - 1e-3)])
def test_every_neuron_has_a_candidate(kind, diameter, stride):
    xyz = _tissue(4, kind)
    grid = spatial.build_grid(xyz, spatial.GridSpec(diameter, stride_um=stride))
    t = spatial.build_tables(xyz, grid)
    assert t.candidate_mask.any(1).all()
    assert t.location_mask.all() and t.member_mask.any(1).all()  # no empty spheres kept


def test_gap_in_coverage_raises_naming_the_neuron():
    corners = np.stack(np.meshgrid([0, 10], [0, 10], [0, 10], indexing="ij"), -1).reshape(-1, 3)
    xyz = np.concatenate([corners, [[5.0, 5.0, 5.0]]]).astype(np.float32)  # the cell centre, row 8
    grid = spatial.build_grid(xyz, spatial.GridSpec(11.0, stride_um=10.0))  # d < sqrt(3) s
    with pytest.raises(ValidationError, match="row 8: neuron at .* lies in no sphere"):
        spatial.build_tables(xyz, grid)


def test_neuron_outside_the_grid_raises():
    xyz = _tissue(0, "uniform")
    grid = spatial.build_grid(xyz[:200], spatial.GridSpec(20.0))
    far = np.concatenate([xyz[:200], [[1e4, 0, 0]]]).astype(np.float32)
    with pytest.raises(ValidationError, match="row 200"):
        spatial.build_tables(far, grid)


def test_member_offset(case):
    t, xyz = case["t"], case["xyz"]
    want = (xyz[t.members] - t.centers[:, None]) / case["grid"].radius
    np.testing.assert_allclose(t.member_offset[t.member_mask], want[t.member_mask], atol=1e-6)
    assert (np.linalg.norm(t.member_offset, axis=-1) <= 1 + 1e-6).all()
    assert (t.member_offset[~t.member_mask] == 0).all()


def test_synapses_by_position_match_brute_force(case):
    t, grid = case["t"], case["grid"]
    inside = _inside(case["syn_xyz"], grid.centers, grid.radius)
    for l in range(grid.n_locations):
        got = t.synapses[l][t.synapse_mask[l]]
        np.testing.assert_array_equal(got, np.flatnonzero(inside[l]))  # ascending ids
    assert not t.synapse_mask[grid.n_locations :].any()


def test_synapses_by_endpoints_match_brute_force(case):
    t, grid, xyz = case["t_end"], case["grid"], case["xyz"]
    inside = _inside(xyz, grid.centers, grid.radius)
    both = inside[:, case["pre"]] & inside[:, case["post"]]
    for l in range(grid.n_locations):
        np.testing.assert_array_equal(t.synapses[l][t.synapse_mask[l]], np.flatnonzero(both[l]))
    # Same neuron tables whichever way synapses were given.
    np.testing.assert_array_equal(t.members, case["t"].members)


def test_location_padding_for_sharding(case):
    t, grid = case["t"], case["grid"]
    assert t.members.shape[0] % 4 == 0 and t.members.shape[0] >= grid.n_locations
    assert t.n_locations == grid.n_locations
    pad = ~t.location_mask
    assert not t.member_mask[pad].any() and not t.synapse_mask[pad].any()
    assert (t.centers[pad] == 0).all()
    assert (t.candidates[t.candidate_mask] < grid.n_locations).all()


def test_fixed_widths_and_overflow():
    xyz = _tissue(5, "uniform")
    grid = spatial.build_grid(xyz, spatial.GridSpec(30.0, width_multiple=8))
    t = spatial.build_tables(xyz, grid)
    assert t.members.shape[1] % 8 == 0 and t.candidates.shape[1] % 8 == 0
    k, c = int(t.member_mask.sum(1).max()), int(t.candidate_mask.sum(1).max())
    fixed = spatial.build_tables(xyz, grid, max_members=k + 5, max_candidates=c + 3)
    assert fixed.members.shape[1] == spatial._round_up(k + 5, 8)
    np.testing.assert_array_equal(fixed.members[:, :k], t.members[:, :k])
    with pytest.raises(ValidationError, match="field 'members', row .*exceed the requested maximum"):
        spatial.build_tables(xyz, grid, max_members=k - 1)
    with pytest.raises(ValidationError, match="field 'candidates'"):
        spatial.build_tables(xyz, grid, max_candidates=c - 1)


def test_tables_are_deterministic(case):
    again = spatial.build_tables(case["xyz"], case["grid"], syn_xyz=case["syn_xyz"], chunk=7)
    for a, b in zip(case["t"], again):
        np.testing.assert_array_equal(a, b)


def test_connectome_tables():
    xyz = _tissue(6, "uniform")
    rng = np.random.default_rng(6)
    pre, post = rng.integers(0, N, 400), rng.integers(0, N, 400)
    conn = Connectome(ids=np.arange(N), xyz=xyz, cell_type=None, pre=pre, post=post)
    grid, t = spatial.connectome_tables(conn, spatial.GridSpec(30.0))
    want = spatial.build_tables(xyz, grid, pre=pre, post=post)
    np.testing.assert_array_equal(t.synapses, want.synapses)
    assert t.synapse_mask.any()


def test_mismatched_endpoints_raise():
    xyz = _tissue(0, "uniform")
    grid = spatial.build_grid(xyz, spatial.GridSpec(30.0))
    with pytest.raises(ValidationError, match="field 'post', row 2: index 300 out of range"):
        spatial.build_tables(xyz, grid, pre=np.array([0, 1, 2]), post=np.array([0, 1, N]))
    with pytest.raises(ValidationError, match="given together"):
        spatial.build_tables(xyz, grid, pre=np.array([0]))
    # Float indices used to pass (and be used as indices); they are rejected like everywhere else.
    with pytest.raises(ValidationError, match="field 'pre': expected integer neuron indices, got dtype f"):
        spatial.build_tables(xyz, grid, pre=np.array([0.0, 1.0]), post=np.array([1, 2]))
    with pytest.raises(ValidationError, match="field 'post': length 1 does not match 'pre' length 2"):
        spatial.build_tables(xyz, grid, pre=np.array([0, 1]), post=np.array([1]))


# ----------------------------------------------------------------------------------------------- gathers
def test_gather_scatter_round_trip(case):
    t = case["t"]
    x = np.random.default_rng(2).normal(size=(N, 2)).astype(np.float32)
    g = spatial.gather_members(x, t)
    assert g.shape == t.members.shape + (2,)
    np.testing.assert_array_equal(np.asarray(g)[t.member_mask], x[t.members[t.member_mask]])
    assert (np.asarray(g)[~t.member_mask] == 0).all()
    np.testing.assert_allclose(spatial.scatter_to_neurons(g, None, t), x, rtol=1e-6)


def test_scatter_with_weights_matches_loop(case):
    t = case["t"]
    rng = np.random.default_rng(3)
    y = rng.normal(size=t.members.shape).astype(np.float32)
    w = rng.uniform(size=t.candidates.shape).astype(np.float32)
    got = np.asarray(spatial.scatter_to_neurons(y, w, t))
    want = np.zeros(N)
    for l, k in zip(*np.nonzero(t.member_mask)):
        i = t.members[l, k]
        c = list(t.candidates[i]).index(l)
        want[i] += w[i, c] * y[l, k]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_candidate_to_member(case):
    t = case["t"]
    a = np.random.default_rng(4).normal(size=t.candidates.shape + (3,)).astype(np.float32)
    got = np.asarray(spatial.candidate_to_member(a, t))
    i_idx, c_idx = np.nonzero(t.candidate_mask)
    at = (t.candidates[i_idx, c_idx], t.candidate_slot[i_idx, c_idx])
    np.testing.assert_array_equal(got[at], a[i_idx, c_idx])
    assert (got[~t.member_mask] == 0).all()


def test_vmap_over_locations_equals_batched(case):
    t = case["t"]
    x = jnp.asarray(np.random.default_rng(5).normal(size=(N,)), jnp.float32)

    def one_location(members, mask):  # the per-location apply pattern
        return jnp.where(mask, x[members], 0.0)

    per_loc = jax.vmap(one_location)(jnp.asarray(t.members), jnp.asarray(t.member_mask))
    np.testing.assert_array_equal(per_loc, spatial.gather_members(x, t))


def test_sharding_along_locations_matches_one_device(case):
    t = case["t"]
    devices = jax.devices()
    if len(devices) < 4:
        pytest.skip("needs the 4 forced host devices from conftest")
    mesh = Mesh(np.array(devices[:4]), ("space",))
    along_l = NamedSharding(mesh, P("space"))
    replicated = NamedSharding(mesh, P())
    l_fields = {"centers", "location_mask", "members", "member_mask", "member_offset", "member_candidate",
                "synapses", "synapse_mask"}
    sharded = spatial.SpatialTables(**{
        name: jax.device_put(value, along_l if name in l_fields else replicated)
        for name, value in t._asdict().items()
    })
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.normal(size=(N, 2)), jnp.float32)
    w = jnp.asarray(rng.uniform(size=t.candidates.shape), jnp.float32)

    @jax.jit
    def step(x, w, tables):
        g = spatial.gather_members(x, tables)  # [L, K, 2]
        y = jnp.tanh(g + tables.member_offset[..., :2])  # a per-location computation
        return y, spatial.scatter_to_neurons(y, w, tables)

    y1, x1 = step(x, w, t)
    y4, x4 = step(x, w, sharded)
    assert {sh.data.shape[0] for sh in y4.addressable_shards} == {t.members.shape[0] // 4}  # split along L
    np.testing.assert_allclose(y4, y1, rtol=1e-6)
    np.testing.assert_allclose(x4, x1, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------- unplaced neurons
def _unplaced_rows(pattern: str) -> np.ndarray:
    """Rows whose position is made unknown (row 0 matters: it is also the padding index)."""
    if pattern == "first":
        return np.array([0])
    if pattern == "last":
        return np.array([N - 1])
    return np.sort(np.random.default_rng(7).choice(N, 40, replace=False))  # "scattered"


def _with_nan(xyz: np.ndarray, rows: np.ndarray) -> np.ndarray:
    out = xyz.copy()
    out[rows] = np.nan
    return out


@pytest.mark.parametrize("origin", [None, (1.0, 2.0, 3.0)])
@pytest.mark.parametrize("pattern", ["first", "scattered"])
def test_grid_ignores_unplaced_rows(pattern, origin):
    xyz = _tissue(8, "uniform")
    rows = _unplaced_rows(pattern)
    xyz[rows] = 1e4  # far away: would stretch the grid if these rows were used
    spec = spatial.GridSpec(20.0, origin=origin)
    want = spatial.build_grid(np.delete(xyz, rows, axis=0), spec)
    got = spatial.build_grid(_with_nan(xyz, rows), spec)
    np.testing.assert_array_equal(got.centers, want.centers)
    np.testing.assert_array_equal(got.lattice, want.lattice)


def test_grid_with_no_placed_neuron_raises():
    with pytest.raises(ValidationError, match="field 'xyz': no neurons"):
        spatial.build_grid(np.full((4, 3), np.nan, np.float32), spatial.GridSpec(20.0))


@pytest.mark.parametrize("synapses", ["none", "endpoints", "positions"])
@pytest.mark.parametrize("pattern", ["first", "last", "scattered"])
def test_tables_with_unplaced_equal_the_placed_subset_lifted(case, pattern, synapses):
    xyz, pre, post, syn_xyz = case["xyz"], case["pre"], case["post"], case["syn_xyz"]
    rows = _unplaced_rows(pattern)
    placed = np.ones(N, bool)
    placed[rows] = False
    lift = np.flatnonzero(placed)  # subset index -> original row
    sub_index = np.cumsum(placed) - 1  # original row -> subset index (for placed rows)
    spec = spatial.GridSpec(diameter_um=30.0, location_multiple=4, width_multiple=2)
    grid = spatial.build_grid(xyz[placed], spec)
    kw_full, kw_sub, keep = {}, {}, np.arange(E)
    if synapses == "endpoints":
        keep = np.flatnonzero(placed[pre] & placed[post])
        kw_full = dict(pre=pre, post=post)
        kw_sub = dict(pre=sub_index[pre[keep]], post=sub_index[post[keep]])
    elif synapses == "positions":
        kw_full = kw_sub = dict(syn_xyz=syn_xyz)
    got = spatial.build_tables(_with_nan(xyz, rows), grid, **kw_full)
    want = spatial.build_tables(xyz[placed], grid, **kw_sub)

    # Location-major tables: identical up to the neuron index lift.
    for name in ("centers", "location_mask", "member_mask", "member_offset", "member_candidate",
                 "synapse_mask"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    m = want.member_mask
    assert got.members.shape == want.members.shape
    np.testing.assert_array_equal(got.members[m], lift[want.members[m]])
    assert (got.members[~m] == 0).all()
    assert placed[got.members[m]].all()  # unplaced neurons are members of no sphere
    sm = want.synapse_mask
    assert got.synapses.shape == want.synapses.shape
    np.testing.assert_array_equal(got.synapses[sm], keep[want.synapses[sm]])
    assert (got.synapses[~sm] == 0).all()

    # Neuron-major tables: [N, C] for all N; placed rows are the subset's, unplaced rows are padding.
    for name in ("candidates", "candidate_slot", "candidate_mask"):
        full, sub = getattr(got, name), getattr(want, name)
        assert full.shape == (N, sub.shape[1]), name
        np.testing.assert_array_equal(full[placed], sub, err_msg=name)
        assert not full[~placed].any(), name
    np.testing.assert_array_equal(got.candidate_mask.any(-1), placed)


def test_gathers_with_unplaced_neurons(case):
    xyz, rows = case["xyz"], _unplaced_rows("scattered")
    t = spatial.build_tables(_with_nan(xyz, rows), case["grid"])
    placed = t.candidate_mask.any(-1)
    assert not placed[rows].any() and placed.sum() == N - len(rows)
    rng = np.random.default_rng(9)
    x = rng.normal(size=(N, 2)).astype(np.float32)
    x[rows] = np.nan  # values of unplaced neurons are never read
    g = np.asarray(spatial.gather_members(x, t))
    assert np.isfinite(g).all()
    back = np.asarray(spatial.scatter_to_neurons(g, None, t))
    np.testing.assert_allclose(back[placed], x[placed], rtol=1e-6)
    assert (back[~placed] == 0).all()
    w = rng.uniform(size=t.candidates.shape).astype(np.float32)
    assert (np.asarray(spatial.scatter_to_neurons(g, w, t))[~placed] == 0).all()
    a = rng.normal(size=t.candidates.shape).astype(np.float32)
    a[rows] = np.nan
    got = np.asarray(spatial.candidate_to_member(a, t))
    assert np.isfinite(got).all()
    i_idx, c_idx = np.nonzero(t.candidate_mask)
    np.testing.assert_array_equal(got[t.candidates[i_idx, c_idx], t.candidate_slot[i_idx, c_idx]],
                                  a[i_idx, c_idx])


def test_placed_neuron_outside_the_grid_still_raises():
    xyz = _tissue(0, "uniform")
    grid = spatial.build_grid(xyz[:200], spatial.GridSpec(20.0))
    far = np.concatenate([xyz[:200], [[np.nan] * 3, [1e4, 0, 0], [np.nan] * 3]]).astype(np.float32)
    with pytest.raises(ValidationError, match="field 'xyz', row 201: neuron at .* lies in no sphere"):
        spatial.build_tables(far, grid)
    t = spatial.build_tables(np.delete(far, 201, axis=0), grid)  # only unplaced extras: fine
    np.testing.assert_array_equal(t.candidate_mask.any(-1), np.arange(202) < 200)


@pytest.mark.parametrize(
    "bad, row", [([0.0, np.nan, 0.0], 3), ([np.nan, np.nan, np.inf], 3), ([np.inf] * 3, 3)]
)
@pytest.mark.parametrize("fn", ["build_grid", "build_tables"])
def test_partly_unknown_position_raises_naming_the_row(fn, bad, row):
    xyz = _tissue(0, "uniform")
    grid = spatial.build_grid(xyz, spatial.GridSpec(30.0))
    xyz[1] = np.nan  # an unplaced neuron before it is fine
    xyz[row] = bad
    with pytest.raises(ValidationError, match=f"field 'xyz', row {row}: non-finite"):
        if fn == "build_grid":
            spatial.build_grid(xyz, spatial.GridSpec(30.0))
        else:
            spatial.build_tables(xyz, grid)


def test_tables_with_no_placed_neuron():
    xyz = _tissue(0, "uniform")
    grid = spatial.build_grid(xyz, spatial.GridSpec(30.0))
    t = spatial.build_tables(np.full((5, 3), np.nan, np.float32), grid, pre=np.array([0, 1]),
                             post=np.array([1, 2]))
    assert t.candidates.shape[0] == 5 and not t.candidate_mask.any()
    assert not t.member_mask.any() and not t.synapse_mask.any()


def test_connectome_tables_with_unplaced_neurons():
    xyz = _tissue(6, "uniform")
    rng = np.random.default_rng(6)
    pre, post = rng.integers(0, N, 400), rng.integers(0, N, 400)
    rows = _unplaced_rows("scattered")
    conn = Connectome(ids=np.arange(N), xyz=_with_nan(xyz, rows), cell_type=None, pre=pre, post=post)
    grid, t = spatial.connectome_tables(conn, spatial.GridSpec(30.0))
    np.testing.assert_array_equal(t.candidate_mask.any(-1), conn.placed)
    touched = np.isin(pre, rows) | np.isin(post, rows)
    assert not np.isin(t.synapses[t.synapse_mask], np.flatnonzero(touched)).any()


# ----------------------------------------------------------------------------------------------- columns
def _columns(n_side=4, spacing=10.0, height=100.0, per_column=30, seed=0):
    """Neurons in tall columns along z: a square lattice of column axes, each `height` µm tall."""
    rng = np.random.default_rng(seed)
    pts, col = [], []
    for k, (i, j) in enumerate(itertools.product(range(n_side), range(n_side))):
        ang, rad = rng.uniform(0, 2 * np.pi, per_column), 2.0 * np.sqrt(rng.uniform(0, 1, per_column))
        z = rng.uniform(0, height, per_column)
        pts.append(np.stack([i * spacing + rad * np.cos(ang), j * spacing + rad * np.sin(ang), z], 1))
        col += [k] * per_column
    return np.concatenate(pts).astype(np.float32), np.asarray(col)


@pytest.mark.parametrize("height,axis", [(None, 2), (40.0, 2), (25.0, 2), (40.0, 0)])
def test_column_members_are_exactly_the_points_in_each_cylinder(height, axis):
    xyz, _ = _columns()
    if axis != 2:  # the same tissue with its columns along x
        xyz = xyz[:, [2, 1, 0]]
    spec = spatial.GridSpec(10.0, stride_um=5.0, shape="column", axis=axis, height_um=height)
    grid = spatial.build_grid(xyz, spec)
    t = spatial.build_tables(xyz, grid)
    r = 5.0
    extent = xyz[:, axis].max() - xyz[:, axis].min()
    half = extent / 2 if height is None else height / 2
    across = [a for a in range(3) if a != axis]
    for loc in range(grid.n_locations):
        d = xyz - grid.centers[loc]
        plane, along = np.sqrt((d[:, across] ** 2).sum(1)), np.abs(d[:, axis])
        surely_in = (plane <= r - 1e-3) & (along <= half - 1e-3)
        maybe_in = (plane <= r + 1e-3) & (along <= half + 1e-3)  # float32 rounding at the surface
        got = np.zeros(len(xyz), bool)
        got[t.members[loc][t.member_mask[loc]]] = True
        assert (got >= surely_in).all() and (got <= maybe_in).all()
    assert t.candidate_mask.any(1).all()  # every neuron is in some column
    off = t.member_offset[t.member_mask]
    assert (np.sqrt((off[:, across] ** 2).sum(1)) <= 1 + 1e-4).all() and (np.abs(off[:, axis]) <= 1 + 1e-4).all()
    if height is None:
        assert len(np.unique(grid.centers[:, axis])) == 1  # one layer spanning the whole depth


def test_a_column_holds_a_whole_column_where_spheres_cut_it_into_slabs():
    xyz, col = _columns()
    # Columns 2 µm in radius, 10 µm apart: a 12 µm field on a 5 µm lattice has a centre within 3.6 µm of
    # every column axis, so some field holds each whole column; a 12 µm sphere cannot hold 100 µm of one.
    column = spatial.build_tables(xyz, spatial.build_grid(xyz, spatial.GridSpec(12.0, 5.0, shape="column")))
    sphere = spatial.build_tables(xyz, spatial.build_grid(xyz, spatial.GridSpec(12.0, 5.0)))

    def whole(t):  # locations holding every neuron of some column
        return sum(np.isin(np.flatnonzero(col == k), t.members[l][t.member_mask[l]]).all()
                   for l in range(t.members.shape[0]) for k in np.unique(col[t.members[l][t.member_mask[l]]]))

    assert whole(column) >= 16 and whole(sphere) == 0


@pytest.mark.parametrize("kw,field", [(dict(shape="cube"), "shape"), (dict(shape="column", stride_um=8.0), "stride_um"),
                                      (dict(shape="column", axis=3), "axis"),
                                      (dict(shape="column", height_um=-1.0), "height_um"),
                                      (dict(shape="column", height_um=10.0, height_stride_um=20.0), "height_stride_um")])
def test_bad_column_specs_name_the_field(kw, field):
    xyz, _ = _columns(n_side=2)
    with pytest.raises(ValidationError) as info:
        spatial.build_grid(xyz, spatial.GridSpec(10.0, **{"stride_um": 5.0, **kw}))
    assert info.value.field == field
