r"""Filter splits and merges during training: how many filters a run uses is not fixed at initialisation.

Activity-seeded claims (:func:`mesojax.assign.seed_claims`) decide at step 0 how many filters a run
uses, and training alone rarely changes it (BENCHMARKS.md, the phantom sweep: 20 of 22 runs ended with
the seeded number; never a split). Here two moves change it, both built from exact
re-parametrisations of the current model:

* **swap** ``(S, b1, b2)``: at the locations ``S`` filters ``b1`` and ``b2`` trade places. Every
  per-pair parameter (interface gains and offsets, dense port maps, claims ``φ``, gates ``ω``, behaviour
  gates ``ρ``) and each neuron's free logit ``θ`` of a candidate in ``S`` exchange columns; ``θ`` also
  takes the assignment network's per-filter difference, so every neuron's logits are the same numbers
  under the new labels::

      θ'[i,c,b1] = θ[i,c,b2] + g[i,c,b2] - g[i,c,b1]        (and symmetrically for b2), cand(i,c) ∈ S

* **copy** ``(b → b')``: filter ``b``'s shared parameters (basis weights, architecture, port head,
  behaviour weights) overwrite those of ``b'``.

A **merge** ``b2 → b1`` is the swap at ``b2``'s locations: they now run filter ``b1``, nothing else
changes. It is judged on the neurons it moves: their validation error under ``b1`` over their error
under ``b2``. The cheapest merge is kept while that cost is below ``tolerance`` (e.g. 4 %), so two filters
that learnt the same dynamics (or one that was never needed) become one. A **split** ``b → (b, b')`` is
``copy(b → b')`` then the swap at the half of ``b``'s locations that 2-means sets apart on their
activity fingerprint (:func:`mesojax.assign.activity_fingerprint`, on the current partition): the model
is unchanged, except for the few neurons a free filter (one no location holds as its majority) may
still hold, and training lets the two copies differ where their halves differ. A split that brings
nothing leaves the copies alike, and the next merge test joins them again. Adam's moments follow every
move, so the optimiser's state stays consistent with the parameters it steps.

Filters that have not specialised yet merge at almost no cost, whatever their future roles: merges are
only meaningful after many training steps (BENCHMARKS.md, "Filter splits and merges").

Example:
    >>> # in the trainer (mesojax.train), at the steps of config.restructure.split_steps / merge_steps:
    >>> # state, record = restructure.event(state, spec, inputs, partition=..., errors=..., traces=...,
    >>> #     tolerance=0.04, min_locations=4, do_merge=True, do_split=False, rng=rng)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mesojax import assign, losses, model

# ------------------------------------------------------------------------------------ parameter roles


def _role(path: str, port_head: str) -> str:
    """How a parameter leaf depends on the filter index (its key path under :class:`model.Params`)."""
    if path.startswith((".basis.", ".arch.", ".readout.w_beh", ".readout.w_mode")):
        return "filter"  # [B, ...]
    if path.startswith((".interface.pairs.", ".interface.dense", ".assign.claim", ".assign.gate",
                        ".readout.pair_logit")):
        return "pair"  # [L, B, ...]
    if path == ".assign.free":
        return "free"  # [N, C, B]
    if path.startswith(".interface.port_net") and f"'{port_head}'" in path:
        return "ports"  # [..., B*M]: one block of M port logits per filter
    return "shared"


def _map_params(fn: Callable[[str, jax.Array], jax.Array], tree: Any) -> Any:
    """Apply ``fn(path, leaf)`` to every array leaf of every :class:`model.Params` in `tree` (the parameters
    themselves, or an optimiser state holding Params-shaped moments with masked leaves)."""
    def one(params: model.Params) -> model.Params:
        leaves, treedef = jax.tree_util.tree_flatten_with_path(
            params, is_leaf=lambda x: isinstance(x, optax.MaskedNode))
        out = [leaf if isinstance(leaf, optax.MaskedNode) else fn(jax.tree_util.keystr(path), leaf)
               for path, leaf in leaves]
        return jax.tree_util.tree_unflatten(treedef, out)

    return jax.tree_util.tree_map(lambda x: one(x) if isinstance(x, model.Params) else x, tree,
                                  is_leaf=lambda x: isinstance(x, model.Params))


def swap(spec: model.ModelSpec, tree: Any, locations: np.ndarray, b1: int, b2: int,
         candidates: np.ndarray, correction: jax.Array | None = None) -> Any:
    """Filters `b1` and `b2` trade places at `locations` (in every Params of `tree`).

    Args:
      spec: the model spec.
      tree: :class:`model.Params`, or an optimiser state holding Params-shaped moments.
      locations: ``[L]`` bool, the locations S.
      b1, b2: filter indices.
      candidates: ``[N, C]`` int candidate locations of every neuron (``AssignInputs.candidates``).
      correction: ``[N, C]`` ``g[...,b2] - g[...,b1]`` of the assignment network, added to the free logits
        so the assignment is unchanged (None: moments, which are swapped as they are).
    """
    cand_in_s = np.asarray(locations)[np.asarray(candidates)]  # [N, C]
    return _swap(spec, tree, jnp.asarray(locations), jnp.asarray(cand_in_s), b1, b2, correction)


@functools.partial(jax.jit, static_argnums=0)
def _swap(spec: model.ModelSpec, tree: Any, in_s: jax.Array, cand_in_s: jax.Array, b1: jax.Array, b2: jax.Array,
          correction: jax.Array | None) -> Any:
    """:func:`swap` compiled once per tree structure (the filter indices are traced, not static)."""
    port_head = f"Dense_{len(spec.interface.hidden)}"

    def exchange(x: jax.Array, where: jax.Array, axis: int, d1=0.0, d2=0.0) -> jax.Array:
        x1, x2 = jnp.take(x, b1, axis=axis), jnp.take(x, b2, axis=axis)
        w = where.reshape(where.shape + (1,) * (x1.ndim - where.ndim))
        new1, new2 = jnp.where(w, x2 + d1, x1), jnp.where(w, x1 + d2, x2)
        idx = (slice(None),) * axis
        return x.at[idx + (b1,)].set(new1).at[idx + (b2,)].set(new2)

    def fn(path: str, x: jax.Array) -> jax.Array:
        role = _role(path, port_head)
        if role == "pair":
            return exchange(x, in_s, 1)
        if role == "free":
            if correction is None:
                return exchange(x, cand_in_s, 2)
            return exchange(x, cand_in_s, 2, correction, -correction)
        return x

    return _map_params(fn, tree)


def copy_filter(spec: model.ModelSpec, tree: Any, src: int, dst: int) -> Any:
    """Filter `src`'s shared parameters (basis, architecture, port head, behaviour weights) into `dst`."""
    port_head = f"Dense_{len(spec.interface.hidden)}"
    m = spec.n_ports

    def fn(path: str, x: jax.Array) -> jax.Array:
        role = _role(path, port_head)
        if role == "filter":
            return x.at[dst].set(x[src])
        if role == "ports":
            return x.at[..., dst * m:(dst + 1) * m].set(x[..., src * m:(src + 1) * m])
        return x

    return _map_params(fn, tree)


