r"""Synaptic layers: a connectome-shaped drive for every neuron (§4.6, Figure 9a).

A *demultiplexer* copies each neuron's activity onto its outgoing synapses and a *multiplexer* sums each
neuron's incoming synapses, both sparse by construction (one weight per synapse, ``segment_sum``)::

    s[e]   = w[e] · x[pre[e]]                      (demux, N → S)
    d[j]   = tanh( Σ_{e: post[e] = j} s[e] )       (mux, S → N)

The weights start from the synapse's strength and sign, scaled so each neuron's summed input weight is
about one: ``w[e] = sign'[e] · strength[e] / (1 + Σ_{e': post[e'] = post[e]} strength[e'])`` with
unknown signs (0) taken as +1. The drive ``d`` enters the model as an extra input channel.

Example:
    >>> import jax.numpy as jnp, numpy as np
    >>> params = init(np.array([0, 1]), np.array([1, 1]), n_neurons=2, strength=np.array([1.0, 1.0]),
    ...               sign=np.array([1, -1]))
    >>> d = drive(params, jnp.array([0, 1]), jnp.array([1, 1]), jnp.array([1.0, 0.5]), n_neurons=2)
    >>> [round(float(v), 3) for v in d]          # tanh(1/3 · 1 − 1/3 · 0.5)
    [0.0, 0.165]
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class SynapseParams(NamedTuple):
    """Per-synapse weights ``w [E]``."""

    weight: jax.Array


def init(
    pre: np.ndarray,
    post: np.ndarray,
    n_neurons: int,
    strength: np.ndarray | None = None,
    sign: np.ndarray | None = None,
) -> SynapseParams:
    """Weights from strength and sign, normalised by each postsynaptic neuron's total input strength.

    Args:
      pre, post: ``[E]`` neuron indices.
      n_neurons: N.
      strength: ``[E]`` non-negative (default: ones).
      sign: ``[E]`` in {-1, 0, +1} (default: +1; 0 is taken as +1).
    """
    e = len(pre)
    strength = np.ones((e,), np.float32) if strength is None else np.asarray(strength, np.float32)
    sign = np.ones((e,), np.float32) if sign is None else np.where(np.asarray(sign) < 0, -1.0, 1.0)
    total_in = np.bincount(np.asarray(post), weights=strength, minlength=n_neurons)
    w = sign * strength / (1.0 + total_in[np.asarray(post)])
    return SynapseParams(jnp.asarray(w, jnp.float32))


def demux(params: SynapseParams, pre: jax.Array, x: jax.Array) -> jax.Array:
    """Neuron activity ``x [N]`` → synapse activity ``s [E]``."""
    return params.weight * jnp.take(x, pre, axis=0)


def mux(s: jax.Array, post: jax.Array, n_neurons: int) -> jax.Array:
    """Synapse activity ``s [E]`` → summed, squashed drive per postsynaptic neuron ``[N]``."""
    return jnp.tanh(jax.ops.segment_sum(s, post, num_segments=n_neurons))


def drive(params: SynapseParams, pre: jax.Array, post: jax.Array, x: jax.Array, n_neurons: int) -> jax.Array:
    """``mux(demux(x))``: the connectome-shaped drive of every neuron ``[N]``."""
    return mux(demux(params, pre, x), post, n_neurons)
