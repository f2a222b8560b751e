r"""Domain assignment: every neuron picks one (location, filter) pair among its candidates, softly.

For neuron ``i`` with candidate locations ``µ = cand[i,c]`` (the spheres that hold it) and filters
``b``, the assignment is a gated softmax (§4.8, Supplement A)::

    ℓ[i,c,b] = θ[i,c,b] + g_ψ(i, c)[b] + φ[µ,b] + log σ(ω[µ,b])
    a[i,c,b] = softmax_{(c,b) valid}( ℓ[i,c,b] / τ )

* ``θ`` are free per-(neuron, pair) parameters, initialised with a spatial prior ``-κ‖(x_i - µ)/r‖²``
  (neurons start closer to the spheres they sit near the centre of); with ``partner_prior`` the squared
  distance is averaged over the neuron and its synaptic partners (a partner outside the sphere counts
  as on its boundary, ``OUTSIDE``), so the neurons of one densely wired module start by preferring the
  same sphere, the one that holds the module, instead of each its own nearest centre;
* ``g_ψ`` is a shared network on features, in one of two forms:

  - ``"gather_scatter"`` (five layers): embed each neuron, ``h_i = MLP_e(φ_i)`` (2 layers); *gather*
    a sphere summary ``s_µ = mean_{k ∈ µ} h_k`` (1 pooling layer); *scatter* it back,
    ``g = MLP_s([h_i, s_µ, δ_iµ])`` (2 layers);
  - ``"composite"`` (four layers): one network on the raw concatenation,
    ``g = MLP([φ_i, mean_{k ∈ µ} φ_k, δ_iµ])`` (pooling + 3 dense layers);
  - ``"free"``: no network, ``g = 0``;

  with ``δ_iµ = (x_i - µ)/r`` the neuron's offset from the sphere centre;
* ``φ[µ,b]`` are pair *claims*, shared by every neuron of sphere µ: the gradient of all members
  accumulates on them, so a pair that explains a whole module claims all of its neurons together (a
  per-neuron θ alone lets neighbouring spheres split a module between them); with ``activity_claims``
  they start seeded by activity (:func:`seed_claims`): the locations the prior fills are clustered on a
  dynamics fingerprint and cluster b starts with a bonus on filter b;
* ``ω[µ,b]`` are pair gates: a closed gate removes a pair from every neuron's choice;
* the temperature ``τ`` is annealed towards zero so assignments become one-hot;
* optional **coherence** (``coherence = β > 0``): synaptic partners are pulled into the same domain by a
  few mean-field steps on the connectome (undirected, degree-normalised),
  ``a ← softmax((ℓ + β m(a)) / τ)`` with ``m(a)[i,c,b] = (1/deg i) Σ_{j ~ i} a[j, slot_j(cand[i,c]), b]``,
  the weight neuron i's partners give to the same (location, filter) pair. A module is densely wired
  inside and sparsely to its neighbours, so this favours one domain per module over splitting it
  between overlapping spheres.

Example:
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> inputs = AssignInputs(
    ...     candidates=jnp.array([[0, 1], [1, 0]]), candidate_mask=jnp.array([[True, True], [True, False]]),
    ...     candidate_offset=jnp.zeros((2, 2, 3)), neuron_features=jnp.ones((2, 4)),
    ...     members=jnp.array([[0, 1], [1, 0]]), member_mask=jnp.array([[True, False], [True, True]]))
    >>> spec = AssignSpec(n_filters=3, network="gather_scatter")
    >>> params = init(jax.random.key(0), spec, inputs, n_locations=2)
    >>> a = assignment(spec, params, inputs, temperature=1.0)
    >>> a.shape, np.allclose(a.sum((1, 2)), 1.0), float(a[1, 1].sum())
    ((2, 2, 3), True, 0.0)
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mesojax import nn

NETWORKS = ("free", "gather_scatter", "composite")
_NEG = -1e9


@dataclasses.dataclass(frozen=True)
class AssignSpec:
    """Static assignment settings.

    Attributes:
      n_filters: B.
      network: "free", "gather_scatter" (Supplement A eq. 6–7) or "composite" (eq. 8).
      hidden: width of the network's hidden layers.
      distance_prior: κ of the initial spatial prior on θ.
      init_noise: std of the noise added to θ at init.
      claim_noise: std of the pair claims φ at init (breaks the symmetry between filters per sphere).
      gate_init: initial pair-gate logit ω (positive: open).
      coherence: β, weight of the connectome mean-field term (0: off).
      coherence_steps: mean-field iterations.
      partner_prior: average the initial spatial prior over synaptic partners (needs neighbours).
      activity_claims: claim bonus of each location's activity cluster at init (0: off;
        :func:`seed_claims`, applied by the trainer, which has the traces).
    """

    n_filters: int
    network: str = "gather_scatter"
    hidden: int = 32
    distance_prior: float = 2.0
    init_noise: float = 0.1
    claim_noise: float = 0.5
    gate_init: float = 3.0
    coherence: float = 0.0
    coherence_steps: int = 2
    partner_prior: bool = False
    activity_claims: float = 0.0

    def __post_init__(self):
        if self.network not in NETWORKS:
            raise ValueError(f"AssignSpec: field 'network' must be one of {NETWORKS}, got {self.network!r}")


class AssignInputs(NamedTuple):
    """Static arrays the assignment reads (from :mod:`mesojax.spatial` tables and :mod:`mesojax.features`).

    Attributes:
      candidates: ``[N, C]`` int location of each candidate.
      candidate_mask: ``[N, C]`` bool.
      candidate_offset: ``[N, C, 3]`` neuron offset from the candidate centre, in radii.
      neuron_features: ``[N, F]`` standardised features.
      members: ``[L, K]`` int neuron of each sphere slot.
      member_mask: ``[L, K]`` bool.
      neighbours: :class:`Neighbours` for the coherence term, or None.
    """

    candidates: jax.Array
    candidate_mask: jax.Array
    candidate_offset: jax.Array
    neuron_features: jax.Array
    members: jax.Array
    member_mask: jax.Array
    neighbours: "Neighbours | None" = None


class Neighbours(NamedTuple):
    """Directed neuron pairs ``src -> dst`` (both directions of every connected pair) for coherence.

    Attributes:
      src, dst: ``[P]`` int neuron indices.
      slot: ``[P, C]`` int, the slot of ``dst``'s candidates holding ``src``'s candidate c (-1: none).
      weight: ``[P]`` float, ``1 / deg(src)``.
    """

    src: jax.Array
    dst: jax.Array
    slot: jax.Array
    weight: jax.Array


def neighbours(pre: np.ndarray, post: np.ndarray, candidates: np.ndarray, candidate_mask: np.ndarray) -> Neighbours:
    """The coherence pairs of a connectome (host side, once): unique undirected partners, no self pairs,
    and only neurons with a candidate location (one without has no domain to agree with, nor a
    position to average into the prior).

    Args:
      pre, post: ``[E]`` synapse endpoints (a multigraph; repeats count once).
      candidates, candidate_mask: ``[N, C]`` from the spatial tables.

    Example:
        >>> nb = neighbours(np.array([0, 0]), np.array([1, 1]), np.array([[0, 1], [1, 0]]),
        ...                 np.array([[True, True], [True, False]]))
        >>> nb.src.tolist(), nb.dst.tolist(), nb.slot.tolist()
        ([0, 1], [1, 0], [[-1, 0], [1, -1]])
    """
    pre, post = np.asarray(pre, np.int64), np.asarray(post, np.int64)
    n = candidates.shape[0]
    placed = np.asarray(candidate_mask).any(1)
    keep = (pre != post) & placed[pre] & placed[post]
    key = np.unique(np.concatenate([pre[keep] * n + post[keep], post[keep] * n + pre[keep]]))
    src, dst = key // n, key % n
    eq = (candidates[src][:, :, None] == candidates[dst][:, None, :]) & \
        candidate_mask[src][:, :, None] & candidate_mask[dst][:, None, :]
    slot = np.where(eq.any(-1), eq.argmax(-1), -1)
    degree = np.bincount(src, minlength=n)
    return Neighbours(jnp.asarray(src, jnp.int32), jnp.asarray(dst, jnp.int32), jnp.asarray(slot, jnp.int32),
                      jnp.asarray(1.0 / np.maximum(degree[src], 1), jnp.float32))


def coherence_message(a: jax.Array, nb: Neighbours) -> jax.Array:
    """``m[i,c,b] = Σ_{j ~ i} w_ij a[j, slot_j(cand[i,c]), b]`` ``[N, C, B]`` (see the module docstring)."""
    partner = jnp.take(a, nb.dst, axis=0)  # [P, C, B]
    same = jnp.take_along_axis(partner, jnp.maximum(nb.slot, 0)[..., None], axis=1)
    same = same * (nb.slot >= 0)[..., None] * nb.weight[:, None, None]
    return jax.ops.segment_sum(same, nb.src, num_segments=a.shape[0])


class AssignParams(NamedTuple):
    """Free logits ``θ [N,C,B]``, pair claims ``φ [L,B]``, pair gates ``ω [L,B]`` and the network (or None)."""

    free: jax.Array
    claim: jax.Array
    gate: jax.Array
    net: dict | None


def _widths(spec: AssignSpec) -> dict[str, tuple[int, ...]]:
    h = spec.hidden
    return {
        "embed": (h, h),
        "scatter": (h, spec.n_filters),
        "composite": (h, h, spec.n_filters),
    }


def _pool(values: jax.Array, inputs: AssignInputs) -> jax.Array:
    """Masked mean of per-neuron ``values [N, D]`` over each sphere's members → ``[L, D]``."""
    gathered = jnp.take(values, inputs.members, axis=0, mode="clip")  # [L, K, D]
    w = inputs.member_mask.astype(values.dtype)[..., None]
    return (gathered * w).sum(1) / jnp.maximum(w.sum(1), 1.0)