@functools.partial(jax.jit, static_argnums=0)
def network_difference(spec: model.ModelSpec, params: model.Params, inputs: model.ModelInputs,
                       b1: int | jax.Array, b2: int | jax.Array) -> jax.Array:
    """``[N, C]`` ``g[...,b2] - g[...,b1]``, the assignment network's per-filter difference (:func:`swap`)."""
    g = assign.network_logits(spec.assign, params.assign, inputs.assign)
    return jnp.take(g, b2, axis=-1) - jnp.take(g, b1, axis=-1)


# ------------------------------------------------------------------------------------- the two moves


def location_filters(part: dict[str, np.ndarray], n_locations: int, n_filters: int) -> np.ndarray:
    """``[L]`` the filter most of each location's neurons are assigned to (-1: a location nobody holds).

    Args:
      part: the hard partition (``location``, ``filter`` ``[N]``, :func:`mesojax.evaluate.partition`).
    """
    loc, filt = part["location"], part["filter"]
    keep = loc >= 0
    counts = np.zeros((n_locations, n_filters), np.int64)
    np.add.at(counts, (loc[keep], filt[keep]), 1)
    return np.where(counts.sum(1) > 0, counts.argmax(1), -1)


def merge(spec: model.ModelSpec, state: Any, inputs: model.ModelInputs, loc_filter: np.ndarray,
          src: int, dst: int, moments: bool = True) -> Any:
    """A train state whose locations of filter `src` run filter `dst` (params and, with `moments`, Adam's
    moments swapped; without, the optimiser state is left as it is: for a trial that is only scored)."""
    where = loc_filter == src
    corr = network_difference(spec, state.params, inputs, dst, src)
    cand = np.asarray(inputs.assign.candidates)
    opt_state = swap(spec, state.opt_state, where, dst, src, cand) if moments else state.opt_state
    return state._replace(params=swap(spec, state.params, where, dst, src, cand, corr), opt_state=opt_state)


