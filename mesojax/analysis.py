r"""Programme analyses of a fitted model: representational similarity to the tissue, one-shot learning.

**Representational similarity** (RSA; Kriegeskorte et al. 2008, Nili et al. 2014). Frames are grouped
into *conditions*: stimulus conditions where there is a stimulus (which channel drives the frame),
behavioural states where there are modes (forward, reversal, turning, ...), time bins otherwise. A
representational dissimilarity matrix (RDM) holds, for every pair of conditions, the correlation
distance between their mean response patterns,

.. math::

    D_{cd} = 1 - \operatorname{corr}(\bar r_c, \bar r_d), \qquad \bar r_c = \operatorname{mean}_{t: c(t) = c} r_t,

computed from the recorded neurons, from the model's predicted neurons and from its filter outputs. Two
RDMs are compared by the Spearman correlation of their upper triangles. Every comparison comes with

* a **noise ceiling**: the split-half reliability of the data RDM (each condition's frames split into an
  early and a late half), Spearman–Brown corrected: no model of these data can be expected to exceed it;
  and a **cross-half similarity**, the model's RDM from one half against the data's from the other, to
  be read against the uncorrected split-half reliability. A one-step forecast fed the recorded frames
  shares their frame-by-frame fluctuations, so its same-frame similarity can exceed the ceiling; the
  cross-half comparison cannot profit from that;
* a **null**: the same comparison with the model RDM's conditions shuffled (rows and columns permuted
  together), its mean, 95th percentile and the permutation p-value.

:func:`model_rsa` does it for the whole circuit, per filter (its claimed neurons against its outputs
at the locations it claims) and per domain, and, for a disjoint union of animals, compares each
filter's output RDMs across animals (does a filter sit at the same place in the representational
geometry of every animal?).

**Unsupervised clustering** (:func:`neuron_features`, :func:`kmeans`, :func:`cluster_scores`): every
claimed neuron is described by what the fitted model learned about it, without its labels: how its
assignment weight spreads over the filters, and how its recorded activity co-varies with each output
port of the filter that claims it. k-means on these (k = the number of labels) is scored against every
known partition (cell types, planted roles) by the adjusted Rand index.

**One-shot learning curves** (:func:`learning_curve`): a new circuit's model refit on a frozen basis
from 2 % to 70 % of its recording, against the same model trained from scratch on those frames and
against every baseline, all scored on the same held-out test segment.

Example::

    labels, names = analysis.condition_labels(exp.recording, exp.segments["test"])
    out = analysis.rsa(data_responses, model_responses, labels, len(names))
    out["similarity"], out["ceiling"], out["null_p95"]
    pairs = analysis.claimed_pairs(part)
    whole = analysis.model_rsa(exp, part, evaluate.responses(config, exp, params, "test", pairs))
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.stats

from mesojax import metrics
from mesojax.data import Recording, windows
from mesojax.experiment import Experiment

__all__ = ["condition_labels", "rdm", "compare_rdms", "rsa", "claimed_pairs", "model_rsa", "learning_curve", "pool_curves",
           "LEARNING_FRACTIONS", "LEARNING_TEST_FRACTION", "neuron_features", "kmeans", "cluster_scores"]

_MIN_FRAMES = 4  # frames a condition needs in each half to enter an RDM
_BINS = 5  # quantile bins of a continuous behaviour when there are too few discrete states


def condition_labels(recording: Recording, segment: tuple[tuple[int, int], ...], *, prefix: str | None = None,
                     n_time_bins: int = 8) -> tuple[np.ndarray, tuple[str, ...]]:
    """The condition of every frame of a segment (its pieces joined in order), and the condition names.

    Stimulus conditions (0 = no channel on, ``k + 1`` = channel k is the strongest one on) are crossed
    with behavioural states where there are both. Behavioural states are the modes, or else the states
    of the 0/1 behaviour columns (e.g. ``reversal``: 0 = none of them, ``k + 1`` = the k-th is 1; with
    `prefix`, only the columns named ``prefix...``, one animal of a disjoint union); fewer than three
    states are split further by the quintiles of the first continuous behaviour (e.g. velocity 1/5 ..
    5/5 outside reversals). Without stimulus or behaviour: ``n_time_bins`` equal bins of each piece.
    Frames without a known condition (mode -1, NaN behaviour) are -1.

    Returns:
      ``(labels [T_seg] int, names)``.
    """
    pieces = [(int(a), int(b)) for a, b in segment]
    cut = lambda a: np.concatenate([a[t0:t1] for t0, t1 in pieces])  # noqa: E731
    stimulus = None
    if recording.stimulus is not None and recording.stimulus.shape[1] and prefix is None:
        stim = cut(recording.stimulus)
        stimulus = (np.where(stim.max(1) > 0, 1 + np.argmax(stim, 1), 0).astype(np.int64),
                    ("no stimulus", *[f"stimulus {k}" for k in range(stim.shape[1])]))
    states = _states(recording, cut, prefix)
    if stimulus is not None and states is not None:  # every (stimulus, state) combination is a condition
        (a, a_names), (b, b_names) = stimulus, states
        labels = np.where((a >= 0) & (b >= 0), a * len(b_names) + b, -1)
        return labels, tuple(f"{x} / {y}" for x in a_names for y in b_names)
    if stimulus is not None or states is not None:
        return stimulus if stimulus is not None else states
    labels = np.concatenate([np.minimum((np.arange(b - a) * n_time_bins) // max(b - a, 1), n_time_bins - 1)
                             for a, b in pieces])
    return labels.astype(np.int64), tuple(f"time bin {k}" for k in range(n_time_bins))


def _states(recording: Recording, cut: Any, prefix: str | None) -> tuple[np.ndarray, tuple[str, ...]] | None:
    """Behavioural states of every frame (modes, or 0/1 columns split by quintiles; see
    :func:`condition_labels`), or None without behaviour."""
    if recording.modes is not None and prefix is None:
        return cut(recording.modes).astype(np.int64), tuple(recording.mode_names)
    if recording.behaviour is not None:
        beh = cut(recording.behaviour)
        cols = [k for k, name in enumerate(recording.behaviour_names) if prefix is None or name.startswith(prefix)]
        binary = [k for k in cols if np.isfinite(beh[:, k]).any()
                  and np.isin(beh[np.isfinite(beh[:, k]), k], (0.0, 1.0)).all() and np.nanmax(beh[:, k]) == 1]
        cont = [k for k in cols if k not in binary and np.isfinite(beh[:, k]).sum() >= 3]
        short = lambda k: recording.behaviour_names[k][len(prefix or ""):]  # noqa: E731
        if binary or cont:
            if binary:
                on = np.nan_to_num(beh[:, binary]) == 1
                labels = np.where(on.any(1), 1 + np.argmax(on, 1), 0)
                labels = np.where(np.isnan(beh[:, binary]).any(1), -1, labels)
                names = ["none of " + ", ".join(short(k) for k in binary), *[short(k) for k in binary]]
            else:
                labels, names = np.zeros(len(beh), np.int64), ["all"]
            if len(names) < 3 and cont:  # too few states for an RDM: split the rest by quintiles of a variable
                k = cont[0]
                rest = (labels == 0) & np.isfinite(beh[:, k])
                cuts = np.arange(1, _BINS) * 100 / _BINS
                edges = np.nanpercentile(beh[rest, k], cuts) if rest.any() else np.zeros(_BINS - 1)
                part = np.searchsorted(edges, beh[:, k], side="right")
                labels = np.where(labels > 0, labels + _BINS - 1, np.where(rest, part, -1))
                base = "" if not binary else "no " + ", ".join(short(j) for j in binary) + ", "
                names = [f"{base}{short(k)} {q + 1}/{_BINS}" for q in range(_BINS)] + names[1:]
            return labels.astype(np.int64), tuple(names)
    return None


def _means(responses: np.ndarray, labels: np.ndarray, n_conditions: int) -> np.ndarray:
    """``[C, D]`` mean response of every condition (NaN rows where a condition has no frame)."""
    out = np.full((n_conditions, responses.shape[1]), np.nan)
    for c in range(n_conditions):
        sel = labels == c
        if sel.any():
            with np.errstate(invalid="ignore"):
                out[c] = np.nanmean(responses[sel], axis=0)
    return out


def rdm(responses: np.ndarray, labels: np.ndarray, n_conditions: int) -> np.ndarray:
    """Correlation-distance RDM ``[C, C]`` of the condition means (module docstring); NaN where a
    condition has no frame or a flat mean pattern.

    Args:
      responses: ``[T, D]`` responses (NaN = missing, ignored in the means; columns missing in a
        condition are left out of the correlations).
      labels: ``[T]`` condition of every frame (-1 = none).
      n_conditions: C.
    """
    means = _means(np.asarray(responses, np.float64), np.asarray(labels), n_conditions)
    keep = np.isfinite(means).all(0)
    if not keep.any():
        return np.where(np.eye(n_conditions, dtype=bool), 0.0, np.nan)
    m = means[:, keep]
    m = m - m.mean(1, keepdims=True)
    norm = np.linalg.norm(m, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = m / norm[:, None]
        d = 1.0 - unit @ unit.T
    d[~(norm > 1e-12)] = np.nan
    d[:, ~(norm > 1e-12)] = np.nan
    np.fill_diagonal(d, 0.0)
    return d


def compare_rdms(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of the upper triangles of two RDMs over the pairs finite in both (NaN when
    fewer than 3 pairs, or one of them is constant)."""
    iu = np.triu_indices(a.shape[0], 1)
    x, y = a[iu], b[iu]
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return float("nan")
    return float(scipy.stats.spearmanr(x[ok], y[ok]).statistic)


