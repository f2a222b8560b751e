"""Small Flax building blocks used functionally (the one place mesojax touches the Flax module API).

Example:
    >>> import jax, jax.numpy as jnp
    >>> mlp = MLP(widths=(16, 3))
    >>> params = mlp.init(jax.random.key(0), jnp.zeros((5,)))
    >>> mlp.apply(params, jnp.ones((5,))).shape
    (3,)
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax


class MLP(nn.Module):
    """A multilayer perceptron ``x -> W_n φ(... φ(W_1 x + b_1) ...) + b_n`` with `φ` = tanh.

    Attributes:
      widths: output width of each dense layer; the last has no nonlinearity.
      final_scale: scale of the last layer's initial weights (small: the network starts near zero,
        so a learned correction added to a prior starts as the prior).
    """

    widths: Sequence[int]
    final_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.widths[:-1]:
            x = nn.tanh(nn.Dense(width)(x))
        init = nn.initializers.variance_scaling(self.final_scale**2, "fan_in", "truncated_normal")
        return nn.Dense(self.widths[-1], kernel_init=init)(x)


def init_mlp(key: jax.Array, widths: Sequence[int], n_in: int, final_scale: float = 1.0) -> Any:
    """Parameters of :class:`MLP` for inputs of width `n_in`."""
    return MLP(tuple(widths), final_scale).init(key, jax.numpy.zeros((n_in,)))


def apply_mlp(params: Any, x: jax.Array, widths: Sequence[int]) -> jax.Array:
    """Apply the :class:`MLP` with `params` to one input vector ``x [n_in] -> [widths[-1]]``."""
    return MLP(tuple(widths)).apply(params, x)
