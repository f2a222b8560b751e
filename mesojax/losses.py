r"""The training objective: every term of DESIGN.md, each weighted by its own λ and logged separately.

.. math::

    \mathcal L = λ_R\,\text{prediction} + λ_{loc}\,\text{local} + λ_{beh}\,\text{behaviour}
      + λ_C\,\text{complexity} + λ_B\,\text{basis sparsity} + λ_D\,\text{exclusivity}
      + λ_I\,\text{interface} + λ_{cut}\,\text{cut}

* **prediction** — masked MSE of the rollout ``x̂[H+r]`` against ``x[H+r]`` over all R steps (the first
  ``n_teacher + 1`` are one-step predictions from observed frames, the rest multi-step);
* **local** — each (µ,b) pair's own prediction of its members at the first step, weighted by their
  assignment to it: ``Σ a[i,µ,b] (y[µ,b,i] - x_i)² / Σ a`` (trains filters on their domains);
* **behaviour** — masked MSE on continuous behaviour + cross-entropy on discrete modes;
* **complexity** — ``Σ_b u_b · C(arch_b)``, the expected architecture cost of each filter
  (:func:`mesojax.basis.complexity`) weighted by its usage ``u_b = (1/N) Σ_{i,c} a[i,c,b]``;
* **basis sparsity** — ``Σ_b \sqrt{u_b + ε}``: concave in usage, minimised by few filters in use;
* **exclusivity** — mean assignment entropy ``(1/N) Σ_i H(a_i)``: one pair per neuron;
* **interface** — :func:`mesojax.interface.regularizer`;
* **cut** — the expected fraction of a neuron's synaptic partners that sit in another domain,
  ``1 - mean_i Σ_{c,b} a[i,c,b] m[i,c,b]`` with ``m`` the degree-normalised partner agreement of
  :func:`mesojax.assign.coherence_message` (neurons with partners only; 0 without a connectome). Domains
  are meant to be densely wired modules: without it, splitting a module between overlapping spheres
  buys each part its own interface and filter state, which the prediction loss alone rewards.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mesojax import assign, basis, interface, model, spatial
from mesojax.data.windows import Batch

TERMS = ("prediction", "local", "behaviour", "complexity", "sparsity", "exclusivity", "interface", "cut")


class Weights(NamedTuple):
    """One λ per objective term (see the module docstring); from the config's ``loss`` block."""

    prediction: float = 1.0
    local: float = 0.5
    behaviour: float = 0.1
    complexity: float = 1e-4
    sparsity: float = 1e-2
    exclusivity: float = 1e-2
    interface: float = 1e-3
    cut: float = 0.0


def masked_mse(pred: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    """``Σ mask (pred - target)² / max(Σ mask, 1)``."""
    return jnp.sum(mask * jnp.square(pred - target)) / jnp.maximum(jnp.sum(mask), 1.0)


def usage(a: jax.Array) -> jax.Array:
    """Fraction of neurons claimed by each filter ``u_b = (1/N) Σ_{i,c} a[i,c,b]`` ``[B]``."""
    n_valid = jnp.maximum(jnp.sum(a), 1.0)
    return jnp.sum(a, axis=(0, 1)) / n_valid


def rollout_batch(spec: model.ModelSpec, params: model.Params, inputs: model.ModelInputs, ctx: model.Context,
                  temps: model.Temperatures, batch: Batch, n_teacher: int) -> model.Step:
    """The training rollout (:func:`mesojax.model.rollout`, teacher-forced for `n_teacher` steps) of every
    window of `batch` (``x [W, H + R, N]``); returns its steps with leaves ``[W, R, ...]``."""

    def run(x, s):
        return model.rollout(spec, params, inputs, ctx, x, s, temps, n_teacher=n_teacher)[0]

    return jax.vmap(run)(batch.x, batch.stimulus)


def loss_fn(
    params: model.Params,
    batch: Batch,
    spec: model.ModelSpec,
    inputs: model.ModelInputs,
    weights: Weights,
    temps: model.Temperatures,
    n_teacher: int,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Total loss and a dict of every (unweighted) term plus diagnostics.

    Returns:
      ``(loss, metrics)``; metrics hold each term of :data:`TERMS`, ``loss``, ``filters_used`` (filters
      with usage > 1 %) and ``assign_entropy``.
    """
    ctx = model.context(spec, params, inputs, temps)
    h = spec.history
    out = rollout_batch(spec, params, inputs, ctx, temps, batch, n_teacher)  # leaves [W, R, ...]
    target, mask = batch.x[:, h:], batch.x_mask[:, h:]
    prediction = masked_mse(out.x_next, target, mask)

    # Local loss on the first step: pair predictions vs the true next value of each sphere slot.
    slot_target = jax.vmap(lambda v: spatial.gather_members(v, inputs.tables))(target[:, 0])  # [W, L, K]
    slot_mask = jax.vmap(lambda v: spatial.gather_members(v, inputs.tables))(mask[:, 0])
    w = jnp.moveaxis(ctx.member_weight, 2, 1)[None] * slot_mask[:, :, None]  # [W, L, B, K]
    err = jnp.square(out.pair_pred - slot_target[:, :, None])
    local = jnp.sum(w * err) / jnp.maximum(jnp.sum(w), 1.0)

    behaviour = jnp.zeros(())
    if spec.n_behaviour:
        behaviour = masked_mse(out.behaviour, batch.behaviour[:, h:], batch.behaviour_mask[:, h:])
    if spec.n_modes:
        modes = batch.modes[:, h:]
        logp = jax.nn.log_softmax(out.mode_logits, axis=-1)
        picked = jnp.take_along_axis(logp, jnp.maximum(modes, 0)[..., None], axis=-1)[..., 0]
        known = modes >= 0
        behaviour = behaviour - jnp.sum(jnp.where(known, picked, 0.0)) / jnp.maximum(jnp.sum(known), 1)

    cut = jnp.zeros(())
    nb = inputs.assign.neighbours
    if nb is not None:
        linked = jax.ops.segment_sum(jnp.ones_like(nb.weight), nb.src, num_segments=spec.n_neurons) > 0
        agree = jnp.sum(ctx.a * assign.coherence_message(ctx.a, nb), axis=(1, 2))
        cut = 1.0 - jnp.sum(jnp.where(linked, agree, 0.0)) / jnp.maximum(jnp.sum(linked), 1)

    u = usage(ctx.a)
    costs = jax.vmap(lambda arch: basis.complexity(spec.basis, arch, temperature=temps.arch))(params.arch)
    terms = {
        "prediction": prediction,
        "local": local,
        "behaviour": behaviour,
        "complexity": jnp.sum(u * costs),
        "sparsity": jnp.sum(jnp.sqrt(u + 1e-4)),
        "exclusivity": jnp.sum(assign.entropy(ctx.a))
        / jnp.maximum(jnp.sum(inputs.tables.candidate_mask.any(-1)), 1),
        "interface": interface.regularizer(params.interface),
        "cut": cut,
    }
    loss = sum(getattr(weights, name) * terms[name] for name in TERMS)
    metrics = dict(terms, loss=loss, filters_used=jnp.sum(u > 0.01), assign_entropy=terms["exclusivity"])
    return loss, metrics
