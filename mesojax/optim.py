"""Optimisation: optax parameter groups with their own rates, clipping, schedules, and alternation.

Parameters are grouped by the fields of :class:`mesojax.model.Params` (:data:`GROUPS`). Each group runs
Adam with its own peak rate (``learning_rate × lr_scale[group]``) on a shared warm-up + cosine
schedule, after global-norm clipping. With ``mode="alternating"`` (Supplement A) the *basis* groups
(filters, their architectures, synapses, readout) and the *domain* groups (assignment, interfaces)
take turns: each is updated for ``alternate_every`` steps while the other is frozen.

Example:
    >>> import ml_collections, jax.numpy as jnp
    >>> cfg = ml_collections.ConfigDict(dict(learning_rate=1e-2, warmup_steps=0, total_steps=10,
    ...     clip_norm=1.0, mode="alternating", alternate_every=2, lr_scale={}))
    >>> [phase_of(cfg, s) for s in range(6)]
    ['basis', 'basis', 'domain', 'domain', 'basis', 'basis']
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from mesojax import model

GROUPS = ("basis", "arch", "interface", "assign", "synapses", "readout")
BASIS_PHASE = ("basis", "arch", "synapses", "readout")
DOMAIN_PHASE = ("interface", "assign")
MODES = ("joint", "alternating")


def phase_of(cfg: Any, step: int) -> str:
    """Which groups train at `step` ("joint", or "basis"/"domain" when alternating)."""
    if cfg.mode == "joint":
        return "joint"
    return "basis" if (step // cfg.alternate_every) % 2 == 0 else "domain"


def param_labels(params: Any) -> Any:
    """The group label of every leaf: the name of its top-level field in :class:`mesojax.model.Params`."""
    return type(params)(*[jax.tree.map(lambda _, g=g: g, getattr(params, g)) for g in GROUPS])


def make_optimizer(cfg: Any) -> optax.GradientTransformation:
    """Build the optimiser from the config's ``optim`` block.

    Args:
      cfg: fields ``learning_rate``, ``warmup_steps``, ``total_steps``, ``clip_norm``, ``mode``
        ("joint" / "alternating"), ``alternate_every``, ``lr_scale`` (group → multiplier).

    Returns:
      An ``optax.GradientTransformation`` over :class:`mesojax.model.Params`.
    """
    if cfg.mode not in MODES:
        raise ValueError(f"optim config: field 'mode' must be one of {MODES}, got {cfg.mode!r}")
    unknown = set(cfg.lr_scale) - set(GROUPS)
    if unknown:
        raise ValueError(f"optim config: field 'lr_scale' names unknown groups {sorted(unknown)}; have {GROUPS}")
    decay_steps = max(int(cfg.total_steps), int(cfg.warmup_steps) + 1)
    if cfg.warmup_steps > 0:
        schedule = optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=1.0, warmup_steps=int(cfg.warmup_steps), decay_steps=decay_steps,
            end_value=0.05,
        )
    else:
        schedule = optax.cosine_decay_schedule(1.0, decay_steps, alpha=0.05)

    def group(name: str) -> optax.GradientTransformation:
        peak = cfg.learning_rate * cfg.lr_scale.get(name, 1.0)
        in_basis = name in BASIS_PHASE

        def rate(count):
            if cfg.mode == "alternating":
                basis_turn = (count // cfg.alternate_every) % 2 == 0
                active = jnp.where(basis_turn == in_basis, 1.0, 0.0)
            else:
                active = 1.0
            return -peak * schedule(count) * active

        return optax.chain(optax.scale_by_adam(), optax.scale_by_schedule(rate))

    return optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        optax.multi_transform({g: group(g) for g in GROUPS}, param_labels),
    )


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
