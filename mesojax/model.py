r"""The mesoscale model: basis filters applied over a grid of receptive fields, mixed by domain assignment.

One step maps the recent state ``x[t-H+1..t]`` (``[H, N]``) and the stimulus ``s[t+1]`` of the frame
being predicted (stimulus is known in advance, and in calcium imaging it drives the frame it is
delivered in) to ``x̂[t+1]``::

    u[µ,b]      = encode_µb( x[:, members(µ)], a[members(µ), µ, b] )          interface in   [H', M]
    v[µ,b], r'  = filter_b( [u[µ,b], s[t+1]], r[µ,b] )                        basis filter   [M]
    y[µ,b,k]    = decode_µb( v[µ,b], x[t, members(µ)] )                        interface out  [K]
    x̂[t+1, i]  = Σ_(c,b) a[i,c,b] · y[cand(i,c), b, slot(i,c)]                 domain mixing
    ŷ_beh[t+1]  = Σ_(µ∈g,b) σ(ρ[µ,b]) · v[µ,b] W_b / L_g + c                    behaviour readout f*

``H' = H`` (+1 when the synaptic layer adds its drive as an extra channel), ``r`` is each pair's
recurrent filter state (passed in and returned). With a *retinotopic* stimulus (channels with
positions) location µ reads only the channels inside its field, ``s[t+1, chan(µ)]`` (``[Sl]``, nearest
first, zero-padded), in place of the whole vector. The filter is ``vmap``-ped over filters and
locations; sharding the location axis shards the work. A spec with ``pair_locations`` computes each
filter only at its listed locations, where the assignment puts weight (:func:`active_pairs`,
:func:`with_pairs`); the pairs left out output ``v = 0``. Encoding, decoding and mixing are linear in the
members' values, so their per-pair maps are folded with the assignment once per batch
(:func:`mesojax.interface.circuit_maps`, in :class:`Context`) and each step contracts them per location;
the ``[L, B, K]`` pair predictions ``y`` are formed only where needed (the local loss reads the first
step's). Locations added only to pad L to a multiple of the device count are masked out of every sum, so
padding never changes a result. Each part runs under a ``jax.named_scope`` (assignment, interface_maps,
interface_in, filter_bank, decode_mix, readout) so that profiles attribute time to it.

Neurons without a position (no candidate pair, e.g. unidentified point sources of a real recording)
are predicted from their own history by a per-neuron linear fallback ``x̂_i = Σ_h w[i,h] x[h,i] + c_i``,
initialised to persistence. Several independent circuits (animals) can share one model as a disjoint
union, like a batch of graphs: every location belongs to one *group* ``g`` (animal), and a behaviour
target of group g pools only g's locations (``L_g`` real ones).

:func:`rollout` runs the step with ``lax.scan``: teacher-forced (observed values fed back) for the
first ``n_teacher`` steps, free-running (predictions fed back) after, which is both the multi-step
training objective and the way to run a fitted model on new stimulus.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mesojax import assign, basis, interface, spatial, synapses


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Static sizes and sub-specs (hashable).

    Attributes:
      n_neurons, n_locations, n_members, n_candidates: N, L, K, C of the spatial tables.
      n_filters: B.
      n_ports: M, interface width.
      history: H frames of input.
      n_stimulus: S stimulus channels.
      n_behaviour: Kc continuous behaviour targets.
      n_modes: number of discrete behaviour modes (0: none).
      use_synapses: add the connectome drive as an input channel.
      n_groups: independent circuits in a disjoint union (1: one circuit); behaviour pools per group.
      window_norm: per-step instance normalisation: every step reads its history centred on the
        window's own level ``m = mean_h x[h]`` (per neuron) and adds ``m`` back to its forecast, so the
        model predicts deviations from the recent level and mean reversion goes to that level, not to the
        training mean (a drifting recording); the forecast shifts with any constant added to the inputs.
      behaviour_readout: ``"pooled"``: behaviour is the gated per-filter readout ``f*`` (module
        docstring), trained with the rest; ``"state"``: behaviour[t+1] is a linear readout of the
        current state and the predicted change ``x̂[t+1] - x[t]``, fitted in closed form after training
        on the training segment (:mod:`mesojax.readout`); the in-model readout then reads ``v`` through a
        stop-gradient, so behaviour cannot change the neural forecasts.
      behaviour_stop_gradient: the ``f*`` readout reads ``v`` through a stop-gradient (behaviour trains
        only the readout's own weights).
      n_local_stimulus: ``Sl > 0``: the stimulus is retinotopic and every location reads the ``Sl``
        channels of its own field (:func:`mesojax.spatial.stimulus_tables`); 0: every location reads all S.
      basis: the filter family (``n_in = M·H' + S``, or ``M·H' + Sl`` when retinotopic; ``n_out = M``).
      interface, assign: sub-specs.
      fixed_arch: the filters' discretised architectures (:func:`mesojax.basis.fix_bank`, one per filter),
        or None. When set, the bank runs each filter with :func:`mesojax.basis.apply_fixed` (only its
        selected layer types, active units and open edges) and ``params.arch`` is not read: the model
        of the hard phase (``train.hard_steps``) and of the discretised forecasts. See :func:`with_fixed_arch`.
      pair_locations: per filter, the sorted locations at which it is computed (None: every location).
        A pair left out has output ``v = 0`` and keeps its recurrent state; its assignment weight is
        below ``eval.pair_threshold`` when the set is chosen (:func:`active_pairs`), so leaving it out
        changes the forecast by at most that weight times its output. See :func:`with_pairs`.
    """

    n_neurons: int
    n_locations: int
    n_members: int
    n_candidates: int
    n_filters: int
    n_ports: int
    history: int
    n_stimulus: int
    n_behaviour: int
    n_modes: int
    use_synapses: bool
    basis: basis.BasisSpec
    interface: interface.InterfaceSpec
    assign: assign.AssignSpec
    n_groups: int = 1
    window_norm: bool = False
    behaviour_readout: str = "pooled"
    behaviour_stop_gradient: bool = False
    n_local_stimulus: int = 0
    fixed_arch: tuple[basis.Fixed, ...] | None = None
    pair_locations: tuple[tuple[int, ...], ...] | None = None

    @property
    def n_channels(self) -> int:
        return self.history + int(self.use_synapses)


