r"""Interfaces: connect a variable set of domain members to a basis filter's fixed M ports, and back.

One interface per (location µ, filter b) pair (§4.4, §4.9). It must stay *weak*, or it would do the
filter's work, so by default it has a shared part and a tiny per-pair part:

* a **shared port embedding** ``P = softmax(f_θ(φ_k) / τ_P)`` maps each member ``k`` of a sphere, from
  its features ``φ_k`` (position relative to µ, cell type, connectome features), to a soft choice of one
  of the filter's M ports; one network for all locations, one output head per filter;
* a **per-pair gain and offset** on the way in and on the way out, regularised towards identity.

Encoding (members → filter input) is a selection-weighted mean per port and history step::

    z[h,k] = e^{γ_in} · x[h,k] + β_in
    u[h,m] = Σ_k w_k P[k,m] z[h,k] / (ε + Σ_k w_k P[k,m])          w_k = assignment of member k to (µ,b)

Decoding (filter output → members) predicts the next value of every member as a residual::

    y[k] = x[H-1,k] + e^{γ_out} · Σ_m P[k,m] v[m] + β_out

Per-pair dense maps (``dense=True``) add ``D[µ,b]`` to the shared port logits, ``P = softmax((f_θ(φ_k) +
D[µ,b,k]) / τ_P)``, with ``D`` initialised at zero and L2-regularised: an option for data where a shared
embedding is too weak (parameter count L·B·K·M).

Example:
    >>> import jax, jax.numpy as jnp
    >>> spec = InterfaceSpec(n_ports=4, n_features=5, n_filters=2)
    >>> params = init(jax.random.key(0), spec, n_locations=3, n_members=6)
    >>> feats = jnp.ones((3, 6, 5))
    >>> P = ports(spec, params, feats, temperature=1.0)
    >>> P.shape
    (3, 2, 6, 4)
    >>> u = encode(pair(params, 0, 1), P[0, 1], jnp.ones((2, 6)), jnp.ones(6))
    >>> u.shape
    (2, 4)
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mesojax import nn

_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class InterfaceSpec:
    """Static interface settings.

    Attributes:
      n_ports: M, the filter's input/output width per history step.
      n_features: F, member feature width.
      n_filters: B.
      hidden: hidden widths of the shared port network.
      dense: add per-pair dense port maps ``[L,B,K,M]``.
    """

    n_ports: int
    n_features: int
    n_filters: int
    hidden: tuple[int, ...] = (32,)
    dense: bool = False


class PairParams(NamedTuple):
    """Per-(location, filter) impedance matching: log-gains and offsets in and out (scalars or ``[L,B]``)."""

    log_gain_in: jax.Array
    offset_in: jax.Array
    log_gain_out: jax.Array
    offset_out: jax.Array


class InterfaceParams(NamedTuple):
    """All interface parameters.

    Attributes:
      port_net: shared MLP params, features ``[F] -> [B*M]`` port logits.
      pairs: :class:`PairParams` with ``[L,B]`` leaves.
      dense: ``[L,B,K,M]`` per-pair port-logit corrections, or None.
    """

    port_net: dict
    pairs: PairParams
    dense: jax.Array | None


def init(key: jax.Array, spec: InterfaceSpec, n_locations: int, n_members: int) -> InterfaceParams:
    """Initial parameters: random port network, identity gains (log 0), zero offsets, zero dense maps."""
    widths = (*spec.hidden, spec.n_filters * spec.n_ports)
    port_net = nn.init_mlp(key, widths, spec.n_features)
    # Four distinct buffers: the train step donates its state, and one buffer may be donated only once.
    zeros = lambda: jnp.zeros((n_locations, spec.n_filters), jnp.float32)  # noqa: E731
    dense = (
        jnp.zeros((n_locations, spec.n_filters, n_members, spec.n_ports), jnp.float32) if spec.dense else None
    )
    return InterfaceParams(port_net, PairParams(zeros(), zeros(), zeros(), zeros()), dense)


def ports(
    spec: InterfaceSpec, params: InterfaceParams, member_features: jax.Array, temperature: jax.Array | float
) -> jax.Array:
    """Soft port assignment of every member of every sphere for every filter.

    Args:
      member_features: ``[L, K, F]``.
      temperature: softmax temperature ``τ_P`` (annealed with the other switches).

    Returns:
      ``[L, B, K, M]`` rows summing to one over M.
    """
    widths = (*spec.hidden, spec.n_filters * spec.n_ports)
    logits = jax.vmap(jax.vmap(lambda f: nn.apply_mlp(params.port_net, f, widths)))(member_features)
    logits = logits.reshape(*member_features.shape[:2], spec.n_filters, spec.n_ports)
    logits = jnp.moveaxis(logits, 2, 1)  # [L, B, K, M]
    if params.dense is not None:
        logits = logits + params.dense  # inside the softmax: port maps stay non-negative distributions
    return jax.nn.softmax(logits / temperature, axis=-1)


def pair(params: InterfaceParams, loc: int, filt: int) -> PairParams:
    """The :class:`PairParams` of one (location, filter) pair (for examples and tests)."""
    return jax.tree.map(lambda a: a[loc, filt], params.pairs)


def encode(pp: PairParams, port_map: jax.Array, x: jax.Array, weight: jax.Array) -> jax.Array:
    """Members' recent values → filter input, as a selection-weighted mean per port.

    Args:
      pp: this pair's :class:`PairParams` (scalar leaves).
      port_map: ``[K, M]`` this pair's port assignment of its members.
      x: ``[H, K]`` members' values over the history window (oldest first).
      weight: ``[K]`` selection weight of each member (assignment to this pair × valid-member mask).

    Returns:
      ``[H, M]`` filter input.
    """
    z = jnp.exp(pp.log_gain_in) * x + pp.offset_in
    w = port_map * weight[:, None]  # [K, M]
    return (z @ w) / (_EPS + w.sum(axis=0))


def decode(pp: PairParams, port_map: jax.Array, v: jax.Array, x_last: jax.Array) -> jax.Array:
    """Filter output → next value of every member, as a residual on the member's last value.

    Args:
      pp: this pair's :class:`PairParams`.
      port_map: ``[K, M]``.
      v: ``[M]`` filter output.
      x_last: ``[K]`` members' current values.

    Returns:
      ``[K]`` predicted next values.
    """
    return x_last + jnp.exp(pp.log_gain_out) * (port_map @ v) + pp.offset_out


def regularizer(params: InterfaceParams) -> jax.Array:
    """Keeps interfaces weak: mean squared log-gains and offsets, plus the dense maps' mean square."""
    leaves = jax.tree.leaves(params.pairs)
    reg = sum(jnp.mean(jnp.square(a)) for a in leaves) / len(leaves)
    if params.dense is not None:
        reg = reg + jnp.mean(jnp.square(params.dense))
    return reg
