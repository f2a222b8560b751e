r"""Basis filters: a bank of small networks whose architecture is learned by gradient descent.

A *basis filter* maps one input vector ``u`` (``[n_in]``, the interface width M) to one output vector
``v`` (``[n_out]``). It is a stack of ``n_layers`` layers of at most ``max_width`` units whose
architecture is chosen through smooth switches, all sharpened by one temperature ``τ``:

* **unit blocks** — layer ``l`` has ``max_width / width_step`` blocks of ``width_step`` units, block
  ``k`` is on with gate ``g[l,k] = σ(α[l,k] / τ)`` (width in fixed increments);
* **pass-through** — layer ``l`` is used with gate ``κ[l] = σ(γ[l] / τ)`` and replaced by the identity
  otherwise;
* **layer type** — ``p[l] = softmax(β[l] / τ)`` over the types in :attr:`BasisSpec.layer_types`:
  ``relu`` (half-wave rectification), ``logistic``, ``tanh``, ``divnorm`` (divisive normalisation),
  ``maxpool`` (max over groups of units) and ``identity``;
* **skip-forward edges** — the readout also sees the stream after layer ``j = 0..L-1`` (``j = 0``: the
  input) through its own linear map, gated by ``s[j] = σ(ς[j] / τ)``;
* **recurrent edge** — the last stream of the previous call (the *state*, passed in and returned, never
  hidden) is fed back into the input stream, gated by ``ρ = σ(ϱ / τ)``.

All hidden vectors live on a *stream* of static width ``D = max(n_in, max_width)`` (shorter vectors are
zero-padded), so every gate multiplies a fixed-shape block and the network is jit/vmap/grad friendly:

.. math::

    h_0 &= \mathrm{pad}_D(u) + ρ\, U r \\
    z_l &= W_l h_{l-1} + b_l, \qquad m_l = \mathrm{repeat}(g_l, \text{width\_step}),
        \qquad \tilde z_l = m_l ⊙ z_l \\
    y_l &= m_l ⊙ \textstyle\sum_t p_{l,t}\, φ_t(\tilde z_l) \\
    h_l &= κ_l\, \mathrm{pad}_D(y_l) + (1 - κ_l)\, h_{l-1} \qquad (l = 1..L) \\
    v &= W_o h_L + b_o + \textstyle\sum_{j=0}^{L-1} s_j\, S_j h_j, \qquad r' = c \tanh(h_L / c)

with the layer types ``φ_relu(z) = max(z, 0)``, ``φ_logistic(z) = 1 / (1 + e^{-z})``,
``φ_tanh(z) = tanh z``, ``φ_divnorm(z)_i = z_i² / (σ_l² + Σ_j z_j²)`` (learnable ``σ_l``, the sum runs
over the gated units), ``φ_maxpool(z)_i = max_{j ∈ G(i)} z_j`` (``G(i)``: the group of ``pool_size``
consecutive units holding ``i``; the group max is broadcast back to every unit so widths stay static)
and ``φ_identity(z) = z``. The state bound ``c = state_bound`` keeps the recurrence finite (``c = 0``:
``r' = h_L``). Pool groups never straddle a unit block (``pool_size`` divides
``width_step``), so gating and pooling commute.

Parameters and architecture logits are separate pytrees (:class:`Params`, :class:`Arch`) so an
optimiser can treat them as separate groups. A bank of ``B`` filters is the same pytrees with a leading
filter axis; :meth:`Bank.apply` works on ONE filter and is ``jax.vmap``-ed over filters (see
:meth:`Bank.apply_bank`) and over locations by the caller. :func:`complexity` is the expected cost of
an architecture, :func:`discretize` the hard architecture (same pytree, usable by the same ``apply``),
:func:`describe` a readable summary.

Example:

>>> import jax, jax.numpy as jnp
>>> from mesojax import basis
>>> spec = basis.BasisSpec(n_in=8, n_out=8, n_layers=2, max_width=16, width_step=4)
>>> bank = basis.make_bank(spec)
>>> params, arch = bank.init(jax.random.key(0), n_filters=3)
>>> u = jnp.ones((3, 8))                                   # one input vector per filter
>>> v, state = bank.apply_bank(params, arch, u, bank.init_state((3,)), temperature=0.5)
>>> v.shape, state.shape
((3, 8), (3, 16))
>>> len(basis.describe_bank(spec, arch))
3
>>> hard = basis.hard_arch(spec, widths=(12, 16), types=("divnorm", "relu"),
...                        active=(True, False), skip=(True, False))
>>> basis.describe(spec, hard)
'8 -> 12 divisive-norm -> 8, skip in->out'
>>> float(bank.complexity(hard))                          # 1 layer + 12 units * 2.0 + 1 skip edge
26.0
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "LAYER_TYPES",
    "DEFAULT_TYPE_COSTS",
    "HARD_LOGIT",
    "BasisSpec",
    "Params",
    "Arch",
    "Gates",
    "Bank",
    "make_bank",
    "gates",
    "complexity",
    "discretize",
    "hard_arch",
    "describe",
    "describe_bank",
    "FixedLayer",
    "Fixed",
    "fix",
    "fix_bank",
    "apply_fixed",
    "static_index",
    "is_hard",
    "equation",
    "divisive_normalization",
    "group_max",
    "DISPLAY_NAMES",
]

LAYER_TYPES: tuple[str, ...] = ("relu", "logistic", "tanh", "divnorm", "maxpool", "identity")
"""All layer types, in their default order."""

DEFAULT_TYPE_COSTS: Mapping[str, float] = {
    "relu": 1.0,
    "logistic": 1.0,
    "tanh": 1.0,
    "divnorm": 2.0,
    "maxpool": 1.0,
    "identity": 0.5,
}
"""Cost per active unit of each layer type, used by :func:`complexity` unless the spec overrides it."""

DISPLAY_NAMES: Mapping[str, str] = {
    "relu": "relu",
    "logistic": "logistic",
    "tanh": "tanh",
    "divnorm": "divisive-norm",
    "maxpool": "maxpool",
    "identity": "linear",
}
"""How :func:`describe` and the report's diagrams name each layer type."""