def with_fixed_arch(spec: ModelSpec, arch: basis.Arch | None) -> ModelSpec:
    """`spec` running the bank's architectures `arch` discretised and fixed (None: the soft, searched
    architecture again). The result is a new static spec: jitted functions compile once more for it."""
    fixed = None if arch is None else basis.fix_bank(spec.basis, arch)
    return dataclasses.replace(spec, fixed_arch=fixed)


def with_pairs(spec: ModelSpec, locations: tuple[tuple[int, ...], ...] | None) -> ModelSpec:
    """`spec` computing filter b only at ``locations[b]`` (None: everywhere); a new static spec."""
    if locations is not None and len(locations) != spec.n_filters:
        raise ValueError(f"pair_locations: {len(locations)} filters given, the model has {spec.n_filters}")
    return dataclasses.replace(spec, pair_locations=locations)


def active_pairs(ctx: "Context", inputs: "ModelInputs", threshold: float) -> tuple[tuple[int, ...], ...]:
    """Per filter, the real locations where some member's assignment weight reaches `threshold`.

    ``max_k w[µ,k,b] ≥ threshold`` (``w = ctx.member_weight``); the others contribute at most
    ``threshold · |decode(v)|`` to any forecast.
    """
    w = np.asarray(jax.device_get(ctx.member_weight)).max(axis=1)  # [L, B]
    on = (w >= threshold) & np.asarray(inputs.tables.location_mask)[:, None]
    return tuple(tuple(int(i) for i in np.flatnonzero(on[:, b])) for b in range(on.shape[1]))