def _kept_conditions(labels: np.ndarray, n_conditions: int) -> tuple[np.ndarray, np.ndarray]:
    """The conditions with at least `_MIN_FRAMES` frames (``keep``), and `labels` renumbered onto them
    (-1 for frames of the others)."""
    labels = np.asarray(labels)
    keep = np.flatnonzero(np.bincount(labels[labels >= 0], minlength=n_conditions) >= _MIN_FRAMES)
    remap = np.full(n_conditions, -1)
    remap[keep] = np.arange(keep.size)
    return keep, np.where(labels >= 0, remap[np.maximum(labels, 0)], -1)


def _claimed(loc: np.ndarray, filt: np.ndarray) -> list[tuple[int, int]]:
    """The (location, filter) pairs that claim one of these neurons, sorted."""
    ok = (loc >= 0) & (filt >= 0)
    return sorted({(int(a), int(b)) for a, b in zip(loc[ok], filt[ok])})


def _halves(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each condition's frames split into an early and a late half (in time), as label arrays with -1
    elsewhere; conditions with fewer than 2·`_MIN_FRAMES` frames are left out of both."""
    first, second = np.full_like(labels, -1), np.full_like(labels, -1)
    for c in np.unique(labels[labels >= 0]):
        idx = np.flatnonzero(labels == c)
        if idx.size < 2 * _MIN_FRAMES:
            continue
        cut = idx.size // 2
        first[idx[:cut]], second[idx[cut:]] = c, c
    return first, second


def rsa(data: np.ndarray, model_responses: np.ndarray, labels: np.ndarray, n_conditions: int, *,
        n_null: int = 200, seed: int = 0) -> dict[str, Any]:
    """Representational similarity of a model's responses to the data's, with noise ceiling and null.

    Args:
      data: ``[T, N]`` recorded responses.
      model_responses: ``[T, D]`` the model's responses on the same frames (any width).
      labels: ``[T]`` conditions (-1 = none).
      n_conditions: C.
      n_null: condition shuffles for the null.
      seed: of the shuffles.

    Returns:
      ``similarity`` (Spearman of the two RDMs over the same frames), ``similarity_cross_half`` (the
      model's RDM from one half of each condition's frames against the data's from the other half,
      averaged both ways: to be read against ``ceiling_split_half``, the data's split-half reliability;
      ``ceiling`` is that reliability Spearman–Brown corrected, the bound for ``similarity``), ``null_mean``, ``null_p95``,
      ``p_value`` (fraction of shuffles at least as similar, with the +1 correction), ``n_conditions``
      (conditions with frames) and both RDMs (``rdm_data``, ``rdm_model``).
    """
    keep, lab = _kept_conditions(labels, n_conditions)
    c = int(keep.size)
    d_data, d_model = rdm(data, lab, c), rdm(model_responses, lab, c)
    similarity = compare_rdms(d_data, d_model)
    first, second = _halves(lab)
    data_halves = rdm(data, first, c), rdm(data, second, c)
    half = compare_rdms(*data_halves)
    # Model and data from different frames (the model's early half against the data's late half and back):
    # commensurate with the split-half reliability, and free of the frame-by-frame fluctuations that a
    # one-step forecast shares with the frames it was fed.
    model_halves = rdm(model_responses, first, c), rdm(model_responses, second, c)
    crossed = [compare_rdms(model_halves[0], data_halves[1]), compare_rdms(model_halves[1], data_halves[0])]
    crossed = [x for x in crossed if np.isfinite(x)]
    ceiling = 2 * half / (1 + half) if np.isfinite(half) and half > -1 else float("nan")
    rng = np.random.default_rng(seed)
    null = []
    for _ in range(n_null if c >= 3 else 0):
        p = rng.permutation(c)
        null.append(compare_rdms(d_data, d_model[np.ix_(p, p)]))
    null = np.asarray([v for v in null if np.isfinite(v)])
    return {
        "similarity": similarity, "similarity_cross_half": float(np.mean(crossed)) if crossed else float("nan"),
        "ceiling": float(ceiling), "ceiling_split_half": half,
        "null_mean": float(null.mean()) if null.size else float("nan"),
        "null_p95": float(np.percentile(null, 95)) if null.size else float("nan"),
        "p_value": (float((1 + np.sum(null >= similarity)) / (1 + null.size))
                    if null.size and np.isfinite(similarity) else float("nan")),
        "n_conditions": c, "conditions": keep.tolist(), "rdm_data": d_data, "rdm_model": d_model,
    }


def claimed_pairs(part: dict[str, np.ndarray]) -> np.ndarray:
    """``[P, 2]`` the (location, filter) pairs that claim at least one neuron, sorted."""
    return np.asarray(_claimed(np.asarray(part["location"]), np.asarray(part["filter"])), np.int64).reshape(-1, 2)


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if not k.startswith("rdm_")}


def _circuit_rsa(data: np.ndarray, pred: np.ndarray, v: np.ndarray, index: dict[tuple[int, int], int],
                 labels: np.ndarray, names: tuple[str, ...], loc: np.ndarray, filt: np.ndarray, n_filters: int,
                 n_null: int, max_domains: int) -> dict[str, Any]:
    """:func:`model_rsa` for one circuit: its neurons' ``data`` / ``pred`` ``[R, n]``, their ``loc`` /
    ``filt``, and the filter outputs ``v [R, P, M]`` of the pairs ``index`` (pair -> column of v)."""
    n_cond = len(names)
    claimed = (loc >= 0) & (filt >= 0)
    pairs = _claimed(loc, filt)
    cols = lambda ps: [index[p] for p in ps]  # noqa: E731
    whole_v = v[:, cols(pairs)].reshape(len(v), -1)
    whole_pred = rsa(data, pred, labels, n_cond, n_null=n_null)
    out: dict[str, Any] = {
        "conditions": list(names),
        "whole": {"predicted": _summary(whole_pred),
                  "filters": _summary(rsa(data, whole_v, labels, n_cond, n_null=n_null))},
        "rdms": {"data": np.nan_to_num(whole_pred["rdm_data"], nan=-1).tolist(),
                 "predicted": np.nan_to_num(whole_pred["rdm_model"], nan=-1).tolist(),
                 "conditions": [names[c] for c in whole_pred["conditions"]]},
        "filters": {}, "domains": {},
    }
    for b in sorted({b for _, b in pairs}):
        neurons = np.flatnonzero(claimed & (filt == b))
        mine = [p for p in pairs if p[1] == b]
        out["filters"][str(b)] = _summary(rsa(data[:, neurons], v[:, cols(mine)].reshape(len(v), -1), labels,
                                              n_cond, n_null=n_null))
    domain = np.where(claimed, loc.astype(np.int64) * n_filters + filt, -1)
    ids, counts = np.unique(domain[claimed], return_counts=True)
    for d in ids[np.argsort(-counts, kind="stable")][:max_domains]:
        neurons = np.flatnonzero(domain == d)
        out["domains"][f"{int(d) // n_filters}/{int(d) % n_filters}"] = _summary(
            rsa(data[:, neurons], pred[:, neurons], labels, n_cond, n_null=0))
    sims = [r["similarity"] for r in out["domains"].values() if np.isfinite(r["similarity"])]
    out["domains_median_similarity"] = float(np.median(sims)) if sims else float("nan")
    return out


def model_rsa(exp: Experiment, part: dict[str, np.ndarray], responses: tuple[np.ndarray, ...], *,
              segment: str = "test", n_null: int = 200, max_domains: int = 20) -> dict[str, Any]:
    """RSA of the fitted model against the recording, on `segment` (module docstring).

    Whole circuit: recorded neurons against predicted neurons, and against all filter outputs (the pairs
    that claim neurons). Per filter b: b's claimed recorded neurons against b's outputs at the locations
    where it claims neurons. Per domain: the `max_domains` largest domains, their recorded against their
    predicted neurons. A disjoint union of animals is analysed per animal (each with its own behavioural
    states, :func:`condition_labels` with the animal's prefix), and each filter's output RDMs are
    compared between every pair of animals where it claims neurons.

    Args:
      part: :func:`mesojax.evaluate.partition` (``location``, ``filter`` per neuron).
      responses: :func:`mesojax.evaluate.responses` on `segment` for the pairs :func:`claimed_pairs`:
        recorded and predicted neurons ``[R, N]``, filter outputs ``[R, P, M]``, the frame of every row.

    Returns:
      A JSON-ready dict: for one circuit ``conditions`` (names), ``whole`` (``predicted`` and ``filters``:
      :func:`rsa` summaries), ``filters`` (per filter), ``domains`` (per domain) and their
      ``domains_median_similarity``, and ``rdms`` (the data and predicted RDMs, as lists); for a union the
      same per animal under ``animals`` plus ``across_animals`` (per filter: mean similarity over animal
      pairs).
    """
    data, pred, v, frame = responses
    loc, filt = np.asarray(part["location"]), np.asarray(part["filter"])
    index = {(int(a), int(b)): k for k, (a, b) in enumerate(claimed_pairs(part))}
    n_filters = exp.spec.n_filters
    if len(exp.group_names) == 1:
        # One animal of a union format (a transfer) names its targets "<animal>/...": read them without it.
        own = f"{exp.group_names[0]}/"
        named = exp.recording.behaviour_names
        prefix = own if named and all(n.startswith(own) for n in named) else None
        labels, names = condition_labels(exp.recording, exp.segments[segment], prefix=prefix)
        out = _circuit_rsa(data, pred, v, index, labels[frame], names, loc, filt, n_filters, n_null, max_domains)
        return dict(out, segment=segment)
    animals, rdms_by_filter = {}, {}
    for g, name in enumerate(exp.group_names):
        cols = np.flatnonzero(exp.neuron_group == g)
        labels, names = condition_labels(exp.recording, exp.segments[segment], prefix=f"{name}/")
        animals[name] = _circuit_rsa(data[:, cols], pred[:, cols], v, index, labels[frame], names, loc[cols],
                                     filt[cols], n_filters, n_null, max_domains)
        keep, lab = _kept_conditions(labels[frame], len(names))
        pairs = _claimed(loc[cols], filt[cols])
        for b in sorted({b for _, b in pairs}):
            mine = [index[p] for p in pairs if p[1] == b]
            rdms_by_filter.setdefault(b, {})[name] = (rdm(v[:, mine].reshape(len(v), -1), lab, keep.size),
                                                     [names[c] for c in keep])
    across = {}
    for b, per in rdms_by_filter.items():
        values = []
        keys = list(per)
        for i, p in enumerate(keys):
            for q in keys[i + 1:]:
                if per[p][1] == per[q][1]:  # the same behavioural states in both animals
                    values.append(compare_rdms(per[p][0], per[q][0]))
        values = [x for x in values if np.isfinite(x)]
        if values:
            across[str(b)] = {"mean_similarity": float(np.mean(values)), "n_pairs": len(values)}
    return {"segment": segment, "animals": animals, "across_animals": across}


LEARNING_FRACTIONS = (0.02, 0.05, 0.1, 0.3, 0.7)
"""Shares of the new circuit's recording its model is refit on (0.7: the default training segment)."""

LEARNING_TEST_FRACTION = 0.2
"""The held-out share at the end of the new circuit's recording, the same at every size."""


def learning_curve(transfer_config: Any, scratch_config: Any, trained: Any, trained_targets: tuple[str, ...],
                   workdir: str, *, fractions: tuple[float, ...] = LEARNING_FRACTIONS,
                   test_fraction: float = LEARNING_TEST_FRACTION) -> dict[str, Any]:
    """One-shot learning: a frozen basis against training from scratch, as the new circuit's data grows.

    For every fraction f the new circuit's first f of frames train (``data.split = (f, 1 - test - f,
    test)``, so the test segment, its last `test_fraction`, is the same at every size):

    * ``transfer``: the trained basis frozen (:func:`mesojax.transfer.transfer_params`), interfaces and
      assignment refit (`transfer_config`, e.g. :func:`mesojax.transfer.transfer_config`);
    * ``scratch``: the same model trained from a fresh initialisation on those frames only
      (`scratch_config`);
    * every baseline of ``eval.baselines``, fitted on those frames.

    Each run is a normal workdir ``<workdir>/<f>/<arm>/`` (resumable: a finished one is read back).

    Args:
      transfer_config, scratch_config: configs of the new circuit for the two arms.
      trained: the source model's parameters; trained_targets: its behaviour target names.
      workdir: where the runs go.
      fractions: training shares of the recording.
      test_fraction: the held-out share at the end.

    Returns:
      ``fractions``, ``train_frames`` (per fraction), ``horizons``, ``n_test_starts``, ``mse``:
      ``{"transfer", "scratch", <baseline>...} -> [fraction][horizon]`` test MSE, ``n_targets`` (per
      fraction and horizon, for pooling several circuits) and, with the persistence baseline,
      ``relative_to_persistence`` (every arm's MSE over persistence's). Each size's MSE is in its own
      normalised units (z-scores from its own training frames): compare arms within a size, and sizes
      through the ratios (persistence does not learn).
    """
    # Imported here: mesojax.train imports mesojax.evaluate, which imports this module for the RSA.
    import json
    import os

    from mesojax import evaluate, experiment, train, transfer

    out: dict[str, Any] = {"fractions": list(fractions), "train_frames": [], "mse": {}, "n_targets": [],
                           "n_test_starts": []}
    for f in fractions:
        for arm, base in (("transfer", transfer_config), ("scratch", scratch_config)):
            cfg = base.copy_and_resolve_references()
            with cfg.unlocked():
                cfg.data.split = (f, round(1.0 - test_fraction - f, 10), test_fraction)
                cfg.train.val_every = 0
                cfg.eval.rsa = False
                cfg.eval.clusters = False
                cfg.eval.recovery_at_init = False
                if arm == "scratch":
                    cfg.eval.baselines = ()  # fitted on the same frames in the transfer arm
            folder = os.path.join(workdir, f"{f:g}", arm)
            path = os.path.join(folder, "metrics.json")
            if not os.path.exists(path):
                mesh = train.make_mesh(cfg.mesh.space)
                exp = experiment.prepare(cfg, mesh)
                params = None
                if arm == "transfer":
                    params = transfer.transfer_params(trained, experiment.init_params(cfg, exp), trained_targets,
                                                      exp.recording.behaviour_names)
                exp, state = train.train(cfg, folder, exp, mesh, params=params)
                results, _ = evaluate.evaluate(cfg, exp, state.params)
                results["train_frames"] = windows.n_frames(exp.segments["train"])
                tmp = f"{path}.tmp-{os.getpid()}"
                with open(tmp, "w") as fh:
                    json.dump(results, fh, default=float)
                os.replace(tmp, path)
            with open(path) as fh:
                results = json.load(fh)
            fc = results["forecast"]
            out["mse"].setdefault(arm, []).append(fc["model"]["mse"])
            if arm == "transfer":
                out["train_frames"].append(results["train_frames"])
                out["horizons"] = fc["model"]["horizons"]
                out["n_targets"].append(fc["model"]["n_targets"])
                out["n_test_starts"].append(fc["model"]["n_starts"])
                for name, m in fc.items():
                    if name not in evaluate.MODEL_KEYS:
                        out["mse"].setdefault(name, []).append(m["mse"])
    if "persistence" in out["mse"]:
        ref = np.asarray(out["mse"]["persistence"], float)
        out["relative_to_persistence"] = {k: (np.asarray(v, float) / ref).tolist() for k, v in out["mse"].items()}
    return out


def pool_curves(curves: list[dict[str, Any]]) -> dict[str, Any]:
    """Several circuits' learning curves (:func:`learning_curve`, same fractions) as one.

    Per fraction and horizon, every arm's MSE pooled over circuits, ``Σ MSE·targets / Σ targets`` (each
    circuit's MSE is in its own normalised units, so ``relative_to_persistence`` is the figure to read),
    the best baseline and its name, and in how many circuits the transfer beats scratch at h1.

    Returns:
      ``fractions``, ``train_frames [circuit][fraction]``, ``mse``, ``best_baseline_mse``,
      ``best_baseline``, ``relative_to_persistence``, ``transfer_beats_scratch_h1 [fraction]``, ``n_folds``.
    """
    arms = [a for a in curves[0]["mse"] if all(a in c["mse"] for c in curves)]
    weights = np.asarray([c["n_targets"] for c in curves], float)  # [circuit, fraction, horizon]
    pooled = {a: (np.asarray([c["mse"][a] for c in curves]) * weights).sum(0) / weights.sum(0) for a in arms}
    baselines = [a for a in arms if a not in ("transfer", "scratch")]
    n_fractions = len(curves[0]["fractions"])
    best = np.min([pooled[a] for a in baselines], axis=0) if baselines else None
    wins = [int(sum(c["mse"]["transfer"][k][0] < c["mse"]["scratch"][k][0] for c in curves))
            for k in range(n_fractions)]
    return {"fractions": curves[0]["fractions"], "train_frames": [c["train_frames"] for c in curves],
            "mse": {a: v.tolist() for a, v in pooled.items()},
            "best_baseline_mse": None if best is None else best.tolist(),
            "best_baseline": [[baselines[i] for i in np.argmin([pooled[a][k] for a in baselines], axis=0)]
                              for k in range(n_fractions)] if baselines else None,
            "relative_to_persistence": ({a: (pooled[a] / pooled["persistence"]).tolist() for a in arms}
                                        if "persistence" in pooled else None),
            "transfer_beats_scratch_h1": wins, "n_folds": len(curves)}


def neuron_features(filter_weight: np.ndarray, part: dict[str, np.ndarray], data: np.ndarray, v: np.ndarray,
                    pairs: np.ndarray) -> np.ndarray:
    """What the fitted model says about each neuron, label-free: ``[N, B + M]`` (NaN rows: unclaimed).

    The first B columns: the neuron's assignment weight per filter, ``Σ_c a[i, c, b]`` (its filter usage,
    summing to one). The last M: the correlation of its recorded activity with each output port of the
    pair (location, filter) that claims it (its role in that filter's dynamics).

    Args:
      filter_weight: ``[N, B]`` assignment weight per filter.
      part: the hard partition (``location``, ``filter`` ``[N]``).
      data: ``[R, N]`` recorded frames (NaN: missing).
      v: ``[R, P, M]`` filter outputs of the ``pairs [P, 2]`` at the same frames.
    """
    n, m = data.shape[1], v.shape[-1]
    loc, filt = np.asarray(part["location"]), np.asarray(part["filter"])
    index = {(int(a), int(b)): k for k, (a, b) in enumerate(np.asarray(pairs).reshape(-1, 2))}
    roles = np.full((n, m), np.nan)
    for i in range(n):
        k = index.get((int(loc[i]), int(filt[i])))
        if k is None:
            continue
        x, ok = data[:, i], np.isfinite(data[:, i])
        if ok.sum() < 3 or np.std(x[ok]) == 0:
            continue
        out = v[ok, k]  # [R', M]
        sd = out.std(0)
        xc = (x[ok] - x[ok].mean()) / x[ok].std()
        roles[i] = np.where(sd > 0, (xc[:, None] * (out - out.mean(0))).mean(0) / np.where(sd > 0, sd, 1.0), 0.0)
    return np.concatenate([np.asarray(filter_weight, float), roles], axis=1)


def kmeans(x: np.ndarray, k: int, *, seed: int = 0, n_init: int = 10, n_iter: int = 100) -> np.ndarray:
    """k-means (k-means++ starts, the best of `n_init` by inertia) of the rows of ``x [n, f]``.

    Returns:
      ``[n]`` cluster labels in ``0..k-1``; deterministic for a seed.
    """
    x = np.asarray(x, float)
    rng = np.random.default_rng(seed)
    k = max(1, min(int(k), len(x)))
    best, best_inertia = np.zeros(len(x), np.int64), np.inf
    for _ in range(n_init):
        centres = [x[rng.integers(len(x))]]
        for _ in range(k - 1):
            d2 = np.min([((x - c) ** 2).sum(1) for c in centres], axis=0)
            p = d2 / d2.sum() if d2.sum() > 0 else np.full(len(x), 1.0 / len(x))
            centres.append(x[rng.choice(len(x), p=p)])
        c = np.asarray(centres)
        for _ in range(n_iter):
            lab = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
            new = np.asarray([x[lab == j].mean(0) if (lab == j).any() else c[j] for j in range(k)])
            if np.allclose(new, c):
                break
            c = new
        inertia = ((x - c[lab]) ** 2).sum()
        if inertia < best_inertia:
            best, best_inertia = lab, inertia
    return best


def cluster_scores(features: np.ndarray, labels: dict[str, np.ndarray], *, seed: int = 0) -> dict[str, Any]:
    """Unsupervised clusters of the neurons against every known labelling.

    For each labelling, over the neurons with a known label ("" or -1: unknown) and finite features:
    k-means of the standardised features with k = the number of distinct labels, and its ARI with them.

    Returns:
      ``name -> {"cluster_ari", "k", "n_scored"}``.
    """
    features = np.asarray(features, float)
    ok = np.isfinite(features).all(1)
    out = {}
    for name, values in labels.items():
        values = np.asarray(values)
        known = ok & ((values != "") if values.dtype.kind in "US" else (values >= 0))
        lab = values[known].astype(str)
        k = len(np.unique(lab))
        if known.sum() < 3 or k < 2:
            continue
        f = features[known]
        sd = f.std(0)
        f = (f - f.mean(0)) / np.where(sd > 0, sd, 1.0)
        out[name] = {"cluster_ari": metrics.adjusted_rand_index(lab, kmeans(f, k, seed=seed)), "k": k,
                     "n_scored": int(known.sum())}
    return out
