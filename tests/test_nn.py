"""Tests for mesojax.nn: the one MLP shared by assign, interface, features and baselines."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mesojax.nn
from mesojax import nn


def test_doctests():
    assert doctest.testmod(mesojax.nn).failed == 0


def reference_mlp(params, x, activation):
    """The MLP written out by hand from its kernels and biases."""
    layers = params["params"]
    for i in range(len(layers)):
        x = x @ layers[f"Dense_{i}"]["kernel"] + layers[f"Dense_{i}"]["bias"]
        if i < len(layers) - 1:
            x = activation(x)
    return x


@pytest.mark.parametrize("activation", [None, jax.nn.gelu, jax.nn.relu])
def test_apply_matches_hand_written_mlp(activation):
    kw = {} if activation is None else {"activation": activation}
    params = nn.init_mlp(jax.random.key(0), (6, 5, 2), 4, **kw)
    x = jax.random.normal(jax.random.key(1), (4,))
    want = reference_mlp(params, x, activation or jnp.tanh)
    np.testing.assert_allclose(nn.apply_mlp(params, x, (6, 5, 2), **kw), want, rtol=1e-5, atol=1e-6)
    # Widths read from the parameters give the same network.
    np.testing.assert_allclose(nn.apply_mlp(params, x, **kw), want, rtol=1e-5, atol=1e-6)


def test_activation_changes_output_not_parameters():
    params = nn.init_mlp(jax.random.key(0), (8, 3), 4)
    assert jax.tree.all(
        jax.tree.map(np.array_equal, params, nn.init_mlp(jax.random.key(0), (8, 3), 4, activation=jax.nn.gelu))
    )
    x = jnp.linspace(-1.0, 1.0, 4)
    assert not np.allclose(nn.apply_mlp(params, x, (8, 3)), nn.apply_mlp(params, x, activation=jax.nn.gelu))


@pytest.mark.parametrize("final_scale", [0.0, 0.1, 1.0])
def test_final_scale_sets_last_kernel_scale_and_zero_gives_zero_network(final_scale):
    params = nn.init_mlp(jax.random.key(2), (64, 256), 64, final_scale=final_scale)
    last = params["params"]["Dense_1"]["kernel"]
    hidden = params["params"]["Dense_0"]["kernel"]
    # LeCun normal: std = scale / sqrt(fan_in); the hidden layer keeps scale 1.
    np.testing.assert_allclose(float(jnp.std(hidden)), 1 / 8, rtol=0.1)
    np.testing.assert_allclose(float(jnp.std(last)), final_scale / 8, rtol=0.1)
    if final_scale == 0.0:
        assert not jnp.any(last) and not jnp.any(nn.apply_mlp(params, jnp.ones(64)))


def test_mlp_widths_orders_layers_numerically_after_tree_maps():
    widths = tuple(range(2, 14))  # 12 layers: Dense_10 sorts before Dense_2 as a string
    params = jax.tree.map(lambda a: a, nn.init_mlp(jax.random.key(0), widths, 3))
    assert nn.mlp_widths(params) == (3, *widths)


def test_leading_axes_match_vmap():
    params = nn.init_mlp(jax.random.key(3), (5, 2), 3, activation=jax.nn.gelu)
    x = jax.random.normal(jax.random.key(4), (7, 3))
    looped = jax.vmap(lambda v: nn.apply_mlp(params, v, activation=jax.nn.gelu))(x)
    np.testing.assert_allclose(nn.apply_mlp(params, x, activation=jax.nn.gelu), looped, rtol=1e-5, atol=1e-6)