def make_spec(
    *,
    n_neurons: int,
    n_locations: int,
    n_members: int,
    n_candidates: int,
    n_features: int,
    n_filters: int,
    n_ports: int,
    history: int = 1,
    n_stimulus: int = 0,
    n_behaviour: int = 0,
    n_modes: int = 0,
    use_synapses: bool = False,
    n_groups: int = 1,
    window_norm: bool = False,
    behaviour_readout: str = "pooled",
    behaviour_stop_gradient: bool = False,
    n_local_stimulus: int = 0,
    basis_kwargs: dict | None = None,
    interface_kwargs: dict | None = None,
    assign_kwargs: dict | None = None,
) -> ModelSpec:
    """Build a consistent :class:`ModelSpec` (derives the filter input width)."""
    if n_groups < 1 or (n_modes and n_groups > 1):
        raise ValueError(f"model spec: n_groups = {n_groups} must be ≥ 1, and 1 with discrete modes "
                         f"(n_modes = {n_modes}): give each group's modes as continuous 0/1 targets")
    if behaviour_readout not in ("pooled", "state"):
        raise ValueError(f"model spec: behaviour_readout = {behaviour_readout!r}; expected 'pooled' or 'state'")
    if n_local_stimulus < 0 or (n_local_stimulus and not n_stimulus):
        raise ValueError(f"model spec: n_local_stimulus = {n_local_stimulus} needs a stimulus (n_stimulus = "
                         f"{n_stimulus}) and must be ≥ 0")
    n_in = n_ports * (history + int(use_synapses)) + (n_local_stimulus or n_stimulus)
    return ModelSpec(
        n_neurons=n_neurons, n_locations=n_locations, n_members=n_members, n_candidates=n_candidates,
        n_filters=n_filters, n_ports=n_ports, history=history, n_stimulus=n_stimulus,
        n_behaviour=n_behaviour, n_modes=n_modes, use_synapses=use_synapses,
        basis=basis.BasisSpec(n_in=n_in, n_out=n_ports, **(basis_kwargs or {})),
        interface=interface.InterfaceSpec(
            n_ports=n_ports, n_features=n_features, n_filters=n_filters, **(interface_kwargs or {})
        ),
        assign=assign.AssignSpec(n_filters=n_filters, **(assign_kwargs or {})),
        n_groups=n_groups,
        window_norm=window_norm,
        behaviour_readout=behaviour_readout,
        behaviour_stop_gradient=behaviour_stop_gradient,
        n_local_stimulus=n_local_stimulus,
    )


class ModelInputs(NamedTuple):
    """Static (not trained) arrays: spatial tables, features and synapse endpoints.

    Attributes:
      tables: :class:`mesojax.spatial.SpatialTables` as jax arrays (synapse tables dropped): members,
        candidates, slots, the inverse map, offsets and masks; read by the gathers of :mod:`mesojax.spatial`.
      assign: :class:`mesojax.assign.AssignInputs` (the same tables' arrays, plus offsets and features).
      member_features: ``[L, K, F]`` features of every sphere slot (for the port embedding).
      syn_pre, syn_post: ``[E]`` synapse endpoints (``[0]`` without the synaptic layer).
      location_group: ``[L]`` int32 group (circuit) of each location.
      behaviour_group: ``[Kc]`` int32 group whose locations each behaviour target reads.
      stim_channels, stim_mask: ``[L, Sl]`` stimulus channels of each location's field and their mask
        (:class:`mesojax.spatial.StimulusTables`), or None when every location reads the whole stimulus.
    """

    tables: spatial.SpatialTables
    assign: assign.AssignInputs
    member_features: jax.Array
    syn_pre: jax.Array
    syn_post: jax.Array
    location_group: jax.Array
    behaviour_group: jax.Array
    stim_channels: jax.Array | None = None
    stim_mask: jax.Array | None = None


