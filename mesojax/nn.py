"""Small Flax building blocks used functionally (the one place mesojax touches the Flax module API).

Example:
    >>> import jax, jax.numpy as jnp
    >>> mlp = MLP(widths=(16, 3))
    >>> params = mlp.init(jax.random.key(0), jnp.zeros((5,)))
    >>> mlp.apply(params, jnp.ones((5,))).shape
    (3,)
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax

Activation = Callable[[jax.Array], jax.Array]


class MLP(nn.Module):
    """A multilayer perceptron ``x -> W_n φ(... φ(W_1 x + b_1) ...) + b_n`` (default `φ` = tanh).

    Hidden kernels are LeCun-normal, biases zero.

    Attributes:
      widths: output width of each dense layer; the last has no nonlinearity.
      final_scale: scale of the last layer's initial weights (small: the network starts near zero,
        so a learned correction added to a prior starts as the prior; 0: the last kernel starts at
        exactly zero, so the network starts as the constant 0).
      activation: the nonlinearity `φ` between layers.
    """

    widths: Sequence[int]
    final_scale: float = 1.0
    activation: Activation = nn.tanh

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.widths[:-1]:
            x = self.activation(nn.Dense(width)(x))
        if self.final_scale == 0:
            init = nn.initializers.zeros_init()
        else:
            init = nn.initializers.variance_scaling(self.final_scale**2, "fan_in", "truncated_normal")
        return nn.Dense(self.widths[-1], kernel_init=init)(x)


def init_mlp(
    key: jax.Array,
    widths: Sequence[int],
    n_in: int,
    final_scale: float = 1.0,
    activation: Activation = nn.tanh,
) -> Any:
    """Parameters of :class:`MLP` for inputs of width `n_in`.

    Example:
      >>> params = init_mlp(jax.random.key(0), (8, 2), 3, final_scale=0.0)
      >>> mlp_widths(params)
      (3, 8, 2)
    """
    return _init_mlp(key, tuple(widths), n_in, final_scale, activation)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _init_mlp(key: jax.Array, widths: tuple[int, ...], n_in: int, final_scale: float, activation: Activation) -> Any:
    # One compiled program: run eagerly, flax's initialisers compile a dozen tiny programs per layer.
    return MLP(widths, final_scale, activation).init(key, jax.numpy.zeros((n_in,)))


def apply_mlp(
    params: Any, x: jax.Array, widths: Sequence[int] | None = None, activation: Activation = nn.tanh
) -> jax.Array:
    """Apply the :class:`MLP` with `params` to one input vector ``x [n_in] -> [widths[-1]]``.

    Leading axes of `x` (``[..., n_in]``) are treated as batch axes, as by ``jax.vmap``.

    Args:
      params: from :func:`init_mlp`.
      x: ``[n_in]`` input.
      widths: layer widths; None reads them from the parameter shapes (:func:`mlp_widths`).
      activation: the nonlinearity the network was trained with.

    Returns:
      ``[widths[-1]]`` output.
    """
    if widths is None:
        widths = mlp_widths(params)[1:]
    return MLP(tuple(widths), activation=activation).apply(params, x)


def mlp_widths(params: Any) -> tuple[int, ...]:
    """``(n_in, *widths)`` of :class:`MLP` parameters, read from the kernel shapes (static under jit)."""
    layers = params["params"]
    # Flax names the layers Dense_0, Dense_1, ...; index explicitly since pytree maps sort keys as strings.
    kernels = [layers[f"Dense_{i}"]["kernel"] for i in range(len(layers))]
    return (kernels[0].shape[0], *(k.shape[1] for k in kernels))
