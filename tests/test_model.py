"""Tests for the model components: interface, assignment, synapses, model step/rollout, losses, optim."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mesojax import assign, interface, losses, model, optim, spatial, synapses
from mesojax.data import windows

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
    (loss, metrics), grads = loss_and_grad(setup["params"], _batch(setup))
    assert set(losses.TERMS) <= set(metrics)
    weights = losses.Weights()
    np.testing.assert_allclose(loss, sum(getattr(weights, k) * metrics[k] for k in losses.TERMS), rtol=1e-5)
    for group in optim.GROUPS:
        leaves = jax.tree.leaves(getattr(grads, group))
        assert leaves, group
        assert all(np.isfinite(np.asarray(g)).all() for g in leaves), group
        assert max(float(jnp.abs(g).max()) for g in leaves) > 0, group


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