def build_inputs(
    tables: spatial.SpatialTables,
    neuron_features: np.ndarray,
    cell_type: np.ndarray,
    *,
    syn_pre: np.ndarray | None = None,
    syn_post: np.ndarray | None = None,
    cell_types: tuple[str, ...] | None = None,
    location_group: np.ndarray | None = None,
    behaviour_group: np.ndarray | None = None,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
    stimulus_tables: spatial.StimulusTables | None = None,
) -> ModelInputs:
    """Assemble :class:`ModelInputs` from spatial tables and per-neuron features (host side, once).

    Member features (the interface's port embedding input) are, per sphere slot: the offset from the
    centre in radii ``[3]``, the one-hot cell type ``[T]`` and the standardised neuron features ``[F]``;
    the assignment network reads ``[one-hot type, features]`` per neuron.

    Args:
      tables: from :func:`mesojax.spatial.build_tables`.
      neuron_features: ``[N, F]`` standardised (e.g. :func:`mesojax.features.standardize`).
      cell_type: ``[N]`` str.
      syn_pre, syn_post: ``[E]`` synapse endpoints for the synaptic layer (None: no synapses).
      cell_types: the vocabulary of types (default: sorted unique of `cell_type`), fixed across data
        sets when a basis is transferred.
      location_group: ``[L]`` group of each location (default: all 0, one circuit).
      behaviour_group: ``[Kc]`` group of each behaviour target (default: empty; only read when there
        are several groups).
      neighbours: ``(pre, post)`` synapse endpoints for the assignment's coherence term (None: off).
      stimulus_tables: the channels of each field for a retinotopic stimulus (None: every location reads
        the whole stimulus); its rows must match the tables' locations.

    Returns:
      :class:`ModelInputs` of jax arrays.
    """
    cell_type = np.asarray(cell_type).astype(str)
    vocab = tuple(sorted(set(cell_type.tolist()))) if cell_types is None else tuple(cell_types)
    onehot = (cell_type[:, None] == np.asarray(vocab)[None, :]).astype(np.float32)  # [N, T]
    per_neuron = np.concatenate([onehot, np.asarray(neuron_features, np.float32)], axis=1)
    mask = tables.member_mask[..., None]
    member_features = np.where(
        mask, np.concatenate([tables.member_offset, per_neuron[tables.members]], axis=-1), 0.0
    ).astype(np.float32)
    candidate_offset = tables.member_offset[tables.candidates, tables.candidate_slot]
    candidate_offset = np.where(tables.candidate_mask[..., None], candidate_offset, 0.0)
    dev = jax.tree.map(jnp.asarray, tables._replace(synapses=None, synapse_mask=None))
    ai = assign.AssignInputs(
        candidates=dev.candidates,
        candidate_mask=dev.candidate_mask,
        candidate_offset=jnp.asarray(candidate_offset, jnp.float32),
        neuron_features=jnp.asarray(per_neuron),
        members=dev.members,
        member_mask=dev.member_mask,
        neighbours=None if neighbours is None else assign.neighbours(
            *neighbours, tables.candidates, tables.candidate_mask),
    )
    empty = np.zeros((0,), np.int32)
    n_loc = tables.members.shape[0]
    return ModelInputs(
        tables=dev,
        assign=ai,
        member_features=jnp.asarray(member_features),
        syn_pre=jnp.asarray(empty if syn_pre is None else syn_pre, jnp.int32),
        syn_post=jnp.asarray(empty if syn_post is None else syn_post, jnp.int32),
        location_group=jnp.asarray(np.zeros(n_loc) if location_group is None else location_group, jnp.int32),
        behaviour_group=jnp.asarray(empty if behaviour_group is None else behaviour_group, jnp.int32),
        stim_channels=None if stimulus_tables is None else jnp.asarray(stimulus_tables.channels, jnp.int32),
        stim_mask=None if stimulus_tables is None else jnp.asarray(stimulus_tables.mask),
    )


class Readout(NamedTuple):
    """Behaviour readout f*: pair weights ``ρ [L,B]`` (σ(ρ) ∈ [0,1]), per-filter maps ``[B,M,Kc]`` and
    biases; the continuous (``w_beh``, ``b_beh``) and mode (``w_mode``, ``b_mode``) heads are None when
    there is nothing to predict."""

    pair_logit: jax.Array
    w_beh: jax.Array
    b_beh: jax.Array
    w_mode: jax.Array
    b_mode: jax.Array


class Fallback(NamedTuple):
    """Per-neuron linear self-prediction ``x̂_i = Σ_h weight[i,h] x[h,i] + bias[i]`` for neurons without
    a candidate pair (weights ``[N, H]``, oldest frame first; biases ``[N]``)."""

    weight: jax.Array
    bias: jax.Array


class Params(NamedTuple):
    """All trainable parameters, grouped for the optimiser."""

    basis: basis.Params
    arch: basis.Arch
    interface: interface.InterfaceParams
    assign: assign.AssignParams
    synapses: synapses.SynapseParams | None
    readout: Readout
    fallback: Fallback


class Temperatures(NamedTuple):
    """Switch temperatures: filter architecture, domain assignment, interface ports."""

    arch: jax.Array
    assign: jax.Array
    ports: jax.Array


class Step(NamedTuple):
    """Everything one step produces (leaves carry a leading time axis after :func:`rollout`).

    Attributes:
      x_next: ``[N]`` predicted next state.
      pair_pred: ``[L, B, K]`` each pair's prediction of its sphere's members (for the local loss; after
        :func:`rollout`, of the first step only, without a time axis).
      behaviour: ``[Kc]`` predicted continuous behaviour at t+1.
      mode_logits: ``[n_modes]``.
    """

    x_next: jax.Array
    pair_pred: jax.Array
    behaviour: jax.Array
    mode_logits: jax.Array