def init(
    key: jax.Array, spec: AssignSpec, inputs: AssignInputs, n_locations: int, n_real_locations: int | None = None
) -> AssignParams:
    """Spatial-prior free logits (+ noise), random claims, open gates, and the network (final layer small).

    Claims are drawn for the first `n_real_locations` (default: all) and zero on padding locations, so
    padding L for sharding does not change the initial state of the real ones.
    """
    k_free, k_claim, k1, k2 = jax.random.split(key, 4)
    n, c = inputs.candidates.shape
    prior = -spec.distance_prior * prior_distance(inputs, spec.partner_prior)  # [N, C]
    free = prior[..., None] + spec.init_noise * jax.random.normal(k_free, (n, c, spec.n_filters))
    n_real = n_locations if n_real_locations is None else n_real_locations
    claim = spec.claim_noise * jax.random.normal(k_claim, (n_real, spec.n_filters), jnp.float32)
    claim = jnp.pad(claim, ((0, n_locations - n_real), (0, 0)))
    gate = jnp.full((n_locations, spec.n_filters), spec.gate_init, jnp.float32)
    f = inputs.neuron_features.shape[-1]
    w = _widths(spec)
    if spec.network == "gather_scatter":
        net = {
            "embed": nn.init_mlp(k1, w["embed"], f),
            "scatter": nn.init_mlp(k2, w["scatter"], 2 * spec.hidden + 3, final_scale=0.1),
        }
    elif spec.network == "composite":
        net = {"composite": nn.init_mlp(k1, w["composite"], 2 * f + 3, final_scale=0.1)}
    else:
        net = None
    return AssignParams(free.astype(jnp.float32), claim, gate, net)


