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


class CircuitMaps(NamedTuple):
    """Every pair's interface folded with its selection weights, for a whole circuit at once.

    :func:`encode` and :func:`decode` applied to every (µ, b) pair, followed by the domain mixing
    ``Σ_b w[k,b] · y[µ,b,k]``, are linear in the members' values, so their per-pair maps can be combined
    once per batch (they depend on parameters and assignment, not on time) and each step becomes two
    contractions per location instead of L·B tiny ones (:func:`encode_circuit`, :func:`decode_mix`).

    Attributes:
      enc: ``[L, B, K, M]`` ``w_k P[k,m] / (ε + Σ_k w_k P[k,m])``, the encoder's normalised weights.
      enc_offset: ``[L, B, M]`` ``β_in · Σ_k enc[k, m]``.
      gain_in: ``[L, B]`` ``e^{γ_in}``.
      dec: ``[L, K, B, M]`` ``w[k,b] · e^{γ_out} · P[k,m]``, decoding and mixing in one map.
      keep: ``[L, K]`` ``Σ_b w[k,b]``, the weight of the members' last values (the decoder's residual).
      dec_offset: ``[L, K]`` ``Σ_b w[k,b] · β_out``.
    """

    enc: jax.Array
    enc_offset: jax.Array
    gain_in: jax.Array
    dec: jax.Array
    keep: jax.Array
    dec_offset: jax.Array


def circuit_maps(pairs: PairParams, port_maps: jax.Array, weight: jax.Array) -> CircuitMaps:
    """The :class:`CircuitMaps` of every pair.

    Args:
      pairs: :class:`PairParams` with ``[L, B]`` leaves.
      port_maps: ``[L, B, K, M]`` (:func:`ports`).
      weight: ``[L, K, B]`` selection weight of every sphere slot for every filter (0 on empty slots).

    Returns:
      :class:`CircuitMaps`.
    """
    w = port_maps * jnp.moveaxis(weight, 2, 1)[..., None]  # [L, B, K, M]
    enc = w / (_EPS + jnp.sum(w, axis=2, keepdims=True))
    gain_out = jnp.exp(pairs.log_gain_out)  # [L, B]
    dec = jnp.einsum("lkb,lb,lbkm->lkbm", weight, gain_out, port_maps)
    return CircuitMaps(
        enc=enc,
        enc_offset=pairs.offset_in[..., None] * jnp.sum(enc, axis=2),
        gain_in=jnp.exp(pairs.log_gain_in),
        dec=dec,
        keep=jnp.sum(weight, axis=-1),
        dec_offset=jnp.einsum("lkb,lb->lk", weight, pairs.offset_out),
    )


def encode_circuit(maps: CircuitMaps, x: jax.Array) -> jax.Array:
    """:func:`encode` of every pair: ``x [L, H, K]`` members' values -> ``[L, B, H, M]`` filter inputs."""
    u = jnp.einsum("lhk,lbkm->lbhm", x, maps.enc)
    return maps.gain_in[..., None, None] * u + maps.enc_offset[:, :, None, :]


def decode_mix(maps: CircuitMaps, v: jax.Array, x_last: jax.Array) -> jax.Array:
    """Every pair's :func:`decode`, mixed by its selection weights: ``Σ_b w[k,b] · y[µ,b,k]``.

    Args:
      v: ``[L, B, M]`` filter outputs.
      x_last: ``[L, K]`` members' current values.

    Returns:
      ``[L, K]``.
    """
    return x_last * maps.keep + maps.dec_offset + jnp.einsum("lkbm,lbm->lk", maps.dec, v)


def decode_pairs(pairs: PairParams, port_maps: jax.Array, v: jax.Array, x_last: jax.Array) -> jax.Array:
    """:func:`decode` of every pair: ``v [L, B, M]``, ``x_last [L, K]`` -> ``[L, B, K]``."""
    y = jnp.einsum("lbkm,lbm->lbk", port_maps, v)
    return x_last[:, None, :] + jnp.exp(pairs.log_gain_out)[..., None] * y + pairs.offset_out[..., None]


def regularizer(params: InterfaceParams) -> jax.Array:
    """Keeps interfaces weak: mean squared log-gains and offsets, plus the dense maps' mean square."""
    leaves = jax.tree.leaves(params.pairs)
    reg = sum(jnp.mean(jnp.square(a)) for a in leaves) / len(leaves)
    if params.dense is not None:
        reg = reg + jnp.mean(jnp.square(params.dense))
    return reg