def init(
    key: jax.Array,
    spec: ModelSpec,
    inputs: ModelInputs,
    *,
    syn_strength: np.ndarray | None = None,
    syn_sign: np.ndarray | None = None,
) -> Params:
    """Initial parameters (see each component's ``init``).

    The random draws run as one compiled program: eagerly, every draw of a new shape compiled its own,
    which took seconds even for the tiny phantom. The draws are the same either way (jax.random is
    deterministic under jit); the arithmetic on them agrees to float rounding (2.4e-7 on the tiny phantom).
    """
    n_real = int(np.asarray(inputs.tables.location_mask).sum())
    params = _init(key, spec, inputs.assign, n_real)
    if spec.use_synapses:  # built from the synapse list on the host
        params = params._replace(synapses=synapses.init(np.asarray(inputs.syn_pre), np.asarray(inputs.syn_post),
                                                        spec.n_neurons, syn_strength, syn_sign))
    return params


@functools.partial(jax.jit, static_argnums=(1, 3))
def _init(key: jax.Array, spec: ModelSpec, assign_inputs: assign.AssignInputs, n_real_locations: int) -> Params:
    k_basis, k_iface, k_assign, k_beh, k_mode = jax.random.split(key, 5)
    bank = basis.make_bank(spec.basis)
    basis_params, arch = bank.init(k_basis, spec.n_filters)
    b, m = spec.n_filters, spec.n_ports
    # Absent components are None (an empty pytree), never zero-size arrays, which checkpoints reject.
    readout = Readout(
        pair_logit=jnp.zeros((spec.n_locations, b), jnp.float32),
        w_beh=0.01 * jax.random.normal(k_beh, (b, m, spec.n_behaviour)) if spec.n_behaviour else None,
        b_beh=jnp.zeros((spec.n_behaviour,), jnp.float32) if spec.n_behaviour else None,
        w_mode=0.01 * jax.random.normal(k_mode, (b, m, spec.n_modes)) if spec.n_modes else None,
        b_mode=jnp.zeros((spec.n_modes,), jnp.float32) if spec.n_modes else None,
    )
    return Params(
        basis=basis_params,
        arch=arch,
        interface=interface.init(k_iface, spec.interface, spec.n_locations, spec.n_members),
        assign=assign.init(k_assign, spec.assign, assign_inputs, spec.n_locations, n_real_locations),
        synapses=None,
        readout=readout,
        # Persistence to start with: the fallback only learns where neurons have no candidate.
        fallback=Fallback(jnp.zeros((spec.n_neurons, spec.history), jnp.float32).at[:, -1].set(1.0),
                          jnp.zeros((spec.n_neurons,), jnp.float32)),
    )


def init_state(spec: ModelSpec) -> jax.Array:
    """Zero recurrent filter state ``[L, B, state_dim]``."""
    return jnp.zeros((spec.n_locations, spec.n_filters, spec.basis.state_dim), jnp.float32)


class Context(NamedTuple):
    """Per-batch quantities that do not change over time steps: assignment, port maps and their fold."""

    a: jax.Array  # [N, C, B]
    member_weight: jax.Array  # [L, K, B]: assignment of each sphere slot's neuron to (µ, b)
    port_maps: jax.Array  # [L, B, K, M]
    maps: interface.CircuitMaps  # the interfaces folded with the selection weights


def context(spec: ModelSpec, params: Params, inputs: ModelInputs, temps: Temperatures) -> Context:
    """Assignment ``a``, the per-slot selection weights, the interface port maps and their fold."""
    with jax.named_scope("assignment"):
        a = assign.assignment(spec.assign, params.assign, inputs.assign, temps.assign)
        weight = spatial.candidate_to_member(a, inputs.tables)  # [L, K, B], 0 on empty slots
    with jax.named_scope("interface_maps"):
        ports = interface.ports(spec.interface, params.interface, inputs.member_features, temps.ports)
        maps = interface.circuit_maps(params.interface.pairs, ports, weight)
    return Context(a, weight, ports, maps)


class _Advance(NamedTuple):
    """What one step computes before the pair predictions (which only the first step needs)."""

    x_next: jax.Array  # [N]
    v: jax.Array  # [L, B, M] filter outputs
    behaviour: jax.Array
    mode_logits: jax.Array


