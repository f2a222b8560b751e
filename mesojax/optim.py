"""Optimisation: optax parameter groups with their own rates, clipping, schedules, and alternation.

Parameters are grouped by the fields of :class:`mesojax.model.Params` (:data:`GROUPS`). Each group is
clipped (global norm within the group) and runs Adam with its own peak rate
(``learning_rate × lr_scale[group]``) on a shared warm-up + cosine schedule, which restarts for the
hard phase (after ``arch_steps``) when ``hard_peak > 0``. With
``mode="alternating"`` (Supplement A) the *basis* groups (filters, their architectures, synapses,
readout) and the *domain* groups (assignment, interfaces) take turns: each is updated for
``alternate_every`` steps while the other is frozen (no update, Adam moments kept). Groups named in
``freeze`` never update: a basis transferred to a new circuit keeps its filters (``freeze=("basis",
"arch")``) while interfaces and assignment are refit. The ``arch`` group stops at step
``arch_steps`` (when set): training then goes on with the discretised architecture fixed
(``train.hard_steps``), so the reported soft and hard models coincide.

Example:
    >>> import ml_collections, jax.numpy as jnp
    >>> cfg = ml_collections.ConfigDict(dict(learning_rate=1e-2, warmup_steps=0, total_steps=10,
    ...     clip_norm=1.0, mode="alternating", alternate_every=2, lr_scale={}))
    >>> [phase_of(cfg, s) for s in range(6)]
    ['basis', 'basis', 'domain', 'domain', 'basis', 'basis']
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mesojax import model

GROUPS = ("basis", "arch", "interface", "assign", "synapses", "readout", "fallback")
BASIS_PHASE = ("basis", "arch", "synapses", "readout")
DOMAIN_PHASE = ("interface", "assign", "fallback")
MODES = ("joint", "alternating")


def basis_turn(cfg: Any, step: Any) -> Any:
    """Whether the basis groups (rather than the domain groups) train at `step` in alternating mode."""
    return (step // cfg.alternate_every) % 2 == 0


def phase_of(cfg: Any, step: int) -> str:
    """Which groups train at `step` ("joint", or "basis"/"domain" when alternating)."""
    if cfg.mode == "joint":
        return "joint"
    return "basis" if basis_turn(cfg, step) else "domain"


def param_labels(params: Any) -> Any:
    """The group label of every leaf: the name of its top-level field in :class:`mesojax.model.Params`."""
    return params._replace(**{g: jax.tree.map(lambda _, g=g: g, getattr(params, g)) for g in GROUPS})


class GroupState(NamedTuple):
    """State of one parameter group: the global step count and the inner (clip + Adam) state."""

    count: jax.Array
    inner: Any


def _group(
    inner: optax.GradientTransformation, rate: Callable[[jax.Array], jax.Array],
    active: Callable[[jax.Array], jax.Array],
) -> optax.GradientTransformation:
    """``inner`` then ``× -rate(count)``, applied only when ``active(count)``.

    While inactive the group's updates are zero and its inner state (Adam moments) is kept as it was,
    so a frozen group is really frozen, not merely updated with a zero learning rate.
    """

    def init(params):
        return GroupState(jnp.zeros((), jnp.int32), inner.init(params))

    def update(updates, state, params=None):
        on = active(state.count)
        new, inner_state = inner.update(updates, state.inner, params)
        scale = jnp.where(on, -rate(state.count), 0.0)
        new = jax.tree.map(lambda u: scale * u, new)
        inner_state = jax.tree.map(lambda a, b: jnp.where(on, a, b), inner_state, state.inner)
        return new, GroupState(state.count + 1, inner_state)

    return optax.GradientTransformation(init, update)


def _warmup_cosine(peak: float, warmup: int, steps: int) -> optax.Schedule:
    """Linear warm-up to `peak` over `warmup` steps, then a cosine decay to 5 % of it by `steps`."""
    steps = max(steps, warmup + 1)
    if warmup > 0:
        return optax.warmup_cosine_decay_schedule(init_value=0.0, peak_value=peak, warmup_steps=warmup,
                                                  decay_steps=steps, end_value=0.05 * peak)
    return optax.cosine_decay_schedule(peak, steps, alpha=0.05)


def arch_trains(cfg: Any, step: int) -> bool:
    """Whether the architecture logits can still change at `step` (not frozen, before ``arch_steps``)."""
    arch_steps = cfg.get("arch_steps", None)
    return "arch" not in tuple(cfg.get("freeze", ()) or ()) and (arch_steps is None or step < arch_steps)


def make_optimizer(cfg: Any) -> optax.GradientTransformation:
    """Build the optimiser from the config's ``optim`` block.

    Each group: clip its gradient to ``clip_norm`` (global norm within the group, so a noisy group never
    shrinks another's step), Adam, then its rate ``learning_rate × lr_scale[group] × schedule(step)``.

    Args:
      cfg: fields ``learning_rate``, ``warmup_steps``, ``total_steps``, ``clip_norm``, ``mode``
        ("joint" / "alternating"), ``alternate_every``, ``lr_scale`` (group → multiplier), and
        optionally ``freeze`` (groups that never update), ``arch_steps`` (the ``arch`` group
        updates only for the first ``arch_steps`` steps; None: always) and ``hard_peak`` (> 0: the
        steps after ``arch_steps``, the hard phase, restart the schedule with a warm-up and a cosine of
        their own peaking at this fraction of the rate; 0: one schedule over all steps).

    Returns:
      An ``optax.GradientTransformation`` over :class:`mesojax.model.Params`.
    """
    if cfg.mode not in MODES:
        raise ValueError(f"optim config: field 'mode' must be one of {MODES}, got {cfg.mode!r}")
    frozen = tuple(cfg.get("freeze", ()) or ())
    for field, names in (("lr_scale", cfg.lr_scale), ("freeze", frozen)):
        unknown = set(names) - set(GROUPS)
        if unknown:
            raise ValueError(f"optim config: field '{field}' names unknown groups {sorted(unknown)}; have {GROUPS}")
    arch_steps = cfg.get("arch_steps", None)
    hard_peak = float(cfg.get("hard_peak", 0.0) or 0.0)
    total = int(cfg.total_steps)
    if hard_peak > 0 and arch_steps is not None and 0 < arch_steps < total:
        # The hard phase restarts the schedule: the search decays by its own end, and the discretised
        # filters get a warm-up and a cosine of their own instead of the search's last, tiny rates.
        hard_steps = total - int(arch_steps)
        schedule = optax.join_schedules(
            [_warmup_cosine(1.0, min(int(cfg.warmup_steps), int(arch_steps) // 2), int(arch_steps)),
             _warmup_cosine(hard_peak, min(int(cfg.warmup_steps), hard_steps // 10), hard_steps)],
            boundaries=[int(arch_steps)])
    else:
        schedule = _warmup_cosine(1.0, int(cfg.warmup_steps), total)

    def group(name: str) -> optax.GradientTransformation:
        peak = cfg.learning_rate * cfg.lr_scale.get(name, 1.0)
        if name in frozen:
            active = lambda count: jnp.bool_(False)  # noqa: E731
        elif cfg.mode == "joint":
            active = lambda count: jnp.bool_(True)  # noqa: E731
        else:
            in_basis = name in BASIS_PHASE
            active = lambda count: basis_turn(cfg, count) == in_basis  # noqa: E731
        if name == "arch" and arch_steps is not None:
            active = lambda count, on=active: on(count) & (count < arch_steps)  # noqa: E731
        inner = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), optax.scale_by_adam())
        return _group(inner, lambda count: peak * schedule(count), active)

    return optax.multi_transform({g: group(g) for g in GROUPS}, param_labels)


def temperatures(cfg: Any, step: jax.Array | int) -> model.Temperatures:
    """Exponential annealing ``τ(s) = τ_0 (τ_end/τ_0)^{min(s/S, 1)}`` of every switch temperature.

    Args:
      cfg: the config's ``anneal`` block: ``steps`` (S) and ``(τ_0, τ_end)`` pairs ``arch``, ``assign``,
        ``ports``.
      step: the training step.
    """
    frac = jnp.minimum(jnp.asarray(step, jnp.float32) / max(cfg.steps, 1), 1.0)
    anneal = lambda start, end: jnp.asarray(start * (end / start) ** frac, jnp.float32)  # noqa: E731
    return model.Temperatures(arch=anneal(*cfg.arch), assign=anneal(*cfg.assign), ports=anneal(*cfg.ports))