OUTSIDE = 1.0
"""Squared distance (in radii²) counted for a synaptic partner outside a candidate sphere: the sphere's
boundary, so the averaged distance is a truncated quadratic and a few long-range partners (links to
neighbouring modules, stray synapses) cannot drag a neuron's prior towards them. On the default phantom
the prior's location ARI is 0.98 with 1.0, 0.90 with 2.0, and 0.69 with the partners' true distances."""


def prior_distance(inputs: AssignInputs, partners: bool) -> jax.Array:
    """``[N, C]`` squared offset of each neuron from each candidate centre, in radii², optionally
    averaged with its synaptic partners' (``OUTSIDE`` for a partner not in that sphere).

    Raises:
      ValueError: `partners` without ``inputs.neighbours``.
    """
    d2 = jnp.sum(jnp.square(inputs.candidate_offset), axis=-1)
    if not partners:
        return d2
    nb = inputs.neighbours
    if nb is None:
        raise ValueError("AssignSpec.partner_prior needs AssignInputs.neighbours (build_inputs(neighbours=...))")
    partner = jnp.take_along_axis(jnp.take(d2, nb.dst, axis=0), jnp.maximum(nb.slot, 0), axis=1)  # [P, C]
    partner = jnp.where(nb.slot >= 0, partner, OUTSIDE)
    total = jax.ops.segment_sum(partner, nb.src, num_segments=d2.shape[0])
    count = jax.ops.segment_sum(jnp.ones_like(nb.weight), nb.src, num_segments=d2.shape[0])
    return (d2 + total) / (1.0 + count)[:, None]