def _filter_bank(spec: ModelSpec, params: Params, u: jax.Array, state: jax.Array,
                 temps: Temperatures) -> tuple[jax.Array, jax.Array]:
    """Every computed (location, filter) pair's output ``v [L, B, M]`` and next state from its input ``u [L, B, n_in]``."""
    bank = basis.make_bank(spec.basis)
    if spec.fixed_arch is None and spec.pair_locations is None:
        def pair(basis_p, arch_p, u_p, r):
            return bank.apply(basis_p, arch_p, u_p, r, temperature=temps.arch)

        return jax.vmap(jax.vmap(pair), in_axes=(None, None, 0, 0))(params.basis, params.arch, u, state)
    # Each filter its own program over its own locations: with a fixed architecture only its selected
    # types, units and edges; with pair_locations only where it carries assignment weight.
    vs, states = [], []
    for b in range(spec.n_filters):
        at = (slice(None) if spec.pair_locations is None
              else basis.static_index(np.asarray(spec.pair_locations[b], np.int32)))
        if not isinstance(at, slice) and at.size == 0:  # a filter nobody uses
            vs.append(jnp.zeros((u.shape[0], spec.n_ports), u.dtype))
            states.append(state[:, b])
            continue
        p_b = jax.tree.map(lambda x, b=b: x[b], params.basis)
        if spec.fixed_arch is None:
            a_b = jax.tree.map(lambda x, b=b: x[b], params.arch)
            v_b, s_b = jax.vmap(functools.partial(bank.apply, temperature=temps.arch),
                                in_axes=(None, None, 0, 0))(p_b, a_b, u[at, b], state[at, b])
        else:
            v_b, s_b = jax.vmap(functools.partial(basis.apply_fixed, spec.basis, spec.fixed_arch[b]),
                                in_axes=(None, 0, 0))(p_b, u[at, b], state[at, b])
        if not (isinstance(at, slice) and at.indices(u.shape[0]) == (0, u.shape[0], 1)):
            # Scattered into the full layout: pairs left out output 0 and keep their state.
            v_b = jnp.zeros((u.shape[0], spec.n_ports), u.dtype).at[at].set(v_b)
            s_b = state[:, b].at[at].set(s_b)
        vs.append(v_b)
        states.append(s_b)
    return jnp.stack(vs, axis=1), jnp.stack(states, axis=1)


def _advance(
    spec: ModelSpec,
    params: Params,
    inputs: ModelInputs,
    ctx: Context,
    x_hist: jax.Array,
    stimulus: jax.Array,
    state: jax.Array,
    temps: Temperatures,
) -> tuple[_Advance, jax.Array]:
    """One step without the ``[L, B, K]`` pair predictions (see :func:`step`)."""
    tables = inputs.tables
    level = None
    if spec.window_norm:
        level = jnp.mean(x_hist[-spec.history:], axis=0)  # [N]
        x_hist = x_hist - level
    channels = x_hist
    if spec.use_synapses:
        with jax.named_scope("synapses"):
            d = synapses.drive(params.synapses, inputs.syn_pre, inputs.syn_post, x_hist[-1], spec.n_neurons)
            channels = jnp.concatenate([x_hist, d[None]], axis=0)
    with jax.named_scope("interface_in"):
        xm = jnp.moveaxis(spatial.gather_members(channels.T, tables), 2, 1)  # [L, H', K]
        x_last = xm[:, spec.history - 1]  # [L, K]
        u = interface.encode_circuit(ctx.maps, xm)  # [L, B, H', M]
        u = u.reshape(*u.shape[:2], -1)
        if spec.n_local_stimulus:  # retinotopic: each location reads the channels of its own field
            local = jnp.where(inputs.stim_mask, stimulus[inputs.stim_channels], 0.0)  # [L, Sl]
            stim_in = jnp.broadcast_to(local[:, None, :], (*u.shape[:2], local.shape[-1]))
        else:
            stim_in = jnp.broadcast_to(stimulus, (*u.shape[:2], stimulus.shape[0]))
        u = jnp.concatenate([u, stim_in], axis=-1)
    with jax.named_scope("filter_bank"):
        v, new_state = _filter_bank(spec, params, u, state, temps)

    # Mix: x̂[i] = Σ_(c,b) a[i,c,b] y[cand(i,c), b, slot(i,c)] = Σ_c z[cand, slot] with z = Σ_b w·y in
    # the location layout (a pure gather back to neurons); neurons without candidates use the fallback.
    with jax.named_scope("decode_mix"):
        z = interface.decode_mix(ctx.maps, v, x_last)  # [L, K]
        mixed = spatial.scatter_to_neurons(z, tables.candidate_mask.astype(z.dtype), tables)
        fb = params.fallback
        own = jnp.sum(fb.weight.T * x_hist[-spec.history:], axis=0) + fb.bias
        x_next = jnp.where(tables.candidate_mask.any(-1), mixed, own)
        if level is not None:
            x_next = x_next + level

    with jax.named_scope("readout"):
        ro = params.readout
        real = tables.location_mask.astype(v.dtype)
        gate = jax.nn.sigmoid(ro.pair_logit)[..., None] * real[:, None, None]  # [L, B, 1]; padding excluded
        detach = spec.behaviour_stop_gradient or spec.behaviour_readout == "state"
        v_ro = jax.lax.stop_gradient(v) if detach else v
        group_sum = jax.ops.segment_sum(gate * v_ro, inputs.location_group, num_segments=spec.n_groups)
        group_size = jax.ops.segment_sum(real, inputs.location_group, num_segments=spec.n_groups)
        pooled = group_sum / jnp.maximum(group_size, 1.0)[:, None, None]  # [G, B, M]
        # One circuit: every target reads group 0 (behaviour_group may be left empty).
        target_group = inputs.behaviour_group if spec.n_groups > 1 else jnp.zeros((spec.n_behaviour,), jnp.int32)
        behaviour = (
            jnp.einsum("kbm,bmk->k", pooled[target_group], ro.w_beh) + ro.b_beh
            if spec.n_behaviour else jnp.zeros((0,))
        )
        mode_logits = (jnp.einsum("bm,bmk->k", pooled[0], ro.w_mode) + ro.b_mode) if spec.n_modes else jnp.zeros((0,))
    return _Advance(x_next, v, behaviour, mode_logits), new_state