def split(spec: model.ModelSpec, state: Any, inputs: model.ModelInputs, half: np.ndarray,
          src: int, dst: int) -> Any:
    """A train state where the locations `half` (``[L]`` bool) run `dst`, a copy of filter `src`: the same model."""
    params = copy_filter(spec, state.params, src, dst)
    opt_state = copy_filter(spec, state.opt_state, src, dst)
    corr = network_difference(spec, params, inputs, src, dst)
    cand = np.asarray(inputs.assign.candidates)
    return state._replace(params=swap(spec, params, half, src, dst, cand, corr),
                          opt_state=swap(spec, opt_state, half, src, dst, cand))


def halves(fingerprint: np.ndarray, held: np.ndarray, loc_filter: np.ndarray, n_filters: int,
           min_locations: int, rng: np.random.Generator,
           min_silhouette: float = assign.MIN_SILHOUETTE) -> list[tuple[float, int, np.ndarray]]:
    """Split proposals: for every filter with at least ``2·min_locations`` held locations, 2-means of their
    activity fingerprints (z-scored over all held locations). Returns ``(silhouette, filter, half [L]
    bool)`` for the proposals whose smaller side has `min_locations` or more and whose silhouette reaches
    `min_silhouette` (below it a split is not structure, as for the initial clusters), clearest first."""
    use = held & (loc_filter >= 0)
    z = np.zeros(np.shape(fingerprint), np.float64)
    if use.any():
        z[use] = assign.standardise(np.asarray(fingerprint)[use])
    out = []
    for b in range(n_filters):
        mu = np.flatnonzero(use & (loc_filter == b))
        if len(mu) < 2 * min_locations:
            continue
        labels, _ = assign.kmeans(z[mu], 2, rng)
        smaller = int(np.argmin(np.bincount(labels, minlength=2)))
        if np.sum(labels == smaller) < min_locations:
            continue
        score = assign.silhouette(z[mu], labels)
        if score < min_silhouette:
            continue
        half = np.zeros(len(loc_filter), bool)
        half[mu[labels == smaller]] = True
        out.append((score, b, half))
    return sorted(out, key=lambda t: -t[0])


def validation_errors(spec: model.ModelSpec, inputs: model.ModelInputs, batch: Any,
                      n_teacher: int) -> Callable[[model.Params, model.Temperatures], tuple[np.ndarray, np.ndarray]]:
    """``(params, temps) -> (sse [N], count [N])``: each neuron's summed squared multi-step prediction error (the
    training objective's rollout, teacher-forced for `n_teacher` steps) on a fixed batch of validation windows,
    and its number of observed targets; compiled once per spec.

    A merge is judged on the neurons it moves: the validation forecast over the whole segment
    (:func:`mesojax.evaluate.validation_mse`) costs seconds per call, and an event tests every pair.
    """
    h = spec.history

    @jax.jit
    def errors(params: model.Params, temps: model.Temperatures, inputs: model.ModelInputs,
               batch: Any) -> tuple[jax.Array, jax.Array]:
        out = losses.rollout_batch(spec, params, inputs, model.context(spec, params, inputs, temps), temps, batch,
                                   n_teacher)
        target, mask = batch.x[:, h:], batch.x_mask[:, h:]
        return jnp.sum(mask * jnp.square(out.x_next - target), axis=(0, 1)), jnp.sum(mask, axis=(0, 1))

    def call(params: model.Params, temps: model.Temperatures) -> tuple[np.ndarray, np.ndarray]:
        sse, count = errors(params, temps, inputs, batch)
        return np.asarray(sse, np.float64), np.asarray(count, np.float64)

    return call