def network_logits(spec: AssignSpec, params: AssignParams, inputs: AssignInputs) -> jax.Array:
    """The shared network's contribution ``g_ψ [N, C, B]`` (zeros for the "free" network)."""
    n, c = inputs.candidates.shape
    if spec.network == "free":
        return jnp.zeros((n, c, spec.n_filters), jnp.float32)
    w = _widths(spec)
    if spec.network == "gather_scatter":
        h = jax.vmap(lambda f: nn.apply_mlp(params.net["embed"], f, w["embed"]))(inputs.neuron_features)
        per_neuron, per_location, net, widths = h, _pool(h, inputs), params.net["scatter"], w["scatter"]
    else:
        feats = inputs.neuron_features
        per_neuron, per_location = feats, _pool(feats, inputs)
        net, widths = params.net["composite"], w["composite"]
    loc = jnp.take(per_location, inputs.candidates, axis=0, mode="clip")  # [N, C, D]
    x = jnp.concatenate(
        [jnp.broadcast_to(per_neuron[:, None], loc.shape[:2] + per_neuron.shape[-1:]), loc,
         inputs.candidate_offset], axis=-1,
    )
    return jax.vmap(jax.vmap(lambda v: nn.apply_mlp(net, v, widths)))(x)


def logits(spec: AssignSpec, params: AssignParams, inputs: AssignInputs) -> jax.Array:
    """Gated logits ``ℓ [N, C, B]``; invalid candidates hold a large negative value."""
    pair = params.claim + jax.nn.log_sigmoid(params.gate)  # [L, B]
    pair = jnp.take(pair, inputs.candidates, axis=0, mode="clip")  # [N, C, B]
    ell = params.free + network_logits(spec, params, inputs) + pair
    return jnp.where(inputs.candidate_mask[..., None], ell, _NEG)


def assignment(
    spec: AssignSpec, params: AssignParams, inputs: AssignInputs, temperature: jax.Array | float
) -> jax.Array:
    """Soft assignment ``a [N, C, B]``: a softmax over each neuron's valid (candidate, filter) pairs.

    Neurons with no valid candidate get all-zero rows.
    """
    ell = logits(spec, params, inputs)
    n, c, b = ell.shape
    valid = inputs.candidate_mask[..., None] * inputs.candidate_mask.any(-1)[:, None, None]

    def soft(x):
        return jax.nn.softmax(x.reshape(n, c * b) / temperature, axis=-1).reshape(n, c, b) * valid

    a = soft(ell)
    if spec.coherence > 0 and inputs.neighbours is not None:
        for _ in range(spec.coherence_steps):  # a few mean-field steps, unrolled (differentiable)
            a = soft(ell + spec.coherence * coherence_message(a, inputs.neighbours))
    return a


def entropy(a: jax.Array) -> jax.Array:
    """Per-neuron assignment entropy ``H_i = -Σ a log a`` ``[N]`` (0 when one-hot)."""
    return -jnp.sum(jnp.where(a > 0, a * jnp.log(jnp.maximum(a, 1e-30)), 0.0), axis=(1, 2))