def _pair_predictions(params: Params, inputs: ModelInputs, ctx: Context, x_last: jax.Array,
                      v: jax.Array) -> jax.Array:
    """Each pair's prediction of its sphere's members ``[L, B, K]`` from ``x_last [N]`` and ``v [L, B, M]``."""
    members_last = spatial.gather_members(x_last, inputs.tables)  # [L, K]
    return interface.decode_pairs(params.interface.pairs, ctx.port_maps, v, members_last)


def step(
    spec: ModelSpec,
    params: Params,
    inputs: ModelInputs,
    ctx: Context,
    x_hist: jax.Array,
    stimulus: jax.Array,
    state: jax.Array,
    temps: Temperatures,
) -> tuple[Step, jax.Array]:
    """One model step for the whole circuit.

    Args:
      x_hist: ``[H, N]`` recent states, oldest first (no NaN: fill missing values before).
      stimulus: ``[S]`` stimulus of the predicted frame t+1.
      state: ``[L, B, state_dim]`` recurrent filter states.

    Returns:
      ``(Step, new_state)``.
    """
    adv, new_state = _advance(spec, params, inputs, ctx, x_hist, stimulus, state, temps)
    pair_pred = _pair_predictions(params, inputs, ctx, x_hist[-1], adv.v)
    return Step(adv.x_next, pair_pred, adv.behaviour, adv.mode_logits), new_state


def rollout(
    spec: ModelSpec,
    params: Params,
    inputs: ModelInputs,
    ctx: Context,
    x: jax.Array,
    stimulus: jax.Array,
    temps: Temperatures,
    *,
    n_teacher: int,
    state: jax.Array | None = None,
) -> tuple[Step, jax.Array]:
    """Run the model over a window with ``lax.scan``.

    Args:
      x: ``[H + R, N]`` observed window (NaN-free); the first H frames seed the history, frames
        ``H..H+R-1`` are the targets (and are fed back during the first `n_teacher` steps).
      stimulus: ``[H + R, S]``; step r reads ``stimulus[H + r]``, the stimulus of the frame it predicts.
      n_teacher: number of teacher-forced steps (0: free-running from the start).
      state: initial recurrent state (default zeros).

    Returns:
      ``(Step with a leading [R] axis, final state)``; ``x_next[r]`` predicts ``x[H + r]``;
      ``pair_pred`` is the first step's only (``[L, B, K]``): a full ``[R, L, B, K]`` stack would cost
      memory for nothing.
    """
    h = spec.history
    n_steps = x.shape[0] - h
    state = init_state(spec) if state is None else state

    def body(carry, r):
        hist, st, first_v = carry
        out, st = _advance(spec, params, inputs, ctx, hist, stimulus[h + r], st, temps)
        fed = jnp.where(r < n_teacher, x[h + r], out.x_next)
        first_v = jnp.where(r == 0, out.v, first_v)
        return (jnp.concatenate([hist[1:], fed[None]], axis=0), st, first_v), out._replace(v=None)

    first_v = jnp.zeros((spec.n_locations, spec.n_filters, spec.n_ports), x.dtype)
    (_, state, first_v), outs = jax.lax.scan(jax.checkpoint(body), (x[:h], state, first_v), jnp.arange(n_steps))
    # Only the first step's pair predictions are kept: a full [R, L, B, K] stack would cost memory for nothing.
    pair_pred = _pair_predictions(params, inputs, ctx, x[h - 1], first_v)
    return Step(outs.x_next, pair_pred, outs.behaviour, outs.mode_logits), state


