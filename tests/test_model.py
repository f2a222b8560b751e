"""Tests for the model components: interface, assignment, synapses, model step/rollout, losses, optim."""

import dataclasses
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mesojax import assign, interface, losses, model, optim, spatial, synapses, transfer
from mesojax.config import base_config
from mesojax.data import Connectome, Recording, windows
from mesojax.data.union import disjoint_union

N_FILTERS, N_PORTS, HISTORY = 3, 4, 2


@pytest.fixture(scope="module")
def setup():
    """A tiny random circuit with real spatial tables and a model over it."""
    rng = np.random.default_rng(0)
    n = 40
    xyz = rng.uniform(0, 60, (n, 3)).astype(np.float32)
    grid = spatial.build_grid(xyz, spatial.GridSpec(diameter_um=40.0))
    tables = spatial.build_tables(xyz, grid)
    pre, post = rng.integers(0, n, 80), rng.integers(0, n, 80)
    inputs = model.build_inputs(tables, rng.normal(size=(n, 5)), rng.choice(["E", "I"], n), syn_pre=pre,
                                syn_post=post)
    spec = model.make_spec(
        n_neurons=n, n_locations=tables.members.shape[0], n_members=tables.members.shape[1],
        n_candidates=tables.candidates.shape[1], n_features=inputs.member_features.shape[-1],
        n_filters=N_FILTERS, n_ports=N_PORTS, history=HISTORY, n_stimulus=1, n_behaviour=2, n_modes=2,
        use_synapses=True, basis_kwargs=dict(max_width=8, width_step=4),
    )
    params = model.init(jax.random.key(0), spec, inputs)
    temps = model.Temperatures(jnp.float32(1.0), jnp.float32(0.5), jnp.float32(1.0))
    return dict(spec=spec, inputs=inputs, params=params, temps=temps, tables=tables, n=n, rng=rng)


# ----------------------------------------------------------------------------------------- interface


def test_encode_is_weighted_mean_per_port_and_decode_is_residual():
    pp = interface.PairParams(*(jnp.zeros(()) for _ in range(4)))
    port_map = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # members 0,1 -> port 0; member 2 -> port 1
    x = jnp.array([[1.0, 3.0, 5.0]])
    u = interface.encode(pp, port_map, x, jnp.array([1.0, 3.0, 1.0]))
    np.testing.assert_allclose(u, [[(1 * 1 + 3 * 3) / 4, 5.0]], rtol=1e-5)
    y = interface.decode(pp._replace(offset_out=jnp.float32(0.5)), port_map, jnp.array([2.0, -1.0]), x[0])
    np.testing.assert_allclose(y, [1 + 2 + 0.5, 3 + 2 + 0.5, 5 - 1 + 0.5], rtol=1e-6)


