"""Tests for mesojax.basis: the bank of architecture-switchable basis filters."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mesojax import basis

SPEC = basis.BasisSpec(n_in=3, n_out=2, n_layers=2, max_width=8, width_step=4, pool_size=2)
N_FILTERS = 3


@pytest.fixture(scope="module")
def bank() -> basis.Bank:
    return basis.make_bank(SPEC)


def _randomize_params(params: basis.Params, seed: int) -> basis.Params:
    """Non-zero biases and σ ≠ 1, so that references check every parameter."""
    rng = np.random.default_rng(seed)

    def noise(x):
        return jnp.asarray(0.3 * rng.standard_normal(x.shape), jnp.float32)

    return params._replace(b=noise(params.b), log_sigma=noise(params.log_sigma), b_out=noise(params.b_out))


def _random_arch(arch: basis.Arch, seed: int) -> basis.Arch:
    """Random soft logits, each ≥ 0.5 away from the 0.5-gate threshold; type logits ≥ 0.7 apart."""
    rng = np.random.default_rng(seed)

    def away(x):
        r = rng.standard_normal(np.shape(x))
        return jnp.asarray(r + 0.5 * np.sign(r), jnp.float32)

    types = 0.7 * rng.permuted(np.broadcast_to(np.arange(arch.types.shape[-1]), arch.types.shape), axis=-1)
    # Filter b: both layers active, then layer 2 passed through, then layer 1 passed through.
    active = np.array([[1, 1], [1, -1], [-1, 1]])[: arch.layer.shape[0]]
    return basis.Arch(
        units=away(arch.units),
        layer=jnp.asarray(active * np.abs(np.asarray(away(arch.layer))), jnp.float32),
        types=jnp.asarray(types, jnp.float32),
        skip=away(arch.skip),
        recurrent=None if arch.recurrent is None else away(arch.recurrent),
    )


@pytest.fixture(scope="module")
def bank_values(bank):
    """A bank with random soft architectures, inputs and states."""
    params, arch = bank.init(jax.random.key(42), N_FILTERS)
    rng = np.random.default_rng(43)
    u = jnp.asarray(rng.standard_normal((N_FILTERS, SPEC.n_in)), jnp.float32)
    state = jnp.asarray(rng.standard_normal((N_FILTERS, SPEC.state_dim)), jnp.float32)
    return _randomize_params(params, 44), _random_arch(arch, 45), u, state


def _filter(tree, b: int):
    return jax.tree.map(lambda x: x[b], tree)


def test_doctests_in_module_pass():
    result = doctest.testmod(basis)
    assert result.attempted >= 5
    assert result.failed == 0


def test_init_shapes_and_reproducible(bank):
    params, arch = bank.init(jax.random.key(0), N_FILTERS)
    d = SPEC.stream_width
    assert params.w.shape == (N_FILTERS, SPEC.n_layers, SPEC.max_width, d)
    assert params.w_skip.shape == (N_FILTERS, SPEC.n_layers, SPEC.n_out, d)
    assert params.w_rec.shape == (N_FILTERS, d, d)
    assert arch.units.shape == (N_FILTERS, SPEC.n_layers, SPEC.n_blocks)
    assert arch.types.shape == (N_FILTERS, SPEC.n_layers, len(basis.LAYER_TYPES))
    assert arch.recurrent.shape == (N_FILTERS,)
    for leaf in jax.tree.leaves((params, arch, basis.discretize(arch))):
        assert leaf.dtype == jnp.float32 and not leaf.weak_type, "weak types would cost recompilations"
    again = bank.init(jax.random.key(0), N_FILTERS)
    for x, y in zip(jax.tree.leaves((params, arch)), jax.tree.leaves(again)):
        np.testing.assert_array_equal(x, y)
    other, _ = bank.init(jax.random.key(1), N_FILTERS)
    assert not np.allclose(params.w, other.w)
    assert not np.allclose(params.w[0], params.w[1]), "filters of one bank must differ"
    assert not np.allclose(arch.types[0], arch.types[1]), "type logits must break the filter symmetry"
    g = basis.gates(arch)
    assert np.all(g.units > 0.5) and np.all(g.layer > 0.5), "unit and layer gates start open-ish"


def test_gradients_reach_every_architecture_logit(bank, bank_values):
    params, _, _, _ = bank_values
    p, a = _filter(params, 0), bank.init_filter(jax.random.key(3))[1]
    us = jax.random.normal(jax.random.key(4), (16, SPEC.n_in))
    states = jax.random.normal(jax.random.key(5), (16, SPEC.state_dim))

    def loss(p, a):
        v, new_state = jax.vmap(lambda u, s: bank.apply(p, a, u, s, temperature=1.0))(us, states)
        return jnp.sum(jnp.sin(v)) + jnp.sum(jnp.cos(new_state))

    g_params, g_arch = jax.jit(jax.grad(loss, argnums=(0, 1)))(p, a)
    for name, g in g_arch._asdict().items():
        assert np.all(np.isfinite(g)), name
        assert np.all(np.abs(g) > 0), f"no gradient reaches some arch.{name} logits: {g}"
    for name, g in g_params._asdict().items():
        assert np.all(np.isfinite(g)), name
        assert np.any(np.abs(g) > 0), f"no gradient reaches params.{name}"


def test_vmap_over_filters_and_locations_equals_loop(bank, bank_values):
    params, arch, u, state = bank_values
    v, new_state = bank.apply_bank(params, arch, u, state, temperature=0.7)
    assert v.shape == (N_FILTERS, SPEC.n_out) and new_state.shape == (N_FILTERS, SPEC.state_dim)
    for b in range(N_FILTERS):
        vb, sb = bank.apply(_filter(params, b), _filter(arch, b), u[b], state[b], temperature=0.7)
        np.testing.assert_allclose(v[b], vb, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(new_state[b], sb, rtol=1e-5, atol=1e-6)

    n_loc = 2
    u_loc = jnp.stack([u, -u])
    s_loc = jnp.stack([state, 0.5 * state])
    v_loc, _ = jax.vmap(bank.apply_bank, in_axes=(None, None, 0, 0))(params, arch, u_loc, s_loc)
    for loc in range(n_loc):
        np.testing.assert_allclose(v_loc[loc], bank.apply_bank(params, arch, u_loc[loc], s_loc[loc])[0],
                                   rtol=1e-5, atol=1e-6)


def test_jit_with_traced_temperature_matches_direct_call(bank, bank_values):
    """Nested in a caller's jit, with the temperature a traced argument (as when it is annealed)."""
    params, arch, u, state = bank_values
    jitted = jax.jit(lambda p, a, x, s, t: bank.apply_bank(p, a, x, s, temperature=t))
    for tau in (2.0, 0.3):
        v_jit, s_jit = jitted(params, arch, u, state, jnp.float32(tau))
        v_eager, s_eager = bank.apply_bank(params, arch, u, state, temperature=tau)
        np.testing.assert_allclose(v_jit, v_eager, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(s_jit, s_eager, rtol=1e-5, atol=1e-6)
    c_jit = jax.jit(lambda a, t: bank.complexity(a, temperature=t))(arch, 0.3)
    np.testing.assert_allclose(c_jit, basis.complexity(SPEC, arch, temperature=0.3), rtol=1e-6)
    # The temperature changes the output: it really is an input, not a baked-in constant.
    assert not np.allclose(jitted(params, arch, u, state, 2.0)[0], jitted(params, arch, u, state, 0.3)[0])


def test_discretized_matches_soft_at_low_temperature(bank, bank_values):
    params, arch, u, state = bank_values
    hard = basis.discretize(arch)
    g = basis.gates(hard, temperature=1.0)
    for name in ("units", "layer", "skip", "recurrent"):
        assert set(np.unique(getattr(g, name))) <= {0.0, 1.0}, name
    np.testing.assert_array_equal(np.sum(g.types, axis=-1), 1.0)
    assert set(np.unique(g.types)) == {0.0, 1.0}
    soft_gates = basis.gates(arch, temperature=1.0)
    np.testing.assert_array_equal(g.units, soft_gates.units >= 0.5)
    np.testing.assert_array_equal(np.argmax(g.types, -1), np.argmax(soft_gates.types, -1))

    v_soft, s_soft = bank.apply_bank(params, arch, u, state, temperature=1e-3)
    v_hard, s_hard = bank.apply_bank(params, hard, u, state, temperature=1.0)
    np.testing.assert_allclose(v_soft, v_hard, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s_soft, s_hard, rtol=1e-5, atol=1e-5)
    # A hard architecture does not depend on the temperature.
    v_hot, _ = bank.apply_bank(params, hard, u, state, temperature=50.0)
    np.testing.assert_allclose(v_hot, v_hard, rtol=1e-6)
    np.testing.assert_allclose(bank.complexity(arch, temperature=1e-3), bank.complexity(hard), rtol=1e-5)


def test_complexity_is_monotone_in_active_units(bank, bank_values):
    _, arch, _, _ = bank_values
    a = _filter(arch, 0)
    base = bank.complexity(a)
    assert base.shape == ()
    assert bank.complexity(arch).shape == (N_FILTERS,)
    grads = jax.grad(bank.complexity)(a)
    assert np.all(grads.units > 0) and np.all(grads.layer > 0) and np.all(grads.skip > 0)
    assert grads.recurrent > 0
    for layer in range(SPEC.n_layers):
        for block in range(SPEC.n_blocks):
            more = a._replace(units=a.units.at[layer, block].add(1.0))
            assert bank.complexity(more) > base
    # Opening blocks one at a time in a hard arch: strictly increasing exact counts.
    costs = [
        float(bank.complexity(basis.hard_arch(SPEC, widths=(w, 0), types=("relu", "relu"))))
        for w in range(0, SPEC.max_width + 1, SPEC.width_step)
    ]
    assert costs == [2.0 + 1.0 * w for w in range(0, SPEC.max_width + 1, SPEC.width_step)]


def test_complexity_counts_layers_units_types_and_edges():
    spec = basis.BasisSpec(n_in=3, n_out=2, n_layers=3, max_width=8, width_step=4,
                           type_costs={"tanh": 3.0, "divnorm": 5.0}, layer_cost=0.5, edge_cost=0.25)
    assert spec.type_costs == (1.0, 1.0, 3.0, 5.0, 1.0, 0.5)
    hard = basis.hard_arch(spec, widths=(4, 8, 8), types=("tanh", "divnorm", "relu"),
                           active=(True, True, False), skip=(True, False, True), recurrent=True)
    expected = 2 * 0.5 + 4 * 3.0 + 8 * 5.0 + 3 * 0.25
    np.testing.assert_allclose(basis.complexity(spec, hard), expected, rtol=1e-6)


def _reference_layer(name: str, z: np.ndarray, sigma: float) -> np.ndarray:
    if name == "relu":
        return np.where(z > 0, z, 0.0)
    if name == "logistic":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "tanh":
        return (np.exp(z) - np.exp(-z)) / (np.exp(z) + np.exp(-z))
    if name == "divnorm":
        return z**2 / (sigma**2 + np.sum(z**2))
    if name == "maxpool":  # groups of 2 consecutive units, max broadcast to both
        return np.array([max(z[2 * (i // 2)], z[2 * (i // 2) + 1]) for i in range(len(z))])
    if name == "identity":
        return z.copy()
    raise ValueError(name)


@pytest.mark.parametrize("layer_type", basis.LAYER_TYPES)
def test_layer_type_matches_hand_written_reference(layer_type):
    spec = basis.BasisSpec(n_in=3, n_out=2, n_layers=1, max_width=8, width_step=4, pool_size=2,
                           recurrent=False)
    bank = basis.make_bank(spec)
    params, _ = bank.init_filter(jax.random.key(7))
    params = _randomize_params(params, 8)
    arch = basis.hard_arch(spec, widths=(4,), types=(layer_type,))  # half of the units gated off
    u = np.array([0.8, -1.3, 0.4], np.float32)
    v, state = bank.apply(params, arch, jnp.asarray(u), temperature=1.0)

    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    z = p.w[0, :4, :3] @ u + p.b[0, :4]
    y = np.zeros(spec.stream_width)
    y[:4] = _reference_layer(layer_type, z, np.exp(p.log_sigma[0]))
    expected = p.w_out @ y + p.b_out
    np.testing.assert_allclose(v, expected, rtol=1e-5, atol=1e-6)
    assert state.shape == (0,)


def test_pass_through_layers_and_input_skip_are_linear_when_input_wider_than_layers():
    spec = basis.BasisSpec(n_in=10, n_out=3, n_layers=2, max_width=4, width_step=2, recurrent=False)
    bank = basis.make_bank(spec)
    params, _ = bank.init_filter(jax.random.key(0))
    params = _randomize_params(params, 1)
    arch = basis.hard_arch(spec, widths=(4, 4), types=("relu", "tanh"), active=(False, False),
                           skip=(True, False))
    u = jax.random.normal(jax.random.key(2), (spec.n_in,))
    v, _ = bank.apply(params, arch, u)
    expected = params.w_out @ u + params.b_out + params.w_skip[0] @ u
    np.testing.assert_allclose(v, expected, rtol=1e-5, atol=1e-5)
    # With every layer passed through the input skip reads the readout's own input: not listed.
    assert basis.describe(spec, arch) == "10 -> 3"


def test_skip_edges_read_their_own_stream(bank, bank_values):
    params, _, u, _ = bank_values
    p, x = _filter(params, 1), u[1]
    arch = basis.hard_arch(SPEC, widths=(8, 4), types=("tanh", "relu"), skip=(True, True))
    v, _ = bank.apply(p, arch, x, jnp.zeros(SPEC.state_dim))
    h0 = np.pad(np.asarray(x), (0, SPEC.stream_width - SPEC.n_in))
    h1 = np.tanh(p.w[0] @ h0 + p.b[0])
    h2 = np.zeros(SPEC.stream_width)
    h2[:4] = np.maximum(p.w[1] @ h1 + p.b[1], 0.0)[:4]
    expected = p.w_out @ h2 + p.b_out + p.w_skip[0] @ h0 + p.w_skip[1] @ h1
    np.testing.assert_allclose(v, expected, rtol=1e-5, atol=1e-5)
    assert basis.describe(SPEC, arch) == "3 -> 8 tanh -> 4 relu -> 2, skip in->out, skip L1->out"


def test_recurrent_state_is_passed_in_and_returned(bank, bank_values):
    params, _, u, state = bank_values
    p = _filter(params, 0)
    open_rec = basis.hard_arch(SPEC, widths=(8, 4), types=("tanh", "identity"), recurrent=True)
    closed_rec = open_rec._replace(recurrent=-open_rec.recurrent)
    x, s = u[0], state[0]
    v_open, new_state = bank.apply(p, open_rec, x, s)
    v_other, _ = bank.apply(p, open_rec, x, 2.0 * s)
    assert not np.allclose(v_open, v_other), "an open recurrent edge makes the output depend on the state"
    v_closed, closed_state = bank.apply(p, closed_rec, x, s)
    np.testing.assert_allclose(v_closed, bank.apply(p, closed_rec, x, 2.0 * s)[0], rtol=1e-6)
    # The returned state is the last stream h_L: here layer 2 is identity on 4 units.
    h0 = jnp.pad(x, (0, SPEC.stream_width - SPEC.n_in)) + p.w_rec @ s
    h1 = jnp.tanh(p.w[0] @ h0 + p.b[0])
    h2 = jnp.zeros(SPEC.stream_width).at[:4].set((p.w[1] @ h1 + p.b[1])[:4])
    np.testing.assert_allclose(new_state, h2, rtol=1e-5, atol=1e-5)

    # Rolling the filter out with lax.scan (state carried explicitly) equals a Python loop.
    xs = jax.random.normal(jax.random.key(9), (5, SPEC.n_in))

    def step(carry, x_t):
        v_t, carry = bank.apply(p, open_rec, x_t, carry)
        return carry, v_t

    _, vs = jax.lax.scan(step, s, xs)
    carry = s
    for t in range(5):
        v_t, carry = bank.apply(p, open_rec, xs[t], carry)
        np.testing.assert_allclose(vs[t], v_t, rtol=1e-5, atol=1e-5)


def test_non_recurrent_spec_has_empty_state():
    spec = basis.BasisSpec(n_in=3, n_out=2, recurrent=False)
    bank = basis.make_bank(spec)
    params, arch = bank.init(jax.random.key(0), 2)
    assert params.w_rec is None and arch.recurrent is None
    assert bank.init_state((2,)).shape == (2, 0)
    v, state = bank.apply_bank(params, arch, jnp.ones((2, 3)))
    assert v.shape == (2, 2) and state.shape == (2, 0)


@pytest.mark.parametrize(
    ("widths", "types", "active", "skip", "recurrent", "expected"),
    [
        ((8, 4), ("relu", "maxpool"), (True, True), (False, True), True,
         "3 -> 8 relu -> 4 maxpool/2 -> 2, skip L1->out, recurrent"),
        # Layer 1 passed through: skip from h_1 reads the input, merged with the input skip.
        ((8, 4), ("relu", "tanh"), (False, True), (True, True), False, "3 -> 4 tanh -> 2, skip in->out"),
        # Layer 2 passed through: skip from h_1 reads the readout's own input and is left out.
        ((8, 4), ("divnorm", "tanh"), (True, False), (False, True), False, "3 -> 8 divisive-norm -> 2"),
        ((8, 4), ("logistic", "identity"), (True, True), (False, False), False,
         "3 -> 8 logistic -> 4 linear -> 2"),
        ((8, 8), ("relu", "relu"), (False, False), (False, False), False, "3 -> 2"),
    ],
)
def test_describe(widths, types, active, skip, recurrent, expected):
    arch = basis.hard_arch(SPEC, widths=widths, types=types, active=active, skip=skip, recurrent=recurrent)
    assert basis.describe(SPEC, arch) == expected


def test_describe_bank_matches_describe_of_each_filter(bank_values):
    _, arch, _, _ = bank_values
    texts = basis.describe_bank(SPEC, arch)
    assert len(texts) == N_FILTERS
    assert texts == [basis.describe(SPEC, _filter(arch, b)) for b in range(N_FILTERS)]
    assert texts[0] == basis.describe(SPEC, basis.discretize(_filter(arch, 0)))
    with pytest.raises(ValueError, match="describe_bank"):
        basis.describe(SPEC, arch)
    with pytest.raises(ValueError, match="describe for one filter"):
        basis.describe_bank(SPEC, _filter(arch, 0))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n_in": 0}, "n_in"),
        ({"n_layers": 1.5}, "n_layers"),
        ({"width_step": 3}, "width_step"),
        ({"pool_size": 3}, "pool_size"),
        ({"layer_types": ("relu", "softplus")}, "layer_types"),
        ({"layer_types": ()}, "layer_types"),
        ({"layer_types": ("relu", "relu")}, "layer_types"),
        ({"type_costs": (1.0, 2.0)}, "type_costs"),
        ({"type_costs": {"gelu": 1.0}}, "type_costs"),
        ({"type_costs": {"relu": -1.0}}, "type_costs"),
        ({"edge_cost": float("nan")}, "edge_cost"),
    ],
)
def test_spec_rejects_bad_fields(kwargs, field):
    with pytest.raises(ValueError, match=f"BasisSpec: field '{field}'"):
        basis.BasisSpec(**{"n_in": 3, "n_out": 2, "max_width": 8, "width_step": 4, **kwargs})


def test_spec_is_hashable_static_config():
    a = basis.BasisSpec(n_in=3, n_out=2, type_costs={"relu": 2.0})
    b = basis.BasisSpec(n_in=3, n_out=2, type_costs={"relu": 2.0})
    assert a == b and hash(a) == hash(b)
    assert a != basis.BasisSpec(n_in=3, n_out=2)
    assert jax.jit(lambda x, spec: x * spec.n_out, static_argnums=1)(1.0, a) == 2.0


def test_bad_inputs_raise_clear_errors(bank, bank_values):
    params, arch, u, state = bank_values
    p, a = _filter(params, 0), _filter(arch, 0)
    with pytest.raises(ValueError, match=r"u has shape \(2,\), expected \(3,\)"):
        bank.apply(p, a, u[0, :2], state[0])
    with pytest.raises(ValueError, match="state has shape"):
        bank.apply(p, a, u[0], state[0, :3])
    with pytest.raises(ValueError, match="vmap over the filter axis"):
        bank.apply(p, arch, u[0], state[0])
    with pytest.raises(ValueError, match=r"widths\[1\] = 6"):
        basis.hard_arch(SPEC, widths=(4, 6), types=("relu", "relu"))
    with pytest.raises(ValueError, match=r"types\[0\] = 'gelu'"):
        basis.hard_arch(SPEC, widths=(4, 4), types=("gelu", "relu"))
    with pytest.raises(ValueError, match="expected n_layers=2"):
        basis.hard_arch(SPEC, widths=(4,), types=("relu",))


def _divnorm_target(u: jax.Array) -> jax.Array:
    return u**2 / (1.0 + jnp.sum(u**2, axis=-1, keepdims=True))


FIT_SPEC = basis.BasisSpec(n_in=3, n_out=3, n_layers=1, max_width=8, width_step=4, recurrent=False)
FIT_STEPS = 600


@pytest.fixture(scope="module")
def fit_divnorm():
    """Jitted Adam fit (one scan over a temperature schedule) to a divnorm target, and its test error.

    Both fitting tests share one compilation: same pytree shapes, same schedule length.
    """
    bank = basis.make_bank(FIT_SPEC)
    k_train, k_test = jax.random.split(jax.random.key(1))
    u, u_test = jax.random.normal(k_train, (512, 3)), jax.random.normal(k_test, (512, 3))
    y, y_test = _divnorm_target(u), _divnorm_target(u_test)
    opt = optax.adam(2e-2)

    def loss(pa, u, y, tau):
        v, _ = jax.vmap(lambda x: bank.apply(pa[0], pa[1], x, temperature=tau))(u)
        return jnp.mean((v - y) ** 2)

    @jax.jit
    def train(params, arch, temperatures):
        def step(carry, tau):
            pa, opt_state = carry
            grads = jax.grad(loss)(pa, u, y, tau)
            updates, opt_state = opt.update(grads, opt_state, pa)
            return (optax.apply_updates(pa, updates), opt_state), None

        pa = (params, arch)
        return jax.lax.scan(step, (pa, opt.init(pa)), temperatures)[0][0]

    @jax.jit
    def relative_test_mse(params, arch):
        return loss((params, arch), u_test, y_test, 1.0) / jnp.var(y_test)

    return bank, train, relative_test_mse


def test_divnorm_filter_fits_known_target_from_data(fit_divnorm):
    bank, train, relative_test_mse = fit_divnorm
    params, _ = bank.init_filter(jax.random.key(0))
    arch = basis.hard_arch(FIT_SPEC, widths=(8,), types=("divnorm",))
    assert relative_test_mse(params, arch) > 0.5
    params, arch = train(params, arch, jnp.ones(FIT_STEPS))
    assert relative_test_mse(params, arch) < 1e-3


def test_architecture_search_picks_divnorm_for_divnorm_target(fit_divnorm):
    """Joint params + arch training with an annealed temperature selects divisive normalisation."""
    bank, train, relative_test_mse = fit_divnorm
    params, arch = bank.init_filter(jax.random.key(0))
    temperatures = 0.02 ** (jnp.arange(FIT_STEPS) / FIT_STEPS)
    params, arch = train(params, arch, temperatures)
    assert basis.describe(FIT_SPEC, arch) == "3 -> 8 divisive-norm -> 3"
    assert relative_test_mse(params, basis.discretize(arch)) < 0.05


@pytest.mark.parametrize("recurrent,state_bound", [(True, 0.0), (True, 2.0), (False, 0.0)])
@pytest.mark.parametrize("seed", range(4))
def test_fixed_architecture_computes_the_discretised_filter(recurrent, state_bound, seed):
    """apply_fixed (only the active units, the selected type, the open edges) equals apply with the
    discretised logits, in value, next state and parameter gradients, for random architectures: every
    layer type, pass-through layers, closed and empty unit blocks, either recurrent edge."""
    spec = basis.BasisSpec(n_in=5, n_out=3, n_layers=3, max_width=8, width_step=4, pool_size=2, recurrent=recurrent,
                           state_bound=state_bound)
    bank = basis.make_bank(spec)
    params, arch = bank.init(jax.random.key(seed), len(basis.LAYER_TYPES))
    params = _randomize_params(params, seed)
    rng = np.random.default_rng(seed)
    types = np.stack([np.roll(np.eye(spec.n_types), k, axis=0)[: spec.n_layers] for k in range(spec.n_types)])
    arch = basis.Arch(units=jnp.asarray(rng.standard_normal(arch.units.shape), jnp.float32),
                      # the first layer is on, so that filter k runs type k at least once
                      layer=jnp.asarray(rng.standard_normal(arch.layer.shape) + 0.5 + 9 * (np.arange(3) == 0),
                                        jnp.float32),
                      types=jnp.asarray(types + 0.1 * rng.standard_normal(types.shape), jnp.float32),
                      skip=jnp.asarray(rng.standard_normal(arch.skip.shape), jnp.float32),
                      recurrent=None if arch.recurrent is None else jnp.asarray(rng.standard_normal(arch.recurrent.shape)))
    hard = basis.discretize(arch)
    fixed = basis.fix_bank(spec, arch)
    assert [[fl.type for fl in f.layers if fl] for f in fixed] != [[]] * len(fixed)
    assert {fl.type for f in fixed for fl in f.layers if fl} == set(basis.LAYER_TYPES)  # every type is run
    u = jnp.asarray(rng.standard_normal((len(fixed), spec.n_in)), jnp.float32)
    state = jnp.asarray(rng.standard_normal((len(fixed), spec.state_dim)), jnp.float32)
    for b, f in enumerate(fixed):
        p, a = _filter(params, b), _filter(hard, b)

        def loss_soft(p):
            v, s = bank.apply(p, a, u[b], state[b], temperature=0.3)
            return jnp.sum(jnp.sin(v)) + jnp.sum(jnp.cos(s)), (v, s)

        def loss_fixed(p):
            v, s = basis.apply_fixed(spec, f, p, u[b], state[b])
            return jnp.sum(jnp.sin(v)) + jnp.sum(jnp.cos(s)), (v, s)

        (_, (v0, s0)), g0 = jax.value_and_grad(loss_soft, has_aux=True)(p)
        (_, (v1, s1)), g1 = jax.jit(jax.value_and_grad(loss_fixed, has_aux=True))(p)
        np.testing.assert_allclose(v1, v0, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(s1, s0, rtol=1e-5, atol=1e-6)
        for x, y in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    assert basis.describe_bank(spec, arch) == basis.describe_bank(spec, hard)
    for f in fixed:  # the equation: the input, one line per active layer, the output, the next state
        text = basis.equation(spec, f)
        assert text.count(" = ") == 2 + sum(fl is not None for fl in f.layers) + int(recurrent)
        assert text.count("S") == sum(f.skip) and ("U·r" in text) == (recurrent and f.recurrent)
    assert hash(fixed) == hash(basis.fix_bank(spec, hard))  # static: usable as a jit argument


def test_the_state_bound_keeps_an_explosive_recurrence_finite():
    """A linear filter whose recurrence has gain 3 diverges without the bound; with ``state_bound = c``
    its state saturates within ``[-c, c]`` and stays finite over a long pass."""
    for bound, finite in ((0.0, False), (4.0, True)):
        spec = basis.BasisSpec(n_in=2, n_out=2, n_layers=1, max_width=4, width_step=4, state_bound=bound)
        params, _ = basis.make_bank(spec).init(jax.random.key(0), 1)
        params = jax.tree.map(lambda x: x[0], params)
        d = spec.stream_width
        params = params._replace(w=jnp.eye(4, d)[None] * 1.0, w_rec=3.0 * jnp.eye(d), b=jnp.zeros_like(params.b))
        fixed = basis.fix(spec, basis.hard_arch(spec, widths=(4,), types=("identity",), recurrent=True))
        state = jnp.full((d,), 0.1)
        step = jax.jit(lambda s: basis.apply_fixed(spec, fixed, params, jnp.zeros(2), s)[1])
        for _ in range(200):
            state = step(state)
        assert bool(jnp.isfinite(state).all()) == finite
        if finite:
            assert float(jnp.abs(state).max()) <= bound