def event(state: Any, spec: model.ModelSpec, inputs: model.ModelInputs, *, partition: Callable[[Any], dict],
          errors: Callable[[Any], tuple[np.ndarray, np.ndarray]] | None, traces: np.ndarray | None, tolerance: float,
          min_locations: int,
          do_merge: bool, do_split: bool, rng: np.random.Generator,
          min_silhouette: float = assign.MIN_SILHOUETTE, log: Callable[[str], None] = lambda s: None,
          ) -> tuple[Any, dict]:
    """One restructuring event: merges judged on the validation errors of the neurons they move, then splits.

    A merge ``src → dst`` costs ``Σ_i∈src e'_i / Σ_i∈src e_i - 1`` (summed squared errors over observed
    validation targets): how much worse filter `dst` predicts the neurons of `src`'s locations than `src`
    does. The cheapest merge of any
    ordered pair of used filters is kept while its cost is below `tolerance`, one at a time (the
    partition and the errors are measured again after each). Then, with `do_split`, the clearest 2-means
    halves of used filters (:func:`halves`) move to copies in the free filters.

    Args:
      state: the train state (``params``, ``opt_state``).
      partition: ``params -> hard partition`` (:func:`mesojax.evaluate.partition` at final temperatures).
      errors: ``params -> (sse [N], count [N])`` per-neuron validation errors (:func:`validation_errors`);
        None without `do_merge`.
      traces: ``[T, N]`` training traces (NaN allowed) for the split proposals' fingerprints (None without
        `do_split`).
      tolerance: the largest relative cost of a merge that is kept.
      min_locations: the smaller half of a split holds at least this many locations.
      do_merge: test merges.
      do_split: propose splits after the merges.
      rng: for 2-means.
      min_silhouette: the least silhouette of a split's 2-means (:func:`halves`).
      log: one line per decision.

    Returns:
      ``(state, record)``: the record holds the validation MSE before the event and after its merges
      (``val_mse``, ``val_mse_after_merges``, with `do_merge`), every merge tested with its cost
      (``tested``), the merges kept and the splits made (``src``, ``dst``, and the split's locations and silhouette). A split
      leaves the neural forecasts unchanged; with the ``pooled`` behaviour readout, which reads every
      pair, the copied filter's behaviour weights change what the free filter contributed.
    """
    b = spec.n_filters
    l = spec.n_locations
    record: dict[str, Any] = {"merges": [], "tested": [], "splits": []}
    if do_merge:
        sse0, count = errors(state.params)
        record["val_mse"] = float(sse0.sum() / max(count.sum(), 1.0))
    gone: set[int] = set()  # merged away in this event: neither side of a later merge (no undoing)
    while do_merge:
        part = partition(state.params)
        loc_filter = location_filters(part, l, b)
        used = [k for k in range(b) if np.any(loc_filter == k) and k not in gone]
        if len(used) < 2:
            break
        neuron_filter = np.where(part["location"] >= 0, loc_filter[np.maximum(part["location"], 0)], -1)
        best = None
        for src in used:
            moved = neuron_filter == src
            before = float(sse0[moved].sum())
            if count[moved].sum() == 0 or before <= 0:  # nothing observed to judge the move on
                continue
            for dst in used:
                if dst == src:
                    continue
                trial = merge(spec, state, inputs, loc_filter, src, dst, moments=False).params
                sse1, _ = errors(trial)
                cost = float(sse1[moved].sum()) / before - 1.0
                record["tested"].append({"src": src, "dst": dst, "cost": cost})
                if math.isfinite(cost) and (best is None or cost < best[0]):
                    best = (cost, src, dst, sse1, trial)
        if best is None or best[0] > tolerance:
            if best is not None:
                log(f"restructure: no merge kept (cheapest: filter {best[1]} into {best[2]}, "
                    f"{100 * best[0]:+.2f} % on its neurons)")
            break
        cost, src, dst, sse0, params = best
        log(f"restructure: filter {src} merged into {dst} ({100 * cost:+.2f} % on its neurons)")
        record["merges"].append({"src": src, "dst": dst, "cost": cost})
        # The kept trial's parameters, with Adam's moments moved as in merge(..., moments=True).
        opt_state = swap(spec, state.opt_state, loc_filter == src, dst, src, np.asarray(inputs.assign.candidates))
        state = state._replace(params=params, opt_state=opt_state)
        gone.add(src)
    if do_merge:
        record["val_mse_after_merges"] = float(sse0.sum() / max(count.sum(), 1.0))
    if do_split:
        part = partition(state.params)
        loc_filter = location_filters(part, l, b)
        # Free: no location holds it as its majority. A copy overwrites the filter, and with it the forecasts
        # of the few neurons that may still be on it (minorities of mixed locations, or soft weight).
        free = [k for k in range(b) if not np.any(loc_filter == k)]
        fingerprint, held = assign.activity_fingerprint(traces, part["location"], l)
        proposals = halves(fingerprint, held, loc_filter, b, min_locations, rng, min_silhouette)
        for (sil, src, half), dst in zip(proposals, free):
            state = split(spec, state, inputs, half, src, dst)
            record["splits"].append({"src": src, "dst": dst, "locations": int(half.sum()), "silhouette": sil})
            log(f"restructure: filter {src} split, {int(half.sum())} of its locations now on filter {dst} "
                f"(silhouette {sil:.2f})")
    return state, record