def simulate(
    spec: ModelSpec,
    params: Params,
    inputs: ModelInputs,
    ctx: Context,
    seed_frames: jax.Array,
    stimulus: jax.Array,
    temps: Temperatures,
    key: jax.Array,
    noise: float | jax.Array = 0.0,
) -> jax.Array:
    """Run the model free as a generator of activity: ``x[t+1] = f(x[t-H+1..t], s[t+1]) + noise · ε[t]``.

    The recurrent simulator on its own (no recording to follow): each step's prediction, plus Gaussian
    innovations ``ε ~ N(0, I)``, is fed back as the next frame. With ``noise = 0`` it is
    :func:`rollout` with ``n_teacher = 0``.

    Args:
      seed_frames: ``[H, N]`` the first history (e.g. zeros or recorded frames).
      stimulus: ``[H + T, S]``; step r reads ``stimulus[H + r]``.
      key: PRNG key of the innovations.
      noise: their standard deviation (in the model's normalised units).

    Returns:
      ``[T, N]`` simulated frames after the seed.

    Example::

        ctx = model.context(spec, params, inputs, temps)
        x = model.simulate(spec, params, inputs, ctx, jnp.zeros((spec.history, spec.n_neurons)), stim, temps,
                           jax.random.key(0), noise=0.3)
    """
    h = spec.history
    n_steps = stimulus.shape[0] - h
    eps = noise * jax.random.normal(key, (n_steps, spec.n_neurons), seed_frames.dtype)

    def body(carry, r):
        hist, st = carry
        out, st = _advance(spec, params, inputs, ctx, hist, stimulus[h + r], st, temps)
        x = out.x_next + eps[r]
        return (jnp.concatenate([hist[1:], x[None]], axis=0), st), x

    _, xs = jax.lax.scan(body, (seed_frames, init_state(spec)), jnp.arange(n_steps))
    return xs


def filter_outputs(
    spec: ModelSpec,
    params: Params,
    inputs: ModelInputs,
    ctx: Context,
    x: jax.Array,
    stimulus: jax.Array,
    temps: Temperatures,
    pairs: jax.Array | None = None,
) -> jax.Array:
    """Every pair's filter output ``v`` at every step of a teacher-forced pass over a window.

    The internal responses of the model (for representational similarity, :mod:`mesojax.analysis`):
    step r reads the observed ``x[r : r + H]`` and the stimulus of frame ``H + r``, as :func:`rollout`
    with ``n_teacher = R``.

    Args:
      x: ``[H + R, N]`` observed frames (NaN-free).
      stimulus: ``[H + R, S]``.
      pairs: ``[P, 2]`` (location, filter) pairs to keep (None: all), so that only ``[R, P, M]`` is held.

    Returns:
      ``[R, L, B, M]`` filter outputs, or ``[R, P, M]`` for the given pairs.
    """
    h = spec.history

    def body(carry, r):
        hist, st = carry
        out, st = _advance(spec, params, inputs, ctx, hist, stimulus[h + r], st, temps)
        v = out.v if pairs is None else out.v[pairs[:, 0], pairs[:, 1]]
        return (jnp.concatenate([hist[1:], x[h + r][None]], axis=0), st), v

    _, vs = jax.lax.scan(body, (x[:h], init_state(spec)), jnp.arange(x.shape[0] - h))
    return vs