HARD_LOGIT: float = 1e6
"""Magnitude of the logits of a hard architecture: its gates are exactly 0/1 for any temperature ≤ 1e4."""

# Scale of the recurrent weights at init: small, so early rollouts do not blow up.
_RECURRENT_INIT_SCALE = 0.1
# Noise on the layer-type logits at init: breaks the symmetry between the filters of a bank.
_TYPE_INIT_NOISE = 0.01


@dataclasses.dataclass(frozen=True)
class BasisSpec:
    """Static description of one basis-filter family (hashable; safe as a jit static argument).

    Attributes:
      n_in: input width (the interface width M).
      n_out: output width.
      n_layers: number of (switchable) hidden layers, ≥ 1.
      max_width: units per hidden layer when every block is on.
      width_step: units per gated block; divides ``max_width``.
      layer_types: the types the per-layer softmax chooses from (a subset of :data:`LAYER_TYPES`).
      type_costs: cost per active unit of each type: a tuple aligned with ``layer_types`` or a mapping
        ``{type: cost}`` (missing types take :data:`DEFAULT_TYPE_COSTS`); stored as a tuple.
      layer_cost: fixed cost of every active (not passed-through) layer.
      edge_cost: cost of every open skip or recurrent edge.
      pool_size: units per max-pooling group; divides ``width_step``.
      recurrent: whether the filter has the gated recurrent edge (its state is ``[stream_width]``;
        without it the state is an empty ``[0]`` array).
      init_gate_logit: initial logit of the unit-block and layer gates (positive: open-ish).
      init_edge_logit: initial logit of the skip and recurrent gates.
      state_bound: ``c > 0`` passes the next state through ``c·tanh(h_L / c)`` (near the identity for
        ``|h| ≪ c``), so a recurrence with gain above one saturates instead of diverging over a long
        teacher-forced pass; 0 leaves the state unbounded (``r' = h_L``).
    """

    n_in: int
    n_out: int
    n_layers: int = 2
    max_width: int = 16
    width_step: int = 4
    layer_types: tuple[str, ...] = LAYER_TYPES
    type_costs: tuple[float, ...] | Mapping[str, float] | None = None
    layer_cost: float = 1.0
    edge_cost: float = 1.0
    pool_size: int = 2
    recurrent: bool = True
    init_gate_logit: float = 2.0
    init_edge_logit: float = 0.0
    state_bound: float = 0.0

    def __post_init__(self) -> None:
        def fail(field: str, problem: str) -> None:
            raise ValueError(f"mesojax.basis.BasisSpec: field {field!r} {problem}")

        for field in ("n_in", "n_out", "n_layers", "max_width", "width_step", "pool_size"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                fail(field, f"must be a positive integer, got {value!r}")
        if self.max_width % self.width_step:
            fail("width_step", f"= {self.width_step} must divide max_width = {self.max_width}")
        if self.width_step % self.pool_size:
            fail("pool_size", f"= {self.pool_size} must divide width_step = {self.width_step}")
        types = tuple(self.layer_types) if not isinstance(self.layer_types, str) else (self.layer_types,)
        if not types:
            fail("layer_types", "must name at least one layer type")
        unknown = [t for t in types if t not in LAYER_TYPES]
        if unknown:
            fail("layer_types", f"has unknown type(s) {unknown}; known: {list(LAYER_TYPES)}")
        if len(set(types)) != len(types):
            fail("layer_types", f"repeats a type: {list(types)}")
        object.__setattr__(self, "layer_types", types)

        costs = self.type_costs
        if costs is None:
            costs = tuple(DEFAULT_TYPE_COSTS[t] for t in types)
        elif isinstance(costs, Mapping):
            extra = [t for t in costs if t not in types]
            if extra:
                fail("type_costs", f"names type(s) {extra} not in layer_types {list(types)}")
            costs = tuple(float(costs.get(t, DEFAULT_TYPE_COSTS[t])) for t in types)
        else:
            costs = tuple(float(c) for c in costs)
            if len(costs) != len(types):
                fail("type_costs", f"has {len(costs)} entries but layer_types has {len(types)}")
        for t, c in zip(types, costs):
            if not math.isfinite(c) or c < 0:
                fail("type_costs", f"entry for {t!r} must be finite and ≥ 0, got {c}")
        object.__setattr__(self, "type_costs", costs)
        for field in ("layer_cost", "edge_cost", "state_bound"):
            value = float(getattr(self, field))
            if not math.isfinite(value) or value < 0:
                fail(field, f"must be finite and ≥ 0, got {value}")
            object.__setattr__(self, field, value)

    @property
    def n_blocks(self) -> int:
        """Gated unit blocks per layer, ``max_width // width_step``."""
        return self.max_width // self.width_step

    @property
    def n_types(self) -> int:
        """Number of layer types in the softmax."""
        return len(self.layer_types)

    @property
    def stream_width(self) -> int:
        """Width ``D = max(n_in, max_width)`` of the hidden stream ``h_l``."""
        return max(self.n_in, self.max_width)

    @property
    def state_dim(self) -> int:
        """Size of the recurrent state: ``stream_width`` with a recurrent edge, else 0."""
        return self.stream_width if self.recurrent else 0


class Params(NamedTuple):
    """Weights of one filter (a bank adds a leading ``[B]`` axis to every leaf).

    Attributes:
      w: ``[L, max_width, D]`` layer weights ``W_l``.
      b: ``[L, max_width]`` layer biases ``b_l``.
      log_sigma: ``[L]`` ``log σ_l`` of the divisive normalisation.
      w_out: ``[n_out, D]`` readout ``W_o``.
      b_out: ``[n_out]`` readout bias ``b_o``.
      w_skip: ``[L, n_out, D]`` skip maps ``S_j`` from stream ``h_j`` (``j = 0..L-1``) to the output.
      w_rec: ``[D, D]`` recurrent map ``U``, or ``None`` without a recurrent edge.
    """

    w: jax.Array
    b: jax.Array
    log_sigma: jax.Array
    w_out: jax.Array
    b_out: jax.Array
    w_skip: jax.Array
    w_rec: jax.Array | None


class Arch(NamedTuple):
    """Architecture logits of one filter (a bank adds a leading ``[B]`` axis to every leaf).

    Attributes:
      units: ``[L, n_blocks]`` unit-block gate logits ``α``.
      layer: ``[L]`` layer-active (vs. pass-through) logits ``γ``.
      types: ``[L, n_types]`` layer-type logits ``β``.
      skip: ``[L]`` skip-edge logits ``ς`` (edge ``j`` runs from stream ``h_j`` to the output).
      recurrent: ``[]`` recurrent-edge logit ``ϱ``, or ``None`` without a recurrent edge.
    """

    units: jax.Array
    layer: jax.Array
    types: jax.Array
    skip: jax.Array
    recurrent: jax.Array | None


class Gates(NamedTuple):
    """Switch values in [0, 1] at one temperature; same shapes as :class:`Arch`."""

    units: jax.Array
    layer: jax.Array
    types: jax.Array
    skip: jax.Array
    recurrent: jax.Array | None


def gates(arch: Arch, temperature: float | jax.Array = 1.0) -> Gates:
    """Evaluates every switch: ``σ(logit / τ)`` for gates, ``softmax(β / τ)`` over layer types.

    Works on one filter or a bank (any leading axes).

    Args:
      arch: architecture logits.
      temperature: ``τ > 0``; small values make the switches hard.

    Returns:
      The gate values, shaped like ``arch``.
    """
    tau = jnp.asarray(temperature, dtype=jnp.result_type(float))
    return Gates(
        units=jax.nn.sigmoid(arch.units / tau),
        layer=jax.nn.sigmoid(arch.layer / tau),
        types=jax.nn.softmax(arch.types / tau, axis=-1),
        skip=jax.nn.sigmoid(arch.skip / tau),
        recurrent=None if arch.recurrent is None else jax.nn.sigmoid(arch.recurrent / tau),
    )


def divisive_normalization(z: jax.Array, sigma: jax.Array) -> jax.Array:
    """Divisive normalisation ``φ(z)_i = z_i² / (σ² + Σ_j z_j²)`` over the last axis.

    Args:
      z: ``[..., W]`` pre-activations (gated units are already zero, so they drop out of the sum).
      sigma: semi-saturation constant ``σ``, broadcastable to ``[...]``.

    Returns:
      ``[..., W]`` normalised responses in [0, 1).
    """
    sq = jnp.square(z)
    return sq / (jnp.square(sigma)[..., None] + jnp.sum(sq, axis=-1, keepdims=True))


def group_max(z: jax.Array, group_size: int) -> jax.Array:
    """Max pooling over consecutive groups, broadcast back: ``φ(z)_i = max_{j ∈ G(i)} z_j``.

    Args:
      z: ``[..., W]`` with ``W`` divisible by ``group_size``.
      group_size: units per group.

    Returns:
      ``[..., W]``: every unit holds the maximum of its group.
    """
    *lead, width = z.shape
    grouped = z.reshape(*lead, width // group_size, group_size)
    # Elementwise maxima of the group's members: a reduction over a tiny minor axis runs an order of
    # magnitude slower on CPU when vmapped over every location.
    pooled = functools.reduce(jnp.maximum, [grouped[..., j] for j in range(group_size)])
    return jnp.broadcast_to(pooled[..., None], grouped.shape).reshape(z.shape)


def _activation(spec: BasisSpec, name: str, z: jax.Array, sigma: jax.Array) -> jax.Array:
    if name == "relu":
        return jax.nn.relu(z)
    if name == "logistic":
        return jax.nn.sigmoid(z)
    if name == "tanh":
        return jnp.tanh(z)
    if name == "divnorm":
        return divisive_normalization(z, sigma)
    if name == "maxpool":
        return group_max(z, spec.pool_size)
    if name == "identity":
        return z
    raise AssertionError(f"unreachable: layer type {name!r} passed BasisSpec validation")


def _bounded(spec: BasisSpec, h: jax.Array) -> jax.Array:
    """The next recurrent state: ``c·tanh(h / c)`` with ``c = spec.state_bound``, or ``h`` when it is 0."""
    c = spec.state_bound
    return c * jnp.tanh(h / c) if c > 0 else h


def _pad(x: jax.Array, width: int) -> jax.Array:
    return jnp.pad(x, (0, width - x.shape[-1]))


def _check_one_filter(spec: BasisSpec, arch: Arch, where: str) -> None:
    if arch.layer.shape != (spec.n_layers,):
        raise ValueError(
            f"mesojax.basis.{where}: arch.layer has shape {arch.layer.shape}, expected ({spec.n_layers},)"
            " for one filter; vmap over the filter axis (or use describe_bank / apply_bank)"
        )
    if (arch.recurrent is None) == spec.recurrent:
        raise ValueError(
            f"mesojax.basis.{where}: arch.recurrent is {'absent' if arch.recurrent is None else 'present'}"
            f" but BasisSpec.recurrent={spec.recurrent}"
        )


def complexity(spec: BasisSpec, arch: Arch, *, temperature: float | jax.Array = 1.0) -> jax.Array:
    """Expected cost of an architecture: active layers, their units and types, open edges.

    .. math::

        C = \\sum_l κ_l \\Big[c_\\text{layer} + \\Big(\\sum_t p_{l,t} c_t\\Big)\\,
            \\text{width\\_step} \\sum_k g_{l,k}\\Big] + c_\\text{edge}\\Big(\\sum_j s_j + ρ\\Big)

    With costs ≥ 0 it is non-decreasing in every unit gate ``g``, layer gate ``κ`` and edge gate.
    For a hard architecture it is the exact count (e.g. one active divnorm layer of 12 units with the
    default costs: ``1 + 2·12``).

    Args:
      spec: the filter family.
      arch: logits of one filter or of a bank (leading axes are kept).
      temperature: ``τ`` of the switches.

    Returns:
      ``arch.layer.shape[:-1]`` costs (a scalar for one filter, ``[B]`` for a bank).
    """
    g = gates(arch, temperature)
    type_cost = g.types @ jnp.asarray(spec.type_costs, dtype=g.types.dtype)  # [..., L]
    units = spec.width_step * jnp.sum(g.units, axis=-1)  # [..., L]
    per_layer = g.layer * (spec.layer_cost + type_cost * units)
    edges = jnp.sum(g.skip, axis=-1)
    if g.recurrent is not None:
        edges = edges + g.recurrent
    return jnp.sum(per_layer, axis=-1) + spec.edge_cost * edges


def discretize(arch: Arch) -> Arch:
    """The hard architecture: gates thresholded at 0.5, argmax over layer types.

    Logits become ``±HARD_LOGIT`` so the result is an :class:`Arch` that the same ``apply`` accepts and
    whose gates are exactly 0/1 at any temperature ≤ 1e4. Works on one filter or a bank.

    Args:
      arch: soft logits (``σ(x/τ) ≥ 0.5`` ⇔ ``x ≥ 0`` for every ``τ > 0``).

    Returns:
      Hard logits, same shapes.
    """

    def hard(x: jax.Array) -> jax.Array:
        return jnp.where(x >= 0, HARD_LOGIT, -HARD_LOGIT).astype(x.dtype)

    one_hot = jax.nn.one_hot(jnp.argmax(arch.types, axis=-1), arch.types.shape[-1], dtype=bool)
    return Arch(
        units=hard(arch.units),
        layer=hard(arch.layer),
        types=jnp.where(one_hot, HARD_LOGIT, -HARD_LOGIT).astype(arch.types.dtype),
        skip=hard(arch.skip),
        recurrent=None if arch.recurrent is None else hard(arch.recurrent),
    )


def hard_arch(
    spec: BasisSpec,
    *,
    widths: Sequence[int],
    types: Sequence[str],
    active: Sequence[bool] | None = None,
    skip: Sequence[bool] | None = None,
    recurrent: bool = False,
) -> Arch:
    """Builds the hard logits of one filter from explicit choices (to fix or inspect an architecture).

    Args:
      spec: the filter family.
      widths: ``L`` widths, each a multiple of ``width_step`` in ``[0, max_width]``.
      types: ``L`` layer types from ``spec.layer_types``.
      active: ``L`` flags; a layer that is not active is a pass-through. Default: all active.
      skip: ``L`` flags for the skip edges from ``h_0`` (input) .. ``h_{L-1}``. Default: none.
      recurrent: open the recurrent edge (needs ``spec.recurrent``).

    Returns:
      An :class:`Arch` with ``±HARD_LOGIT`` entries.
    """
    n_layers = spec.n_layers
    active = (True,) * n_layers if active is None else tuple(active)
    skip = (False,) * n_layers if skip is None else tuple(skip)
    for name, seq in (("widths", widths), ("types", types), ("active", active), ("skip", skip)):
        if len(seq) != n_layers:
            raise ValueError(
                f"mesojax.basis.hard_arch: {name} has {len(seq)} entries, expected n_layers={n_layers}"
            )
    units = np.full((n_layers, spec.n_blocks), -HARD_LOGIT, np.float32)
    type_logits = np.full((n_layers, spec.n_types), -HARD_LOGIT, np.float32)
    for layer, (width, name) in enumerate(zip(widths, types)):
        if width % spec.width_step or not 0 <= width <= spec.max_width:
            raise ValueError(
                f"mesojax.basis.hard_arch: widths[{layer}] = {width} must be a multiple of width_step="
                f"{spec.width_step} in [0, {spec.max_width}]"
            )
        if name not in spec.layer_types:
            raise ValueError(
                f"mesojax.basis.hard_arch: types[{layer}] = {name!r} is not in layer_types "
                f"{list(spec.layer_types)}"
            )
        units[layer, : width // spec.width_step] = HARD_LOGIT
        type_logits[layer, spec.layer_types.index(name)] = HARD_LOGIT
    if recurrent and not spec.recurrent:
        raise ValueError("mesojax.basis.hard_arch: recurrent=True but BasisSpec.recurrent=False")

    def flags(seq: Sequence[bool] | bool) -> jax.Array:
        return jnp.asarray(np.where(np.asarray(seq, bool), HARD_LOGIT, -HARD_LOGIT).astype(np.float32))

    return Arch(
        units=jnp.asarray(units),
        layer=flags(active),
        types=jnp.asarray(type_logits),
        skip=flags(skip),
        recurrent=(flags(recurrent) if spec.recurrent else None),
    )


def describe(spec: BasisSpec, arch: Arch) -> str:
    """Human-readable summary of one filter's discretised architecture (host-side, not jittable).

    Passed-through layers are left out; a skip edge is named by the stream it effectively reads
    (``in`` or ``L<k>``, the k-th listed layer) and left out when that stream is the readout's own input.

    Args:
      spec: the filter family.
      arch: one filter's logits, soft or hard (soft logits are discretised first).

    Returns:
      E.g. ``'8 -> 12 divisive-norm -> 8, skip in->out'``.
    """
    _check_one_filter(spec, arch, "describe")
    # The thresholds of `discretize`, on the host (no device round trip per filter).
    logits = jax.tree.map(np.asarray, arch)
    parts = [str(spec.n_in)]
    source = []  # effective stream read by skip edge j: number of active layers among 1..j
    n_active = 0
    for layer in range(spec.n_layers):
        source.append(n_active)
        if logits.layer[layer] >= 0:
            n_active += 1
            width = int(np.sum(logits.units[layer] >= 0)) * spec.width_step
            name = spec.layer_types[int(np.argmax(logits.types[layer]))]
            label = DISPLAY_NAMES[name] + (f"/{spec.pool_size}" if name == "maxpool" else "")
            parts.append(f"{width} {label}")
    parts.append(str(spec.n_out))
    text = " -> ".join(parts)
    skips = sorted({source[j] for j in range(spec.n_layers) if logits.skip[j] >= 0 and source[j] < n_active})
    for j in skips:
        text += f", skip {'in' if j == 0 else f'L{j}'}->out"
    if logits.recurrent is not None and logits.recurrent >= 0:
        text += ", recurrent"
    return text


def describe_bank(spec: BasisSpec, arch: Arch) -> list[str]:
    """:func:`describe` for every filter of a bank (``arch`` leaves carry a leading ``[B]`` axis)."""
    n_filters = arch.layer.shape[0] if arch.layer.ndim == 2 else None
    if n_filters is None:
        raise ValueError(
            f"mesojax.basis.describe_bank: arch.layer has shape {arch.layer.shape}, expected "
            f"(B, {spec.n_layers}); use describe for one filter"
        )
    logits = jax.tree.map(np.asarray, arch)  # one device-to-host copy for the whole bank
    return [describe(spec, jax.tree.map(lambda x, b=b: x[b], logits)) for b in range(n_filters)]


class FixedLayer(NamedTuple):
    """One active layer of a fixed (discretised) architecture: its type and its active units, ascending
    (whole unit blocks)."""

    type: str
    units: tuple[int, ...]


class Fixed(NamedTuple):
    """A discretised architecture of one filter as static Python values (hashable; a jit static argument).

    :func:`apply_fixed` computes only what it uses: the selected layer type of each active layer, its
    active units, the open skip edges; passed-through layers cost nothing.

    Attributes:
      layers: per layer, a :class:`FixedLayer`, or None where the layer passes its input through.
      skip: per layer ``j``, whether the skip edge from stream ``h_j`` to the output is open.
      recurrent: whether the recurrent edge is open.
    """

    layers: tuple[FixedLayer | None, ...]
    skip: tuple[bool, ...]
    recurrent: bool


def is_hard(arch: Arch) -> bool:
    """Whether every logit is ``±HARD_LOGIT`` (:func:`discretize`, :func:`hard_arch`): the gates are 0/1 at
    any temperature, so the soft and the fixed computations agree (host-side)."""
    return all(bool(np.all(np.abs(np.asarray(x)) >= HARD_LOGIT)) for x in jax.tree.leaves(arch))


def fix(spec: BasisSpec, arch: Arch) -> Fixed:
    """One filter's architecture, discretised (the thresholds of :func:`discretize`), as a :class:`Fixed`.

    Host-side (not jittable): the result is static. ``apply_fixed(spec, fix(spec, arch), ...)`` equals
    ``apply(..., discretize(arch), ...)`` up to float rounding.
    """
    _check_one_filter(spec, arch, "fix")
    logits = jax.tree.map(np.asarray, arch)
    layers = []
    for layer in range(spec.n_layers):
        if logits.layer[layer] < 0:
            layers.append(None)
            continue
        blocks = np.flatnonzero(logits.units[layer] >= 0)
        units = tuple(int(u) for k in blocks for u in range(k * spec.width_step, (k + 1) * spec.width_step))
        layers.append(FixedLayer(spec.layer_types[int(np.argmax(logits.types[layer]))], units))
    recurrent = bool(logits.recurrent >= 0) if logits.recurrent is not None else False
    return Fixed(tuple(layers), tuple(bool(x >= 0) for x in logits.skip), recurrent)


_EQUATION_OP = {"relu": "relu", "logistic": "σ", "tanh": "tanh", "divnorm": "divnorm", "identity": ""}


def equation(spec: BasisSpec, fixed: Fixed) -> str:
    """A fixed architecture's computation written out, one assignment per stream (host-side text).

    Names follow :class:`Params` and the layer index: ``hk``, ``Wk``, ``bk`` are layer k's output and
    ``w[k-1]``, ``b[k-1]`` (``h0``: the input; a passed-through layer has no line), ``Sj`` is
    ``w_skip[j]``, ``U`` is ``w_rec``, ``Wo``, ``bo`` the readout; ``[n]`` a stream's width, ``r`` the
    recurrent state; ``divnorm(z)_i = z_i² / (σ² + Σ_j z_j²)`` and ``maxpool2`` the max over groups of 2
    units.

    Example::

        >>> spec = BasisSpec(n_in=8, n_out=4, n_layers=2, max_width=16, width_step=4)
        >>> arch = hard_arch(spec, widths=(12, 16), types=("tanh", "relu"), active=(True, False), skip=(True, False))
        >>> equation(spec, fix(spec, arch))
        "h0 = u [8]; h1 = tanh(W1·h0 + b1) [12]; v = Wo·h1 + bo + S0·h0 [4]; r' = h1"
    """
    d = spec.stream_width
    streams = ["h0"]
    parts = [f"h0 = u + U·r [{d}]" if spec.recurrent and fixed.recurrent else f"h0 = u [{spec.n_in}]"]
    read = []  # the stream each skip edge reads
    for layer, fl in enumerate(fixed.layers):
        read.append(streams[-1])
        if fl is None:
            continue
        k = layer + 1  # W_k, b_k = params.w[k-1], params.b[k-1]; a passed-through layer has no line
        op = f"maxpool{spec.pool_size}" if fl.type == "maxpool" else _EQUATION_OP[fl.type]
        inner = f"W{k}·{streams[-1]} + b{k}"
        parts.append(f"h{k} = {op}({inner}) [{len(fl.units)}]" if op else f"h{k} = {inner} [{len(fl.units)}]")
        streams.append(f"h{k}")
    skips = "".join(f" + S{j}·{read[j]}" for j in range(spec.n_layers) if fixed.skip[j])
    parts.append(f"v = Wo·{streams[-1]} + bo{skips} [{spec.n_out}]")
    if spec.recurrent:
        c = spec.state_bound
        parts.append(f"r' = {c:g}·tanh({streams[-1]}/{c:g})" if c > 0 else f"r' = {streams[-1]}")
    return "; ".join(parts)


def fix_bank(spec: BasisSpec, arch: Arch) -> tuple[Fixed, ...]:
    """:func:`fix` for every filter of a bank (``arch`` leaves carry a leading ``[B]`` axis)."""
    logits = jax.tree.map(np.asarray, arch)
    return tuple(fix(spec, jax.tree.map(lambda x, b=b: x[b], logits)) for b in range(logits.layer.shape[0]))


def static_index(idx: np.ndarray) -> slice | np.ndarray:
    """A contiguous run of positions as a slice (an XLA slice, not a gather), others as they are."""
    if len(idx) and np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx))):
        return slice(int(idx[0]), int(idx[0]) + len(idx))
    return idx