def hard_partition(a: jax.Array, inputs: AssignInputs) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The discrete partition: each neuron's (location, filter) with the largest weight, and its weight.

    Returns:
      ``(location [N], filter [N], confidence [N])``; location and filter are -1 (confidence 0) for
      neurons with no candidate.
    """
    n, c, b = a.shape
    flat = a.reshape(n, c * b)
    best = jnp.argmax(flat, axis=-1)
    cand, filt = best // b, best % b
    loc = jnp.take_along_axis(inputs.candidates, cand[:, None], axis=1)[:, 0]
    has = inputs.candidate_mask.any(-1)
    return jnp.where(has, loc, -1), jnp.where(has, filt, -1), jnp.where(has, jnp.max(flat, axis=-1), 0.0)


# ------------------------------------------------------------------------------ activity-seeded claims
# Host-side (numpy), run once at initialisation. Filters are shared dynamics, so domains whose activity
# looks alike should start on the same filter: the mixture-of-experts version of seeding k-means. With
# random claims every filter first sees a mix of all dynamics, learns a generic model, and nothing then
# rewards a domain for preferring one filter over another (the filters collapse).


def prior_location(inputs: AssignInputs, partners: bool) -> np.ndarray:
    """``[N]`` the candidate location nearest under the spatial prior (-1 for neurons without candidates)."""
    d = np.where(np.asarray(inputs.candidate_mask), np.asarray(prior_distance(inputs, partners)), np.inf)
    best = np.asarray(inputs.candidates)[np.arange(d.shape[0]), d.argmin(1)]
    return np.where(np.isfinite(d.min(1)), best, -1)


def activity_fingerprint(traces: np.ndarray, location: np.ndarray, n_locations: int,
                         lags: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """A dynamics signature per location: its members' autocorrelation and their mutual correlation.

    For the neurons each location holds under a partition, with ``ρ_i(l)`` neuron i's autocorrelation
    at lag l and ``C`` the members' correlation matrix::

        f_µ = [mean_i ρ_i(1..lags), min_i ρ_i(1..lags), mean, min, max of C off the diagonal]

    Every product averages over the frames where both factors are recorded, so missing frames (e.g. the
    NaN padding of a shorter animal in a disjoint union) do not shrink it. Neurons with fewer than
    ``2·lags`` recorded frames are left out; a location left with no neuron is not held, and one left
    with a single neuron has no pairs: its three correlation entries are NaN (see
    :func:`cluster_locations`).

    Args:
      traces: ``[T, N]`` training traces (NaN = not recorded).
      location: ``[N]`` location of each neuron (-1: none), e.g. :func:`prior_location`.
      n_locations: L.
      lags: autocorrelation lags.

    Returns:
      ``(fingerprint [L, 2·lags + 3], held [L] bool)``: rows of locations that are not held are zero.

    Example:
        >>> x = np.random.default_rng(0).normal(size=(200, 4))
        >>> f, held = activity_fingerprint(x, np.array([0, 0, 2, -1]), 3, lags=2)
        >>> f.shape, held.tolist(), bool(np.isnan(f[2, 4:]).all())
        ((3, 7), [True, False, True], True)
    """
    x = np.asarray(traces, np.float64)
    if x.ndim != 2 or x.shape[1] != len(location) or x.shape[0] <= lags + 1:
        raise ValueError(f"activity_fingerprint: traces must be [T > {lags + 1}, N = {len(location)}], "
                         f"got {x.shape}")
    seen = np.isfinite(x)
    w = seen.astype(np.float64)
    count = np.maximum(w.sum(0), 1.0)
    enough = w.sum(0) >= 2 * lags
    mean = np.where(seen, x, 0.0).sum(0) / count
    std = np.sqrt(np.where(seen, np.square(x - mean), 0.0).sum(0) / count)
    z = np.where(seen, (x - mean) / np.maximum(std, 1e-8), 0.0)
    t = z.shape[0]

    def mean_product(a, b, wa, wb):  # Σ a·b / #frames where both are recorded
        return (a * b).sum(0) / np.maximum((wa * wb).sum(0), 1.0)

    rho = np.stack([mean_product(z[lag:], z[:t - lag], w[lag:], w[:t - lag]) for lag in range(1, lags + 1)], 1)
    out = np.zeros((n_locations, 2 * lags + 3))
    held = np.zeros(n_locations, bool)
    use = (location >= 0) & enough
    for mu in np.unique(location[use]):
        idx = np.flatnonzero(use & (location == mu))
        corr = (z[:, idx].T @ z[:, idx]) / np.maximum(w[:, idx].T @ w[:, idx], 1.0)
        off = corr[~np.eye(len(idx), dtype=bool)] if len(idx) > 1 else np.full(1, np.nan)
        out[mu] = np.concatenate([rho[idx].mean(0), rho[idx].min(0), [off.mean(), off.min(), off.max()]])
        held[mu] = True
    return out, held


def kmeans(z: np.ndarray, k: int, rng: np.random.Generator, restarts: int = 8,
           iters: int = 100) -> tuple[np.ndarray, float]:
    """Lloyd's k-means with k-means++ seeding, best of `restarts`: ``(labels [P], inertia)``."""
    best = (np.zeros(len(z), np.int64), np.inf)
    for _ in range(restarts):
        centres = z[[rng.integers(len(z))]]
        for _ in range(1, k):  # k-means++: next centre with probability ∝ squared distance
            d2 = np.min(((z[:, None] - centres[None]) ** 2).sum(-1), 1)
            p = d2 / d2.sum() if d2.sum() > 0 else np.full(len(z), 1 / len(z))
            centres = np.concatenate([centres, z[[rng.choice(len(z), p=p)]]])
        for _ in range(iters):
            labels = ((z[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
            new = np.stack([z[labels == j].mean(0) if np.any(labels == j) else centres[j] for j in range(k)])
            if np.allclose(new, centres):
                break
            centres = new
        labels = ((z[:, None] - centres[None]) ** 2).sum(-1).argmin(1)  # consistent with the final centres
        inertia = float(((z - centres[labels]) ** 2).sum())
        if inertia < best[1]:
            best = (labels, inertia)
    return best


def silhouette(z: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette ``(b - a) / max(a, b)`` (0 for points alone in their cluster)."""
    d = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1))
    ids = np.unique(labels)
    if len(ids) < 2:
        return 0.0
    mean_to = np.stack([d[:, labels == c].sum(1) for c in ids], 1)  # [P, k] summed distances
    size = np.array([np.sum(labels == c) for c in ids])
    own = np.searchsorted(ids, labels)
    own_size = size[own] - 1
    a = mean_to[np.arange(len(z)), own] / np.maximum(own_size, 1)
    other = mean_to / size[None]
    other[np.arange(len(z)), own] = np.inf
    b = other.min(1)
    s = np.where(own_size > 0, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(s.mean())


MIN_SILHOUETTE = 0.25
"""Below this mean silhouette a split is not structure (the usual "weak or artificial" line): one cluster."""


def standardise(fingerprint: np.ndarray) -> np.ndarray:
    """Location fingerprints ``[P, D]`` ready for k-means: NaN entries (a location without member pairs)
    take their column's mean (0 for an all-NaN column), then every column is z-scored."""
    f = np.asarray(fingerprint, np.float64)
    column_mean = np.nanmean(np.where(np.isnan(f).all(0), 0.0, f), 0)
    f = np.where(np.isnan(f), column_mean, f)
    return (f - f.mean(0)) / np.maximum(f.std(0), 1e-8)


def cluster_locations(fingerprint: np.ndarray, max_k: int, rng: np.random.Generator,
                      tolerance: float = 0.02) -> np.ndarray:
    """Cluster location fingerprints into k ≤ `max_k` groups, k chosen by silhouette.

    The fingerprints are standardised (:func:`standardise`); k-means runs for k = 2..max_k and the
    smallest k whose silhouette is within `tolerance` (relative) of the best is kept, so a split that barely improves the separation (a handful of off-centre
    locations peeling off) does not add a filter. When no split reaches :data:`MIN_SILHOUETTE` (or
    there are fewer than 3 locations) everything is one cluster.

    Returns:
      ``[P]`` labels in ``0..k-1``, cluster 0 the largest.
    """
    p = len(fingerprint)
    if p < 3 or max_k < 2:
        return np.zeros(p, np.int64)
    z = standardise(fingerprint)
    runs = [kmeans(z, k, rng) for k in range(2, min(max_k, p - 1) + 1)]
    scores = np.array([silhouette(z, labels) for labels, _ in runs])
    if scores.max() < MIN_SILHOUETTE:
        return np.zeros(p, np.int64)
    labels = runs[int(np.flatnonzero(scores >= scores.max() * (1 - tolerance))[0])][0]
    order = np.argsort(-np.bincount(labels), kind="stable")
    return np.argsort(order)[labels]


def seed_claims(params: AssignParams, spec: AssignSpec, inputs: AssignInputs, traces: np.ndarray,
                rng: np.random.Generator) -> AssignParams:
    """Add ``spec.activity_claims`` to the claim ``φ[µ, b]`` of each location's activity cluster b.

    The locations are those the spatial prior gives neurons to (:func:`prior_location`), clustered on
    :func:`activity_fingerprint` by :func:`cluster_locations` into at most B clusters; cluster b seeds
    filter b. Filters beyond the number of clusters start unclaimed.

    Args:
      traces: ``[T, N]`` training traces (NaN allowed).
    """
    location = prior_location(inputs, spec.partner_prior)
    n_locations = params.claim.shape[0]
    fingerprint, held = activity_fingerprint(traces, location, n_locations)
    mu = np.flatnonzero(held)
    labels = cluster_locations(fingerprint[mu], spec.n_filters, rng)
    claim = np.asarray(params.claim).copy()
    claim[mu, labels] += spec.activity_claims
    return params._replace(claim=jnp.asarray(claim, params.claim.dtype))