def test_circuit_maps_equal_every_pair_encoded_decoded_and_mixed():
    """encode_circuit / decode_mix / decode_pairs equal the per-pair encode / decode, vmapped and mixed."""
    rng = np.random.default_rng(4)
    n_loc, n_filt, k, m, h = 5, 3, 6, 4, 2
    pairs = interface.PairParams(*(jnp.asarray(0.3 * rng.normal(size=(n_loc, n_filt)), jnp.float32)
                                   for _ in range(4)))
    port_maps = jax.nn.softmax(jnp.asarray(rng.normal(size=(n_loc, n_filt, k, m)), jnp.float32), -1)
    weight = jnp.asarray(rng.random((n_loc, k, n_filt)) * (rng.random((n_loc, k, 1)) > 0.2), jnp.float32)
    x = jnp.asarray(rng.normal(size=(n_loc, h, k)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(n_loc, n_filt, m)), jnp.float32)
    maps = interface.circuit_maps(pairs, port_maps, weight)
    per_pair_in = jax.vmap(jax.vmap(interface.encode, in_axes=(0, 0, None, 1)), in_axes=(0, 0, 0, 0))
    np.testing.assert_allclose(interface.encode_circuit(maps, x), per_pair_in(pairs, port_maps, x, weight),
                               rtol=1e-5, atol=1e-6)
    per_pair_out = jax.vmap(jax.vmap(interface.decode, in_axes=(0, 0, 0, None)))
    y = per_pair_out(pairs, port_maps, v, x[:, -1])  # [L, B, K]
    np.testing.assert_allclose(interface.decode_pairs(pairs, port_maps, v, x[:, -1]), y, rtol=1e-5, atol=1e-6)
    mixed = jnp.sum(weight * jnp.moveaxis(y, 1, 2), axis=-1)
    np.testing.assert_allclose(interface.decode_mix(maps, v, x[:, -1]), mixed, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dense", [False, True])
def test_ports_are_distributions_and_regulariser_starts_at_zero(dense):
    spec = interface.InterfaceSpec(n_ports=3, n_features=4, n_filters=2, dense=dense)
    params = interface.init(jax.random.key(1), spec, n_locations=5, n_members=6)
    p = interface.ports(spec, params, jax.random.normal(jax.random.key(2), (5, 6, 4)), temperature=0.7)
    assert p.shape == (5, 2, 6, 3)
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
    assert float(interface.regularizer(params)) == 0.0


# ---------------------------------------------------------------------------------------- assignment


@pytest.mark.parametrize("network", assign.NETWORKS)
def test_assignment_is_a_distribution_over_valid_pairs_with_gradients(setup, network):
    ai = setup["inputs"].assign
    spec = assign.AssignSpec(n_filters=N_FILTERS, network=network)
    params = assign.init(jax.random.key(3), spec, ai, n_locations=setup["spec"].n_locations)
    a = assign.assignment(spec, params, ai, temperature=1.0)
    np.testing.assert_allclose(a.sum((1, 2)), 1.0, rtol=1e-5)
    assert float(jnp.abs(a * ~ai.candidate_mask[..., None]).max()) == 0.0
    target = jax.random.normal(jax.random.key(4), a.shape)
    grads = jax.grad(lambda p: jnp.sum(assign.assignment(spec, p, ai, 1.0) * target))(params)
    for leaf in jax.tree.leaves(grads):
        assert np.isfinite(np.asarray(leaf)).all()
        assert float(jnp.abs(leaf).max()) > 0.0


def test_low_temperature_assignment_is_one_hot_and_hard_partition_agrees(setup):
    ai = setup["inputs"].assign
    spec = assign.AssignSpec(n_filters=N_FILTERS, network="free")
    params = assign.init(jax.random.key(5), spec, ai, n_locations=setup["spec"].n_locations)
    a = assign.assignment(spec, params, ai, temperature=1e-4)
    assert float(assign.entropy(a).max()) < 1e-3
    loc, filt, conf = assign.hard_partition(a, ai)
    flat = np.asarray(assign.logits(spec, params, ai)).reshape(setup["n"], -1)
    best = flat.argmax(1)
    np.testing.assert_array_equal(filt, best % N_FILTERS)
    np.testing.assert_array_equal(loc, np.asarray(ai.candidates)[np.arange(setup["n"]), best // N_FILTERS])
    np.testing.assert_allclose(conf, 1.0, atol=1e-3)


def _coherent(setup):
    """The setup's inputs with coherence pairs from random synapses, and each neuron's set of partners."""
    ai, tables = setup["inputs"].assign, setup["tables"]
    rng = np.random.default_rng(7)
    pre, post = rng.integers(0, setup["n"], 60), rng.integers(0, setup["n"], 60)
    partners = {i: set() for i in range(setup["n"])}
    for i, j in zip(pre.tolist(), post.tolist()):
        if i != j:
            partners[i].add(j)
            partners[j].add(i)
    return ai._replace(neighbours=assign.neighbours(pre, post, tables.candidates, tables.candidate_mask)), partners


def test_coherence_message_equals_a_loop_over_partners(setup):
    ai, partners = _coherent(setup)
    cand, mask = np.asarray(ai.candidates), np.asarray(ai.candidate_mask)
    a = np.asarray(jax.random.uniform(jax.random.key(8), (setup["n"], cand.shape[1], N_FILTERS))) * mask[..., None]
    expect = np.zeros_like(a)
    for i, js in partners.items():
        for j in js:
            for c in np.flatnonzero(mask[i]):
                hit = np.flatnonzero(mask[j] & (cand[j] == cand[i, c]))
                if hit.size:
                    expect[i, c] += a[j, hit[0]] / len(js)
    np.testing.assert_allclose(assign.coherence_message(jnp.asarray(a), ai.neighbours), expect, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("beta", [0.0, 4.0])
def test_coherence_pulls_partners_into_the_same_domain(setup, beta):
    ai, _ = _coherent(setup)
    spec = assign.AssignSpec(n_filters=N_FILTERS, network="free", coherence=beta)
    params = assign.init(jax.random.key(9), spec, ai, n_locations=setup["spec"].n_locations)
    a = assign.assignment(spec, params, ai, temperature=0.5)
    np.testing.assert_allclose(a.sum((1, 2)), 1.0, rtol=1e-5)
    agreement = float(jnp.sum(a * assign.coherence_message(a, ai.neighbours)))
    plain = assign.assignment(assign.AssignSpec(n_filters=N_FILTERS, network="free"), params, ai, 0.5)
    base = float(jnp.sum(plain * assign.coherence_message(plain, ai.neighbours)))
    if beta == 0.0:
        np.testing.assert_allclose(a, plain, rtol=1e-6)
    else:
        assert agreement > base  # partners put more weight on the same (location, filter) pairs


def test_partner_prior_averages_squared_offsets_over_partners(setup):
    ai, partners = _coherent(setup)
    d2 = np.sum(np.asarray(ai.candidate_offset) ** 2, -1)
    cand, mask = np.asarray(ai.candidates), np.asarray(ai.candidate_mask)
    got = np.asarray(assign.prior_distance(ai, partners=True))
    np.testing.assert_allclose(assign.prior_distance(ai, partners=False), d2)
    for i, js in partners.items():
        for c in np.flatnonzero(mask[i]):
            terms = [d2[i, c]]
            for j in js:
                hit = np.flatnonzero(mask[j] & (cand[j] == cand[i, c]))
                terms.append(d2[j, hit[0]] if hit.size else assign.OUTSIDE)
            np.testing.assert_allclose(got[i, c], np.mean(terms), rtol=1e-5)
    with pytest.raises(ValueError, match="partner_prior needs"):
        assign.prior_distance(setup["inputs"].assign, partners=True)


def test_neighbours_leave_out_neurons_without_candidates():
    cand = np.array([[0, 1], [1, 0], [0, 0]])
    mask = np.array([[True, True], [True, False], [False, False]])  # neuron 2 has no location
    nb = assign.neighbours(np.array([0, 2, 1]), np.array([1, 0, 2]), cand, mask)
    assert sorted(zip(nb.src.tolist(), nb.dst.tolist())) == [(0, 1), (1, 0)]
    np.testing.assert_allclose(nb.weight, 1.0)  # one partner each: 2 does not count in the degree


def test_prior_location_is_nearest_candidate_and_minus_one_without(setup):
    ai = setup["inputs"].assign
    mask = np.asarray(ai.candidate_mask).copy()
    mask[0] = False  # neuron 0 loses every candidate
    ai = ai._replace(candidate_mask=jnp.asarray(mask))
    loc = assign.prior_location(ai, partners=False)
    d2 = np.where(mask, np.sum(np.asarray(ai.candidate_offset) ** 2, -1), np.inf)
    assert loc[0] == -1
    for i in range(1, setup["n"]):
        assert loc[i] == np.asarray(ai.candidates)[i, np.argmin(d2[i])]


def test_activity_fingerprint_of_known_signals():
    t = np.arange(400)
    slow = np.sin(2 * np.pi * t / 80)  # autocorrelation ≈ cos(2π l / 80) × (1/2) / var = cos(...)
    noise = np.random.default_rng(0).normal(size=400)
    x = np.stack([slow, slow, noise, noise], 1)
    x[5, 0] = np.nan  # a missing frame counts as the neuron's mean
    f, held = assign.activity_fingerprint(x, np.array([0, 0, 2, -1]), n_locations=3, lags=3)
    assert held.tolist() == [True, False, True] and np.all(f[1] == 0)
    np.testing.assert_allclose(f[0, :3], np.cos(2 * np.pi * np.arange(1, 4) / 80), atol=0.02)
    np.testing.assert_allclose(f[0, 6:], [1.0, 1.0, 1.0], atol=0.01)  # identical members: correlation 1
    assert np.all(np.abs(f[2, :3]) < 0.15) and np.isnan(f[2, 6:]).all()  # one member: no pairs
    with pytest.raises(ValueError, match="traces must be"):
        assign.activity_fingerprint(x[:, :3], np.array([0, 0, 2, -1]), 3)


def test_activity_fingerprint_ignores_missing_frames():
    """NaN padding (a shorter animal in a union) must not shrink correlations; unrecorded neurons drop."""
    rng = np.random.default_rng(1)
    t = 4000
    common = np.convolve(rng.normal(size=t + 20), np.ones(8) / 8, mode="same")[:t]
    x = np.stack([common + 0.1 * rng.normal(size=t) for _ in range(3)], 1)
    full, _ = assign.activity_fingerprint(x, np.array([0, 0, 0]), 1, lags=3)
    padded = x.copy()
    padded[t // 2:, 1] = np.nan  # neuron 1 recorded for half the time: halving would be off by ~0.3
    part, _ = assign.activity_fingerprint(padded, np.array([0, 0, 0]), 1, lags=3)
    np.testing.assert_allclose(part, full, atol=0.05)
    never = np.concatenate([x, np.full((t, 1), np.nan)], 1)
    f, held = assign.activity_fingerprint(never, np.array([0, 0, 0, 1]), 2, lags=3)
    assert held.tolist() == [True, False] and np.isfinite(f).all()


@pytest.mark.parametrize("k", [2, 3, 4])
def test_cluster_locations_finds_separated_groups_and_their_number(k):
    rng = np.random.default_rng(k)
    sizes = [12, 9, 7, 5][:k]
    centres = 10.0 * rng.normal(size=(k, 5))
    truth = np.repeat(np.arange(k), sizes)
    points = centres[truth] + 0.3 * rng.normal(size=(len(truth), 5))
    labels = assign.cluster_locations(points, max_k=6, rng=np.random.default_rng(0))
    # the same partition up to renaming, and cluster 0 the largest
    assert len(np.unique(labels)) == k
    assert all(len(np.unique(labels[truth == j])) == 1 for j in range(k))
    assert np.argmax(np.bincount(labels)) == 0
    one, _ = assign.kmeans(points, k, np.random.default_rng(1))
    assert assign.silhouette(points, one) > 0.8 > assign.silhouette(points, rng.integers(0, k, len(points)))


def test_cluster_locations_keeps_one_cluster_without_structure_and_fills_missing_pairs():
    rng = np.random.default_rng(5)
    noise = rng.normal(size=(40, 6))
    assert np.all(assign.cluster_locations(noise, max_k=6, rng=np.random.default_rng(0)) == 0)
    # two separated groups; some locations lack the pair columns (NaN) and must not form a cluster
    truth = np.repeat([0, 1], 15)
    points = 10.0 * truth[:, None] + rng.normal(size=(30, 6))
    points[[0, 3, 20], 4:] = np.nan
    labels = assign.cluster_locations(points, max_k=6, rng=np.random.default_rng(0))
    assert len(np.unique(labels)) == 2 and all(len(np.unique(labels[truth == j])) == 1 for j in (0, 1))


def test_seed_claims_raises_the_cluster_filter_of_held_locations(setup):
    ai, spec, params = setup["inputs"].assign, setup["spec"].assign, setup["params"].assign
    spec = dataclasses.replace(spec, activity_claims=2.0)
    x = np.random.default_rng(3).normal(size=(200, setup["n"]))
    seeded = assign.seed_claims(params, spec, ai, x, np.random.default_rng(0))
    diff = np.asarray(seeded.claim - params.claim)
    held = np.unique(assign.prior_location(ai, spec.partner_prior))
    held = held[held >= 0]
    np.testing.assert_allclose(diff[held].max(1), 2.0, rtol=1e-6)
    assert np.all((diff[held] > 0).sum(1) == 1)
    untouched = np.setdiff1d(np.arange(diff.shape[0]), held)
    assert np.all(diff[untouched] == 0)


# ------------------------------------------------------------------------------------------ synapses


def test_synaptic_drive_matches_dense_matrix():
    rng = np.random.default_rng(6)
    n, e = 7, 30
    pre, post = rng.integers(0, n, e), rng.integers(0, n, e)
    strength, sign = rng.uniform(0.5, 2, e), rng.choice([-1, 0, 1], e)
    params = synapses.init(pre, post, n, strength, sign)
    x = rng.normal(size=n).astype(np.float32)
    dense = np.zeros((n, n))
    np.add.at(dense, (post, pre), np.asarray(params.weight))
    np.testing.assert_allclose(synapses.drive(params, pre, post, x, n), np.tanh(dense @ x), rtol=1e-5, atol=1e-6)
    # Initial weights carry the sign (unknown = +1) and are normalised by the post neuron's input strength.
    assert np.all(np.sign(params.weight) == np.where(sign < 0, -1, 1))
    total = np.bincount(post, weights=strength, minlength=n)
    np.testing.assert_allclose(np.abs(params.weight), strength / (1 + total[post]), rtol=1e-6)


# --------------------------------------------------------------------------------------------- model


def test_step_vmap_equals_loop_over_pairs(setup):
    """The vmapped step's pair predictions equal computing each (location, filter) pair on its own."""
    spec, params, inputs, temps = setup["spec"], setup["params"], setup["inputs"], setup["temps"]
    ctx = model.context(spec, params, inputs, temps)
    x_hist = jax.random.normal(jax.random.key(7), (HISTORY, spec.n_neurons))
    stim = jnp.array([0.3])
    out, _ = model.step(spec, params, inputs, ctx, x_hist, stim, model.init_state(spec), temps)
    from mesojax import basis

    bank = basis.make_bank(spec.basis)
    d = synapses.drive(params.synapses, inputs.syn_pre, inputs.syn_post, x_hist[-1], spec.n_neurons)
    channels = jnp.concatenate([x_hist, d[None]], 0)
    members = np.asarray(inputs.assign.members)
    for loc in [0, spec.n_locations // 2, spec.n_locations - 1]:
        for b in range(spec.n_filters):
            pp = interface.pair(params.interface, loc, b)
            xm = channels[:, members[loc]]
            u = interface.encode(pp, ctx.port_maps[loc, b], xm, ctx.member_weight[loc, :, b])
            v, _ = bank.apply(jax.tree.map(lambda a: a[b], params.basis), jax.tree.map(lambda a: a[b], params.arch),
                              jnp.concatenate([u.reshape(-1), stim]), jnp.zeros(spec.basis.state_dim),
                              temperature=temps.arch)
            y = interface.decode(pp, ctx.port_maps[loc, b], v, x_hist[-1, members[loc]])
            valid = np.asarray(inputs.tables.member_mask[loc])  # padded slots predict nothing anyone reads
            np.testing.assert_allclose(out.pair_pred[loc, b][valid], y[valid], rtol=2e-4, atol=2e-5)
    # Mixing: x̂_i = Σ a[i,c,b] y[cand, b, slot].
    cand, slot = np.asarray(inputs.tables.candidates), np.asarray(inputs.tables.candidate_slot)
    i = 3
    expected = sum(
        float(ctx.a[i, c, b]) * float(out.pair_pred[cand[i, c], b, slot[i, c]])
        for c in range(spec.n_candidates) for b in range(spec.n_filters) if inputs.assign.candidate_mask[i, c]
    )
    np.testing.assert_allclose(float(out.x_next[i]), expected, rtol=1e-4)


@pytest.mark.parametrize("fixed", [False, True])
def test_pair_locations_compute_only_the_chosen_pairs(setup, fixed):
    """With every location listed, the step is the full one; with a subset, the listed pairs are computed as
    before and the others output v = 0 and keep their recurrent state."""
    from mesojax import basis

    spec, params, inputs, temps = setup["spec"], setup["params"], setup["inputs"], setup["temps"]
    if fixed:
        params = params._replace(arch=basis.discretize(params.arch))
        spec = model.with_fixed_arch(spec, params.arch)
    ctx = model.context(spec, params, inputs, temps)
    x = jax.random.normal(jax.random.key(7), (HISTORY + 3, spec.n_neurons))
    stim = jax.random.normal(jax.random.key(8), (HISTORY + 3, 1))
    state = jax.random.normal(jax.random.key(9), model.init_state(spec).shape)
    full = model.filter_outputs(spec, params, inputs, ctx, x, stim, temps)
    (step_full, state_full) = model.step(spec, params, inputs, ctx, x[:HISTORY], stim[HISTORY], state, temps)
    every = tuple(tuple(range(spec.n_locations)) for _ in range(spec.n_filters))
    np.testing.assert_allclose(model.filter_outputs(model.with_pairs(spec, every), params, inputs, ctx, x, stim, temps),
                               full, rtol=1e-5, atol=1e-6)
    rng = np.random.default_rng(1)
    chosen = tuple(tuple(int(i) for i in np.flatnonzero(rng.random(spec.n_locations) < share))
                   for share in np.linspace(0.0, 0.8, spec.n_filters))  # filter 0: no location at all
    on = np.zeros((spec.n_locations, spec.n_filters), bool)
    for b, locs in enumerate(chosen):
        on[list(locs), b] = True
    sub = model.with_pairs(spec, chosen)
    part = np.asarray(model.filter_outputs(sub, params, inputs, ctx, x, stim, temps))
    np.testing.assert_allclose(part[:, on], np.asarray(full)[:, on], rtol=1e-5, atol=1e-6)
    assert not part[:, ~on].any()
    step_sub, state_sub = model.step(sub, params, inputs, ctx, x[:HISTORY], stim[HISTORY], state, temps)
    np.testing.assert_allclose(np.asarray(state_sub)[on], np.asarray(state_full)[on], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(state_sub)[~on], np.asarray(state)[~on])
    members_last = spatial.gather_members(x[HISTORY - 1], inputs.tables)
    silent = interface.decode_pairs(params.interface.pairs, ctx.port_maps, jnp.zeros_like(full[0]), members_last)
    np.testing.assert_allclose(np.asarray(step_sub.pair_pred)[~on], np.asarray(silent)[~on], rtol=1e-6)
    with pytest.raises(ValueError, match="pair_locations: 2 filters given"):
        model.with_pairs(spec, chosen[:2])


@pytest.mark.parametrize("threshold", [1e-3, 1e-1])
def test_active_pairs_leave_out_only_pairs_below_the_threshold(setup, threshold):
    """Left-out pairs carry no member weight of `threshold` or more, and the forecast moves by at most the
    weight they carry times the largest decoded output."""
    spec, params, inputs = setup["spec"], setup["params"], setup["inputs"]
    temps = model.Temperatures(jnp.float32(1.0), jnp.float32(0.05), jnp.float32(1.0))  # a sharp assignment
    ctx = model.context(spec, params, inputs, temps)
    chosen = model.active_pairs(ctx, inputs, threshold)
    weight = np.asarray(ctx.member_weight).max(axis=1)  # [L, B]
    on = np.zeros_like(weight, bool)
    for b, locs in enumerate(chosen):
        on[list(locs), b] = True
    real = np.asarray(inputs.tables.location_mask)
    np.testing.assert_array_equal(on, (weight >= threshold) & real[:, None])
    assert 0 < on.sum() < real.sum() * spec.n_filters
    x = jax.random.normal(jax.random.key(7), (HISTORY + 3, spec.n_neurons))
    stim = jnp.zeros((HISTORY + 3, 1))
    full, _ = model.rollout(spec, params, inputs, ctx, x, stim, temps, n_teacher=3)
    sub, _ = model.rollout(model.with_pairs(spec, chosen), params, inputs, ctx, x, stim, temps, n_teacher=3)
    v = model.filter_outputs(spec, params, inputs, ctx, x, stim, temps)  # [R, L, B, M]
    decoded = jnp.abs(jnp.exp(params.interface.pairs.log_gain_out)[None, ..., None]
                      * jnp.einsum("lbkm,rlbm->rlbk", ctx.port_maps, v))
    left_out = np.where(~on, weight, 0.0)  # [L, B]
    bound = float(jnp.max(decoded)) * float(left_out.sum(axis=1).max()) * spec.n_candidates
    assert float(jnp.max(jnp.abs(full.x_next - sub.x_next))) <= bound + 1e-6


@pytest.mark.parametrize("window_norm", [False, True])
def test_window_norm_makes_forecasts_shift_with_the_inputs(setup, window_norm):
    """With per-step instance normalisation a constant added to a neuron's history is added to its
    forecast and to its sphere slots' pair predictions; behaviour and filter state do not change."""
    spec = dataclasses.replace(setup["spec"], window_norm=window_norm)
    params, inputs, temps = setup["params"], setup["inputs"], setup["temps"]
    ctx = model.context(spec, params, inputs, temps)
    x_hist = jax.random.normal(jax.random.key(3), (HISTORY, spec.n_neurons))
    shift = 3.0 * jax.random.normal(jax.random.key(4), (spec.n_neurons,))
    stim = jnp.array([0.2])
    run = lambda x: model.step(spec, params, inputs, ctx, x, stim, model.init_state(spec), temps)  # noqa: E731
    (a, state_a), (b, state_b) = run(x_hist), run(x_hist + shift)
    moved = np.allclose(b.x_next, a.x_next + shift, atol=1e-4)
    assert moved == window_norm
    if window_norm:
        np.testing.assert_allclose(b.behaviour, a.behaviour, atol=1e-4)
        np.testing.assert_allclose(state_b, state_a, atol=1e-4)
        valid = np.broadcast_to(np.asarray(inputs.tables.member_mask)[:, None, :], a.pair_pred.shape)
        slot_shift = np.asarray(shift)[np.asarray(inputs.tables.members)][:, None, :]  # [L, 1, K]
        moved_slots = np.asarray(b.pair_pred - a.pair_pred)
        np.testing.assert_allclose(moved_slots[valid], np.broadcast_to(slot_shift, valid.shape)[valid], atol=1e-4)


def test_context_member_weight_inverts_the_candidate_table(setup):
    spec, params, inputs, temps = setup["spec"], setup["params"], setup["inputs"], setup["temps"]
    ctx = model.context(spec, params, inputs, temps)
    t = setup["tables"]
    checked = 0
    for loc in range(spec.n_locations):
        for k in range(spec.n_members):
            if t.member_mask[loc, k]:
                i = t.members[loc, k]
                c = int(np.flatnonzero((t.candidates[i] == loc) & t.candidate_mask[i])[0])
                np.testing.assert_allclose(ctx.member_weight[loc, k], ctx.a[i, c], rtol=1e-6)
                checked += 1
    assert checked == int(t.member_mask.sum())
    assert float(jnp.abs(ctx.member_weight * ~inputs.assign.member_mask[..., None]).max()) == 0.0


def test_teacher_forced_rollout_equals_step_loop(setup):
    spec, params, inputs, temps = setup["spec"], setup["params"], setup["inputs"], setup["temps"]
    ctx = model.context(spec, params, inputs, temps)
    x = jax.random.normal(jax.random.key(8), (HISTORY + 4, spec.n_neurons))
    stim = jax.random.normal(jax.random.key(9), (HISTORY + 4, 1))
    outs, final = model.rollout(spec, params, inputs, ctx, x, stim, temps, n_teacher=4)
    state = model.init_state(spec)
    for r in range(4):
        # Step r predicts frame H + r and reads that frame's stimulus.
        out, state = model.step(spec, params, inputs, ctx, x[r:r + HISTORY], stim[HISTORY + r], state, temps)
        np.testing.assert_allclose(outs.x_next[r], out.x_next, rtol=1e-4, atol=1e-5)
        if r == 0:
            np.testing.assert_allclose(outs.pair_pred, out.pair_pred, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(final, state, rtol=1e-4, atol=1e-5)
    assert outs.pair_pred.shape == (spec.n_locations, spec.n_filters, spec.n_members)


def test_stimulus_reaches_the_frame_it_is_delivered_in(setup):
    """An impulse of stimulus at frame H + 2 changes predictions of frame H + 2 onwards, not before."""
    spec, params, inputs, temps = setup["spec"], setup["params"], setup["inputs"], setup["temps"]
    ctx = model.context(spec, params, inputs, temps)
    x = jax.random.normal(jax.random.key(12), (HISTORY + 4, spec.n_neurons))
    quiet = jnp.zeros((HISTORY + 4, 1))
    kicked = quiet.at[HISTORY + 2].set(5.0)
    a, _ = model.rollout(spec, params, inputs, ctx, x, quiet, temps, n_teacher=4)
    b, _ = model.rollout(spec, params, inputs, ctx, x, kicked, temps, n_teacher=4)
    np.testing.assert_allclose(a.x_next[:2], b.x_next[:2], rtol=1e-6)
    assert not np.allclose(a.x_next[2], b.x_next[2])


def test_free_rollout_feeds_predictions_back(setup):
    spec, params, inputs, temps = setup["spec"], setup["params"], setup["inputs"], setup["temps"]
    ctx = model.context(spec, params, inputs, temps)
    x = jax.random.normal(jax.random.key(10), (HISTORY + 3, spec.n_neurons))
    stim = jnp.zeros((HISTORY + 3, 1))
    free, _ = model.rollout(spec, params, inputs, ctx, x, stim, temps, n_teacher=0)
    # Replacing the (unused) future frames must not change a free-running rollout.
    free2, _ = model.rollout(spec, params, inputs, ctx, x.at[HISTORY:].set(99.0), stim, temps, n_teacher=0)
    np.testing.assert_allclose(free.x_next, free2.x_next, rtol=1e-6)
    forced, _ = model.rollout(spec, params, inputs, ctx, x, stim, temps, n_teacher=3)
    np.testing.assert_allclose(free.x_next[0], forced.x_next[0], rtol=1e-6)
    assert not np.allclose(free.x_next[2], forced.x_next[2])


# -------------------------------------------------------------------------------------- loss + optim


@pytest.fixture(scope="module")
def loss_and_grad(setup):
    """One compiled ``(loss, metrics), grads`` function (no teacher forcing) shared by the tests below."""
    spec, inputs, temps = setup["spec"], setup["inputs"], setup["temps"]
    fn = jax.value_and_grad(losses.loss_fn, has_aux=True)
    return jax.jit(lambda p, b: fn(p, b, spec, inputs, losses.Weights(), temps, 0))


def _batch(setup, n_windows=2, length=HISTORY + 3):
    rng = np.random.default_rng(11)
    n = setup["n"]
    x = rng.normal(size=(n_windows, length, n)).astype(np.float32)
    mask = (rng.random(x.shape) > 0.1).astype(np.float32)
    return windows.Batch(
        x=x * mask, x_mask=mask, stimulus=rng.normal(size=(n_windows, length, 1)).astype(np.float32),
        behaviour=rng.normal(size=(n_windows, length, 2)).astype(np.float32),
        behaviour_mask=np.ones((n_windows, length, 2), np.float32),
        modes=rng.integers(-1, 2, (n_windows, length)).astype(np.int32),
    )


def test_loss_terms_logged_and_every_group_gets_gradient(setup, loss_and_grad):
    """Every group gets a gradient, except the fallback: here every neuron has candidates, so no
    prediction reads it and its gradient is exactly zero."""
    assert setup["tables"].candidate_mask.any(1).all()
    (loss, metrics), grads = loss_and_grad(setup["params"], _batch(setup))
    assert set(losses.TERMS) <= set(metrics)
    weights = losses.Weights()
    np.testing.assert_allclose(loss, sum(getattr(weights, k) * metrics[k] for k in losses.TERMS), rtol=1e-5)
    for group in optim.GROUPS:
        leaves = jax.tree.leaves(getattr(grads, group))
        assert leaves, group
        assert all(np.isfinite(np.asarray(g)).all() for g in leaves), group
        largest = max(float(jnp.abs(g).max()) for g in leaves)
        assert (largest == 0.0) if group == "fallback" else (largest > 0), (group, largest)


def test_cut_is_the_expected_fraction_of_partners_in_another_domain(setup):
    ai, partners = _coherent(setup)
    inputs = setup["inputs"]._replace(assign=ai)
    spec, params, temps = setup["spec"], setup["params"], setup["temps"]
    weights = losses.Weights(cut=0.5)
    _, m = jax.jit(lambda p, b: losses.loss_fn(p, b, spec, inputs, weights, temps, 0))(params, _batch(setup))
    a = np.asarray(model.context(spec, params, inputs, temps).a)
    cand, mask = np.asarray(ai.candidates), np.asarray(ai.candidate_mask)

    def same_domain(i, j):  # P(i and j pick the same (location, filter))
        return sum(a[i, c] @ a[j, np.flatnonzero(mask[j] & (cand[j] == cand[i, c]))[0]]
                   for c in np.flatnonzero(mask[i]) if np.any(mask[j] & (cand[j] == cand[i, c])))

    cohesion = [np.mean([same_domain(i, j) for j in js]) for i, js in partners.items() if js]
    np.testing.assert_allclose(m["cut"], 1.0 - np.mean(cohesion), rtol=1e-5)
    assert 0.0 < float(m["cut"]) < 1.0


def test_masked_targets_do_not_change_the_loss(setup, loss_and_grad):
    """Unobserved future frames are neither scored nor (without teacher forcing) fed back as inputs."""
    batch = _batch(setup)
    future = np.zeros_like(batch.x_mask, bool)
    future[:, HISTORY:] = True
    poisoned = batch._replace(x=np.where((batch.x_mask > 0) | ~future, batch.x, 1e3).astype(np.float32))
    (_, clean), _ = loss_and_grad(setup["params"], batch)
    (_, dirty), _ = loss_and_grad(setup["params"], poisoned)
    assert float(clean["prediction"]) > 0
    for term in ("prediction", "local"):
        np.testing.assert_allclose(dirty[term], clean[term], rtol=1e-5)


def _optim_cfg(mode):
    return ml_collections.ConfigDict(dict(learning_rate=1e-2, warmup_steps=0, total_steps=10, clip_norm=1.0,
                                          mode=mode, alternate_every=1, lr_scale={"assign": 2.0}))


@pytest.mark.parametrize("mode", optim.MODES)
def test_alternating_updates_only_the_groups_in_turn(setup, mode):
    params = setup["params"]
    tx = optim.make_optimizer(_optim_cfg(mode))
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    update = jax.jit(tx.update)
    for step in range(2):
        before = state
        updates, state = update(grads, state, params)
        phase = optim.phase_of(_optim_cfg(mode), step)
        for group in optim.GROUPS:
            moved = max(float(jnp.abs(u).max()) for u in jax.tree.leaves(getattr(updates, group)))
            active = phase == "joint" or (group in optim.BASIS_PHASE) == (phase == "basis")
            assert (moved > 0) == active, (step, group, phase)
            # A frozen group keeps its Adam moments exactly; an active one updates them.
            inner_old = before.inner_states[group].inner_state.inner
            inner_new = state.inner_states[group].inner_state.inner
            same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(inner_old), jax.tree.leaves(inner_new)))
            assert same == (not active), (step, group)


def test_temperatures_anneal_from_start_to_end():
    cfg = ml_collections.ConfigDict(dict(steps=100, arch=(1.0, 0.1), assign=(2.0, 0.2), ports=(1.0, 1.0)))
    t0, t_mid, t_end, t_after = (optim.temperatures(cfg, s) for s in (0, 50, 100, 500))
    np.testing.assert_allclose([t0.arch, t0.assign, t0.ports], [1.0, 2.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(t_mid.arch, np.sqrt(0.1), rtol=1e-5)
    np.testing.assert_allclose([t_end.arch, t_after.assign], [0.1, 0.2], rtol=1e-5)


def test_bad_optim_config_is_rejected():
    cfg = _optim_cfg("joint")
    cfg.lr_scale = {"nonsense": 1.0}
    with pytest.raises(ValueError, match="unknown groups"):
        optim.make_optimizer(cfg)
    cfg = _optim_cfg("sideways")
    with pytest.raises(ValueError, match="mode"):
        optim.make_optimizer(cfg)


def test_optimizer_step_reduces_loss(setup, loss_and_grad):
    params, batch = setup["params"], _batch(setup)
    tx = optim.make_optimizer(_optim_cfg("joint"))
    state = tx.init(params)
    update = jax.jit(lambda g, s, p: tx.update(g, s, p))
    losses_seen = []
    for _ in range(15):
        (loss, _), grads = loss_and_grad(params, batch)
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
        losses_seen.append(float(loss))
    assert losses_seen[-1] < 0.9 * losses_seen[0]


# ------------------------------------------------------- neurons without position, groups (disjoint union)


@pytest.fixture(scope="module")
def groups():
    """Two circuits side by side (a disjoint union), each with unplaced neurons, one behaviour target
    per group, and a jitted step. Same model sizes as `setup` (so `setup`'s basis transfers to it)."""
    rng = np.random.default_rng(20)
    parts = []
    for name, (n_placed, n_unplaced) in (("w1", (9, 2)), ("w2", (7, 1))):
        xyz = np.concatenate([rng.uniform(0, 30, (n_placed, 3)), np.full((n_unplaced, 3), np.nan)])
        ids = [f"n{k}" for k in range(len(xyz))]
        c = Connectome(ids=ids, xyz=xyz, cell_type=rng.choice(["E", "I"], len(xyz)),
                       # Synapses among placed neurons only, as source_circuit builds them.
                       pre=rng.integers(0, n_placed, 12), post=rng.integers(0, n_placed, 12))
        rec = Recording(traces=np.zeros((3, len(xyz))), timestamps=np.arange(3.0), neuron_ids=ids)
        parts.append((name, c, rec))
    u = disjoint_union(parts, gap_um=50.0)
    xyz, group = u.connectome.xyz, u.neuron_group
    tables = spatial.build_tables(xyz, spatial.build_grid(xyz, spatial.GridSpec(diameter_um=40.0)))
    loc_group = np.where(tables.member_mask.any(1), group[tables.members[:, 0]], 0).astype(np.int32)
    member_group = np.where(tables.member_mask, group[tables.members], loc_group[:, None])
    assert (member_group == loc_group[:, None]).all()  # no sphere mixes the two circuits
    n = len(xyz)
    behaviour_group = np.array([1, 0], np.int32)  # target 0 reads group 1, target 1 reads group 0
    inputs = model.build_inputs(tables, rng.normal(size=(n, 5)), u.connectome.cell_type,
                                cell_types=("E", "I"), syn_pre=u.connectome.pre, syn_post=u.connectome.post,
                                location_group=loc_group, behaviour_group=behaviour_group)
    spec = model.make_spec(
        n_neurons=n, n_locations=tables.members.shape[0], n_members=tables.members.shape[1],
        n_candidates=tables.candidates.shape[1], n_features=inputs.member_features.shape[-1],
        n_filters=N_FILTERS, n_ports=N_PORTS, history=HISTORY, n_stimulus=1, n_behaviour=2,
        use_synapses=True, n_groups=2, basis_kwargs=dict(max_width=8, width_step=4),
    )
    params = model.init(jax.random.key(21), spec, inputs)
    temps = model.Temperatures(jnp.float32(1.0), jnp.float32(0.5), jnp.float32(1.0))

    def run(p, x_hist):
        ctx = model.context(spec, p, inputs, temps)
        out, _ = model.step(spec, p, inputs, ctx, x_hist, jnp.zeros((1,)), model.init_state(spec), temps)
        return out.x_next, out.behaviour

    grad_fallback = jax.jit(jax.grad(
        lambda fb, p, x_hist, w: jnp.sum(run(p._replace(fallback=fb), x_hist)[0] * w)))
    unplaced = ~np.asarray(tables.candidate_mask).any(1)
    np.testing.assert_array_equal(unplaced, ~u.connectome.placed)
    assert unplaced.sum() == 3
    return dict(spec=spec, params=params, inputs=inputs, run=jax.jit(run), grad_fallback=grad_fallback,
                unplaced=unplaced, group=group, behaviour_group=behaviour_group, n=n, rng=rng)


def test_fallback_at_init_is_persistence(groups):
    x_hist = jnp.asarray(groups["rng"].normal(size=(HISTORY, groups["n"])), jnp.float32)
    x_next, _ = groups["run"](groups["params"], x_hist)
    off = groups["unplaced"]
    np.testing.assert_array_equal(np.asarray(x_next)[off], np.asarray(x_hist)[-1, off])
    assert np.isfinite(np.asarray(x_next)).all()


def test_fallback_predicts_neurons_without_candidates_by_its_linear_formula(groups):
    rng, n, off = groups["rng"], groups["n"], groups["unplaced"]
    x_hist = jnp.asarray(rng.normal(size=(HISTORY, n)), jnp.float32)
    weight = rng.normal(size=(n, HISTORY)).astype(np.float32)
    bias = rng.normal(size=n).astype(np.float32)
    params = groups["params"]._replace(fallback=model.Fallback(jnp.asarray(weight), jnp.asarray(bias)))
    x_next, _ = groups["run"](params, x_hist)
    want = (weight * np.asarray(x_hist).T).sum(1) + bias  # Σ_h w[i,h] x_hist[h,i] + c_i
    np.testing.assert_allclose(np.asarray(x_next)[off], want[off], rtol=1e-6, atol=1e-6)
    # Neurons with candidates never read the fallback.
    x_default, _ = groups["run"](groups["params"], x_hist)
    np.testing.assert_array_equal(np.asarray(x_next)[~off], np.asarray(x_default)[~off])
    # An unplaced neuron's history reaches its own prediction only.
    i = int(np.flatnonzero(off)[0])
    x_next2, _ = groups["run"](params, x_hist.at[:, i].add(3.0))
    changed = np.flatnonzero(np.asarray(x_next2) != np.asarray(x_next))
    assert changed.tolist() == [i]


def test_fallback_gradient_only_reaches_neurons_without_candidates(groups):
    rng, n, off = groups["rng"], groups["n"], groups["unplaced"]
    x_hist = jnp.asarray(rng.normal(size=(HISTORY, n)), jnp.float32)
    g = groups["grad_fallback"](groups["params"].fallback, groups["params"], x_hist, jnp.ones((n,)))
    w, b = np.asarray(g.weight), np.asarray(g.bias)
    assert (w[~off] == 0).all() and (b[~off] == 0).all()
    np.testing.assert_allclose(w[off], np.asarray(x_hist).T[off], rtol=1e-6)  # d x̂_i / d w[i,h] = x[h,i]
    np.testing.assert_allclose(b[off], 1.0)


@pytest.mark.parametrize("target", [0, 1])
def test_behaviour_target_reads_only_its_groups_locations(groups, target):
    rng, n, off, group = groups["rng"], groups["n"], groups["unplaced"], groups["group"]
    g = int(groups["behaviour_group"][target])
    other = 1 - target
    x_hist = jnp.asarray(rng.normal(size=(HISTORY, n)), jnp.float32)
    # Perturb every neuron of the *other* group (placed ones: they feed its locations).
    noise = rng.normal(size=(HISTORY, n)).astype(np.float32) * (group != g)
    _, beh = groups["run"](groups["params"], x_hist)
    _, beh2 = groups["run"](groups["params"], x_hist + noise)
    np.testing.assert_array_equal(beh2[target], beh[target])
    assert abs(float(beh2[other] - beh[other])) > 1e-6
    # Unplaced neurons are in no location: they reach no behaviour target.
    _, beh3 = groups["run"](groups["params"], x_hist.at[:, off].add(5.0))
    np.testing.assert_array_equal(beh3, beh)


@pytest.mark.parametrize("n_groups, n_modes", [(2, 2), (0, 0), (-1, 0)])
def test_make_spec_rejects_modes_with_groups_and_no_groups(n_groups, n_modes):
    with pytest.raises(ValueError, match="n_groups"):
        model.make_spec(n_neurons=4, n_locations=2, n_members=3, n_candidates=2, n_features=3, n_filters=2,
                        n_ports=2, n_modes=n_modes, n_groups=n_groups)


# --------------------------------------------------------------------------------------------- freeze


def _tiny_params():
    """A Params with one small leaf per group (the optimiser only sees the group structure)."""
    return model.Params(**{g: {"w": jnp.arange(k + 1, k + 4, dtype=jnp.float32)}
                           for k, g in enumerate(optim.GROUPS)})


def test_fallback_is_an_optimizer_group():
    assert "fallback" in optim.GROUPS and "fallback" in optim.DOMAIN_PHASE
    assert set(optim.BASIS_PHASE) | set(optim.DOMAIN_PHASE) == set(optim.GROUPS)
    assert set(model.Params._fields) == set(optim.GROUPS)


@pytest.mark.parametrize("mode", optim.MODES)
@pytest.mark.parametrize("freeze", [("basis", "arch"), ("fallback",), ("interface", "readout", "synapses")])
def test_frozen_groups_never_change(mode, freeze):
    cfg = _optim_cfg(mode)
    cfg.freeze = freeze
    tx = optim.make_optimizer(cfg)
    params = start = _tiny_params()
    state = tx.init(params)
    changed = {g: False for g in optim.GROUPS}
    for step in range(4):
        grads = jax.tree.map(lambda a: jnp.full_like(a, (-1.0) ** step), params)
        updates, state = tx.update(grads, state, params)
        new = optax.apply_updates(params, updates)
        phase = optim.phase_of(cfg, step)
        for g in optim.GROUPS:
            moved = not np.array_equal(getattr(new, g)["w"], getattr(params, g)["w"])
            active = g not in freeze and (phase == "joint" or (g in optim.BASIS_PHASE) == (phase == "basis"))
            assert moved == active, (step, g, phase)
            changed[g] |= moved
        params = new
    for g in optim.GROUPS:
        same = np.array_equal(getattr(params, g)["w"], getattr(start, g)["w"])
        assert same == (g in freeze), g
        assert changed[g] == (g not in freeze), g


def test_unknown_frozen_group_is_rejected():
    cfg = _optim_cfg("joint")
    cfg.freeze = ("basis", "filters")
    with pytest.raises(ValueError, match=r"'freeze'.*filters"):
        optim.make_optimizer(cfg)


# ------------------------------------------------------------------------------------------- transfer


TRAINED_TARGETS = ("w1/velocity", "w2/velocity")
NEW_TARGETS = ("w5/turn", "w5/velocity")


@pytest.fixture(scope="module")
def transferred(setup, groups):
    """`setup`'s parameters (shifted, so that every leaf differs from a fresh init) transferred to the
    two-group circuit of `groups`."""
    trained = jax.tree.map(lambda a: a + 1.0, setup["params"])
    fresh = groups["params"]
    return trained, fresh, transfer.transfer_params(trained, fresh, TRAINED_TARGETS, NEW_TARGETS)


def _assert_tree_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_transfer_params_takes_each_part_from_the_right_model(transferred):
    trained, fresh, out = transferred
    assert jax.tree.structure(out) == jax.tree.structure(fresh)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(fresh)):
        assert a.shape == b.shape
    _assert_tree_equal(out.basis, trained.basis)
    _assert_tree_equal(out.arch, trained.arch)
    _assert_tree_equal(out.interface.port_net, trained.interface.port_net)
    _assert_tree_equal(out.interface.pairs, fresh.interface.pairs)
    _assert_tree_equal(out.assign.net, trained.assign.net)
    for field in ("free", "claim", "gate"):
        np.testing.assert_array_equal(getattr(out.assign, field), getattr(fresh.assign, field))
    np.testing.assert_array_equal(out.readout.pair_logit, fresh.readout.pair_logit)
    _assert_tree_equal(out.fallback, fresh.fallback)
    _assert_tree_equal(out.synapses, fresh.synapses)
    assert out.readout.w_mode is None and out.readout.b_mode is None  # the new circuit has no modes


def test_transfer_params_behaviour_maps_start_from_targets_of_the_same_name(transferred):
    trained, fresh, out = transferred
    w, b = np.asarray(out.readout.w_beh), np.asarray(out.readout.b_beh)
    # "w5/velocity" <- mean of "w1/velocity" and "w2/velocity"; "w5/turn" has no match: fresh.
    np.testing.assert_allclose(w[..., 1], np.asarray(trained.readout.w_beh).mean(-1), rtol=1e-6)
    np.testing.assert_allclose(b[1], np.asarray(trained.readout.b_beh).mean(), rtol=1e-6)
    np.testing.assert_array_equal(w[..., 0], fresh.readout.w_beh[..., 0])
    np.testing.assert_array_equal(b[0], fresh.readout.b_beh[0])
    assert transfer.target_name("a/b/velocity") == "velocity"
    assert transfer.target_name("velocity") == "velocity"


@pytest.mark.filterwarnings("ignore:Some donated buffers were not usable")
def test_transfer_params_copies_what_it_takes_from_trained(transferred):
    trained, _, out = transferred
    pairs = [(out.basis, trained.basis), (out.arch, trained.arch), (out.interface.port_net,
             trained.interface.port_net), (out.assign.net, trained.assign.net)]
    for new, old in pairs:
        for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(old)):
            assert a is not b
            assert a.unsafe_buffer_pointer() != b.unsafe_buffer_pointer()
    # Donating (consuming) the result leaves `trained` intact.
    saved = jax.tree.map(np.array, trained.basis)
    copy = jax.tree.map(jnp.array, out.basis)  # keep `out` usable for the other tests
    jax.jit(lambda p: jax.tree.map(lambda a: 2 * a, p), donate_argnums=0)(copy)
    for a, b in zip(jax.tree.leaves(trained.basis), jax.tree.leaves(saved)):
        assert not a.is_deleted()
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("field", ["basis", "arch"])
def test_transfer_params_rejects_a_different_basis(setup, field):
    """A new model whose filter family has another shape (here: one filter more) cannot reuse the basis."""
    params = setup["params"]
    grown = jax.tree.map(lambda a: jnp.concatenate([a, a[:1]]), getattr(params, field))
    with pytest.raises(ValueError, match=field):
        transfer.transfer_params(params, params._replace(**{field: grown}), TRAINED_TARGETS, NEW_TARGETS)


def _celegans_config():
    path = pathlib.Path(__file__).resolve().parents[1] / "configs" / "celegans.py"
    mod_spec = importlib.util.spec_from_file_location("celegans_config", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module.get_config()


def _base_config():
    c = base_config()
    c.data.animals = ("a1", "a2")
    c.optim.freeze = ("fallback",)
    c.transfer.animals = ("a3",)
    c.transfer.steps = 7
    return c.lock()


@pytest.mark.parametrize("make", [_celegans_config, _base_config], ids=["celegans", "base"])
def test_transfer_config(make):
    config = make()
    before = config.to_dict()
    animal = "held-out"
    cfg = transfer.transfer_config(config, animal)
    steps = config.transfer.steps
    assert cfg.data.animals == (animal,)
    assert cfg.train.steps == cfg.anneal.steps == cfg.optim.total_steps == steps
    assert {"basis", "arch"} <= set(cfg.optim.freeze)
    assert set(config.optim.freeze) <= set(cfg.optim.freeze)
    end = config.anneal.arch[1]
    assert tuple(cfg.anneal.arch) == (end, end)
    assert cfg.optim.warmup_steps <= max(steps // 4, 0)
    assert config.to_dict() == before  # the original config is untouched
    optim.make_optimizer(cfg.optim)  # the frozen group names are valid


@pytest.mark.parametrize("hard_peak", [0.0, 0.5])
def test_the_hard_phase_restarts_the_schedule(hard_peak):
    """With optim.hard_peak the steps after arch_steps get a warm-up and a cosine of their own (peaking at
    hard_peak × the rate); without it one schedule spans both phases. Constant gradients make Adam's
    step the rate itself."""
    cfg = _optim_cfg("joint")
    cfg.warmup_steps, cfg.total_steps, cfg.arch_steps, cfg.hard_peak = 2, 20, 10, hard_peak
    tx = optim.make_optimizer(cfg)
    params = _tiny_params()
    state = tx.init(params)
    rates, arch_moves = [], []
    for _ in range(20):
        updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
        rates.append(float(jnp.abs(updates.basis["w"]).max()) / cfg.learning_rate)
        arch_moves.append(float(jnp.abs(updates.arch["w"]).max()))
    assert all(m > 0 for m in arch_moves[1:10]) and not any(arch_moves[10:])  # the search ends at arch_steps
    rates = np.asarray(rates)
    if hard_peak:
        assert rates[9] < 0.1  # the search's schedule has decayed by its end
        assert rates[10] == 0.0 and rates[11] > rates[9]  # a fresh warm-up (of hard_steps // 10 = 1 step)
        np.testing.assert_allclose(rates[10:].max(), hard_peak, rtol=0.02)
    else:
        assert np.all(np.diff(rates[2:]) <= 1e-7) and rates[10] > 0.4  # one cosine, mid-way at the switch