def apply_fixed(spec: BasisSpec, fixed: Fixed, params: Params, u: jax.Array,
                state: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Runs ONE filter with a fixed architecture: the equations of the module docstring with every gate
    0 or 1 and one layer type, computing only the units, layers and edges that are on.

    The stream is carried as its possibly non-zero entries and their (static) positions, so a layer of
    12 active units multiplies a ``[12, n]`` slice of ``W_l`` with the ``n`` entries of the stream it
    reads.

    Args:
      fixed: from :func:`fix` (static).
      params: one filter's :class:`Params`.
      u: ``[n_in]`` input; state: ``[state_dim]`` (None: zeros).

    Returns:
      ``(v, new_state)`` as :meth:`Bank.apply` with ``discretize(arch)``.

    Example::

        fixed = basis.fix(spec, arch)
        v, state = basis.apply_fixed(spec, fixed, params, u, state)
    """
    d = spec.stream_width
    if state is None:
        state = jnp.zeros((spec.state_dim,), u.dtype)
    if spec.recurrent and fixed.recurrent:
        h, pos = _pad(u, d) + params.w_rec @ state, np.arange(d)
    else:
        h, pos = u, np.arange(spec.n_in)
    v = params.b_out
    for layer, fl in enumerate(fixed.layers):
        if fixed.skip[layer]:
            v = v + params.w_skip[layer][:, static_index(pos)] @ h
        if fl is None:
            continue
        rows = np.asarray(fl.units, np.int64)
        w = params.w[layer][static_index(rows)][:, static_index(pos)]
        z = w @ h + params.b[layer][static_index(rows)]
        h, pos = _activation(spec, fl.type, z, jnp.exp(params.log_sigma[layer])), rows
    v = v + params.w_out[:, static_index(pos)] @ h
    if not spec.recurrent:
        return v, state
    at = static_index(pos)
    new_state = (_pad(h, d) if isinstance(at, slice) and at.start == 0 else jnp.zeros((d,), h.dtype).at[at].set(h))
    return v, _bounded(spec, new_state)


class Bank(NamedTuple):
    """Pure functions of one basis-filter family (returned by :func:`make_bank`).

    Attributes:
      spec: the :class:`BasisSpec`.
      init: ``(key, n_filters) -> (params, arch)``, stacked on a leading ``[B]`` axis.
      init_filter: ``key -> (params, arch)`` for one filter.
      init_state: ``(batch_shape=()) -> state`` zeros ``[*batch_shape, state_dim]``.
      apply: ``(params, arch, u, state=None, *, temperature=1.0) -> (v, new_state)`` for ONE filter:
        ``u`` ``[n_in]``, ``state`` ``[state_dim]`` → ``v`` ``[n_out]``, ``new_state`` ``[state_dim]``.
      apply_bank: the same, vmapped over the filter axis: ``u`` ``[B, n_in]``, ``state``
        ``[B, state_dim]`` → ``v`` ``[B, n_out]``.
      complexity: ``(arch, *, temperature=1.0) -> cost`` (:func:`complexity` bound to ``spec``).
    """

    spec: BasisSpec
    init: Callable[[jax.Array, int], tuple[Params, Arch]]
    init_filter: Callable[[jax.Array], tuple[Params, Arch]]
    init_state: Callable[..., jax.Array]
    apply: Callable[..., tuple[jax.Array, jax.Array]]
    apply_bank: Callable[..., tuple[jax.Array, jax.Array]]
    complexity: Callable[..., jax.Array]


def make_bank(spec: BasisSpec) -> Bank:
    """Builds the pure ``init`` / ``apply`` functions of a bank of basis filters.

    Init: LeCun-normal weights (std ``1/sqrt(fan_in)``; fan-in ``n_in`` for layer 1 and the input skip,
    ``D`` otherwise), zero biases, ``σ = 1``, recurrent weights scaled by 0.1; unit-block and layer gates at
    ``spec.init_gate_logit``, skip and recurrent gates at ``spec.init_edge_logit``, type logits near 0
    (a uniform mixture, with a little noise so that filters differ).

    Args:
      spec: the filter family.

    Returns:
      A :class:`Bank`; see its attributes for the signatures.
    """
    n_layers, width, d = spec.n_layers, spec.max_width, spec.stream_width

    def init(key: jax.Array, n_filters: int) -> tuple[Params, Arch]:
        shapes = {
            "w": (n_filters, n_layers, width, d),
            "w_skip": (n_filters, n_layers, spec.n_out, d),
            "w_out": (n_filters, spec.n_out, d),
            "w_rec": (n_filters, d, d) if spec.recurrent else (0,),
            "types": (n_filters, n_layers, spec.n_types),
        }
        # One RNG call for every leaf: a vmapped or repeated threefry takes seconds to compile on CPU.
        sizes = [math.prod(shape) for shape in shapes.values()]
        flat = jax.random.normal(key, (sum(sizes),))
        pieces = jnp.split(flat, np.cumsum(sizes)[:-1].tolist())
        noise = {name: x.reshape(shape) for (name, shape), x in zip(shapes.items(), pieces)}
        # Layer 1 and the input skip read the input (fan-in n_in); the others read the stream (fan-in D).
        fan_in = np.asarray([spec.n_in] + [d] * (n_layers - 1), np.float32)[:, None, None]
        params = Params(
            w=noise["w"] / np.sqrt(fan_in),
            b=jnp.zeros((n_filters, n_layers, width)),
            log_sigma=jnp.zeros((n_filters, n_layers)),
            w_out=noise["w_out"] / math.sqrt(d),
            b_out=jnp.zeros((n_filters, spec.n_out)),
            w_skip=noise["w_skip"] / np.sqrt(fan_in),
            w_rec=(_RECURRENT_INIT_SCALE / math.sqrt(d)) * noise["w_rec"] if spec.recurrent else None,
        )
        f32 = jnp.float32  # explicit: weak-typed leaves would recompile callers against strong ones
        arch = Arch(
            units=jnp.full((n_filters, n_layers, spec.n_blocks), spec.init_gate_logit, f32),
            layer=jnp.full((n_filters, n_layers), spec.init_gate_logit, f32),
            types=_TYPE_INIT_NOISE * noise["types"],
            skip=jnp.full((n_filters, n_layers), spec.init_edge_logit, f32),
            recurrent=jnp.full((n_filters,), spec.init_edge_logit, f32) if spec.recurrent else None,
        )
        return params, arch

    def init_filter(key: jax.Array) -> tuple[Params, Arch]:
        return jax.tree.map(lambda x: x[0], init(key, 1))

    def init_state(batch_shape: tuple[int, ...] = ()) -> jax.Array:
        return jnp.zeros((*batch_shape, spec.state_dim))

    def apply(
        params: Params,
        arch: Arch,
        u: jax.Array,
        state: jax.Array | None = None,
        *,
        temperature: float | jax.Array = 1.0,
    ) -> tuple[jax.Array, jax.Array]:
        """Runs ONE filter on one input vector (the equations of the module docstring).

        Args:
          params: one filter's :class:`Params`.
          arch: one filter's :class:`Arch` (soft, or hard from :func:`discretize` / :func:`hard_arch`).
          u: ``[n_in]`` input.
          state: ``[state_dim]`` recurrent state ``r`` (the last stream of the previous call); ``None``
            means zeros.
          temperature: ``τ`` of every switch (may be a traced scalar, e.g. annealed under jit).

        Returns:
          ``(v, new_state)``: ``[n_out]`` output and ``[state_dim]`` next state ``c·tanh(h_L / c)`` (``h_L`` when ``state_bound`` is 0; the input
          state unchanged, empty, without a recurrent edge).
        """
        if u.shape != (spec.n_in,):
            raise ValueError(
                f"mesojax.basis.apply: u has shape {u.shape}, expected ({spec.n_in},) for one filter at one"
                " location; jax.vmap over filters / locations / batch"
            )
        _check_one_filter(spec, arch, "apply")
        if state is None:
            state = init_state()
        if state.shape != (spec.state_dim,):
            raise ValueError(
                f"mesojax.basis.apply: state has shape {state.shape}, expected ({spec.state_dim},)"
            )
        g = gates(arch, temperature)
        h = _pad(u, d)
        if spec.recurrent:
            h = h + g.recurrent * (params.w_rec @ state)
        v = params.b_out
        for layer in range(n_layers):
            v = v + g.skip[layer] * (params.w_skip[layer] @ h)
            mask = jnp.repeat(g.units[layer], spec.width_step)
            z = mask * (params.w[layer] @ h + params.b[layer])
            sigma = jnp.exp(params.log_sigma[layer])
            # A weighted sum, not a stack and a dot: under vmap the stack is a [..., width, types] tensor
            # that the backward pass stores at every rollout step.
            mixed = sum(g.types[layer, k] * _activation(spec, t, z, sigma) for k, t in enumerate(spec.layer_types))
            y = mask * mixed
            h = g.layer[layer] * _pad(y, d) + (1.0 - g.layer[layer]) * h
        v = v + params.w_out @ h
        new_state = _bounded(spec, h) if spec.recurrent else state
        return v, new_state

    def apply_bank(
        params: Params,
        arch: Arch,
        u: jax.Array,
        state: jax.Array | None = None,
        *,
        temperature: float | jax.Array = 1.0,
    ) -> tuple[jax.Array, jax.Array]:
        """``apply`` vmapped over the filter axis: ``u`` ``[B, n_in]``, ``state`` ``[B, state_dim]``.

        Returns:
          ``(v, new_state)``: ``[B, n_out]`` and ``[B, state_dim]``.
        """
        if state is None:
            state = init_state(u.shape[:1])

        def one(p: Params, a: Arch, x: jax.Array, s: jax.Array) -> tuple[jax.Array, jax.Array]:
            return apply(p, a, x, s, temperature=temperature)

        return jax.vmap(one)(params, arch, u, state)

    def bound_complexity(arch: Arch, *, temperature: float | jax.Array = 1.0) -> jax.Array:
        return complexity(spec, arch, temperature=temperature)

    # jit here only makes eager calls cheap (one compilation instead of op-by-op dispatch); inside a
    # caller's jit / vmap / grad these are inlined like any other function.
    return Bank(
        spec=spec,
        init=jax.jit(init, static_argnums=1),
        init_filter=jax.jit(init_filter),
        init_state=init_state,
        apply=jax.jit(apply),
        apply_bank=jax.jit(apply_bank),
        complexity=jax.jit(bound_complexity),
    )
