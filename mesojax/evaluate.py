"""Evaluation: held-out forecasts against baselines, planted-truth recovery on phantoms, behaviour.

All forecasts are scored by :func:`mesojax.metrics.forecast_metrics` on the held-out test segment (its
pieces: a forecast never crosses a trial boundary), in normalised units (per-neuron z-scores from the training segment), at horizons ``1..config.eval.horizons``.
The fitted model is scored by the same function with its own rollout (:func:`model_rollout`): from a
window of ``warmup + H`` observed frames, fed teacher-forced (building the recurrent filter state from
zero), it forecasts freely with the recorded stimulus. Every forecaster starts at the same frames.

On phantoms the partition is compared with the planted truth: domain ARI against module instances,
Hungarian matching of filters to motif types, and filters in use against the planted K; the same for
the initial parameters of ``config.seed`` (``truth["at_init"]``: what the activity-seeded claims alone
recover, before any training). Any partition
the data knows (cell types, a phantom's instances and motifs, labels a data source passes,
:attr:`mesojax.experiment.Experiment.labels`) is scored against the fitted domains and filters
(:func:`label_scores`), and every forecast keeps its per-neuron entries (:func:`per_neuron_table`).

Example (see ``tests/test_train.py`` for a full run)::

    results, partition = evaluate(config, experiment, params)
    results["forecast"]["model"]["r2"]      # [horizons]
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import scipy.sparse

from mesojax import analysis, assign, baselines, basis, losses, metrics, model, optim, progress, readout
from mesojax.experiment import Experiment, init_params, segment_stimulus, segment_traces

MODEL_KEYS = ("model", "model_hard")
"""Forecast entries of the fitted model: the evaluated model (its architectures as trained: hard after a
hard phase, else soft at the final temperature), and its discretised copy (the same when hard)."""


def final_temperatures(config: ml_collections.ConfigDict) -> model.Temperatures:
    """The switch temperatures at the end of training (evaluation uses the annealed model)."""
    return optim.temperatures(config.anneal, config.train.steps)


def model_rollout(spec: model.ModelSpec, params: tuple, window: jax.Array, exog: jax.Array,
                  n_steps: int) -> jax.Array:
    """Forecast `n_steps` frames after `window` with the fitted model (a :func:`metrics.forecast_metrics` rollout).

    The window (``warmup + H`` observed frames) is fed teacher-forced, building the recurrent filter
    state from zero; the forecast then runs free, with the recorded stimulus.

    Args:
      spec: the model spec (the static ``step`` argument of :func:`metrics.forecast_metrics`).
      params: ``(model params, context, inputs, temperatures)``.
      window: ``[W, N]`` observed frames.
      exog: ``[W + n_steps, S]`` stimulus.

    Returns:
      ``[n_steps, N]`` predictions of the frames after the window.
    """
    model_params, ctx, inputs, temps = params
    x = jnp.concatenate([window, jnp.zeros((n_steps, window.shape[1]), window.dtype)], axis=0)
    outs, _ = model.rollout(spec, model_params, inputs, ctx, x, exog, temps,
                            n_teacher=window.shape[0] - spec.history)
    return outs.x_next[-n_steps:]


def validation_mse(config: ml_collections.ConfigDict, exp: Experiment, params: model.Params) -> float:
    """Forecast MSE on the validation segment, averaged over horizons ``1..eval.horizons``.

    The model is scored as it will be evaluated (final temperatures, ``eval.warmup`` teacher-forced
    frames), from every ``train.val_stride``-th start. Used to select the checkpoint and stop early
    (``train.val_every``).
    """
    out = _model_forecasts(config, exp, params, segment_traces(exp, "val"), segment_stimulus(exp, "val"),
                           config.train.val_stride)
    return float(np.mean(out["mse"]))


def _model_forecasts(config: ml_collections.ConfigDict, exp: Experiment, params: model.Params,
                     x: list[np.ndarray], stim: list[np.ndarray], stride: int) -> dict[str, np.ndarray]:
    """:func:`metrics.forecast_metrics` of the model over a segment's pieces ``[T_p, N]``: final temperatures,
    ``eval.warmup`` teacher-forced frames, horizons ``1..eval.horizons``, every ``stride``-th start.

    Missing inputs are filled with 0 (the training mean in normalised units); NaN targets are masked.
    """
    spec, inputs = exp.spec, exp.inputs
    temps = final_temperatures(config)
    return metrics.forecast_metrics(
        spec, (params, context(spec, params, inputs, temps), inputs, temps), x,
        history=config.eval.warmup + spec.history, horizons=range(1, config.eval.horizons + 1), stride=stride,
        exog=stim, rollout=model_rollout, fill=np.zeros(spec.n_neurons, np.float32),
    )


def connectome_mask(exp: Experiment) -> scipy.sparse.csr_matrix:
    """``mask[i, j]`` = neuron j synapses onto neuron i (the masked VAR's allowed inputs), sparse ``[N, N]``."""
    return scipy.sparse.csr_matrix(exp.connectome.weighted().T > 0)


def group_columns(exp: Experiment) -> list[np.ndarray]:
    """The neuron columns of every group (animal) of the experiment's circuit, in group order."""
    return [np.flatnonzero(exp.neuron_group == g) for g in range(len(exp.group_names))]


def fit_baselines(config: ml_collections.ConfigDict, exp: Experiment, train_x: list[np.ndarray],
                  columns: np.ndarray | None = None, timings: progress.Timings | None = None) -> dict[str, tuple]:
    """Fit every configured baseline on the normalised training traces: ``name -> (forecaster, params)``.

    Autoregressive baselines see as many frames as the model's input (order / history ``H``).

    Args:
      train_x: the training segment's pieces ``[T_p, N]`` (:func:`mesojax.experiment.segment_traces`); no
        training pair joins two pieces.
      columns: the neurons to fit on (default: all). Baselines of a disjoint union are fitted per group,
        so that no baseline weight joins two independent animals.
      timings: records each fit's duration under ``fit <name>`` (:mod:`mesojax.progress`).
    """
    out = {}
    h = exp.spec.history
    cols = np.arange(train_x[0].shape[1]) if columns is None else np.asarray(columns)
    for name in config.eval.baselines:
        opts: dict[str, Any] = {}
        if name in ("ar", "ridge_var", "masked_var"):
            opts["order"] = h
        if name == "masked_var":
            opts["mask"] = connectome_mask(exp)[cols][:, cols]
        if name == "mlp":
            opts.update(history=h, steps=config.eval.mlp_steps, seed=config.seed)
        forecaster = baselines.make_baseline(name, **opts)
        with progress.phase(f"fit {name}", timings):  # summed over the groups of a union
            # Blocked on: jax returns before a jitted fit (the MLP's) has run, and its time would land
            # in the next phase.
            out[name] = (forecaster, jax.block_until_ready(forecaster.fit([x[:, cols] for x in train_x])))
    return out


_PER_NEURON = ("mse_per_neuron", "r2_per_neuron", "sse_per_neuron", "sst_per_neuron", "count_per_neuron")


def _merge_columns(parts: list[tuple[np.ndarray, dict]], n: int) -> dict[str, np.ndarray]:
    """Forecast metrics of column subsets (one :func:`metrics.forecast_metrics` run each) as one result."""
    first = parts[0][1]
    merged = {k: np.full((len(first["horizons"]), n), np.nan) for k in _PER_NEURON}
    for cols, m in parts:
        for k in _PER_NEURON:
            merged[k][:, cols] = m[k]
    merged.update(horizons=first["horizons"], n_starts=first["n_starts"])
    return dict(metrics.pool_neurons(merged, np.arange(n)), **merged)


@functools.partial(jax.jit, static_argnums=0)
def context(spec: model.ModelSpec, params: model.Params, inputs: model.ModelInputs,
            temps: model.Temperatures) -> model.Context:
    """:func:`mesojax.model.context`, jitted with the inputs as arguments (never baked-in constants)."""
    return model.context(spec, params, inputs, temps)


@functools.partial(jax.jit, static_argnums=0)
def one_step_predictions(spec: model.ModelSpec, params: model.Params, inputs: model.ModelInputs,
                         temps: model.Temperatures, x: jax.Array, stim: jax.Array) -> model.Step:
    """Teacher-forced one-step predictions over a segment ``x [T, N]``: ``x_next[r]`` predicts ``x[H + r]``."""
    ctx = model.context(spec, params, inputs, temps)
    return model.rollout(spec, params, inputs, ctx, x, stim, temps, n_teacher=x.shape[0])[0]


def responses(config: ml_collections.ConfigDict, exp: Experiment, params: model.Params, segment: str,
              pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The model's responses over a segment, piece by piece (for :mod:`mesojax.analysis`).

    Args:
      pairs: ``[P, 2]`` (location, filter) pairs whose filter outputs are kept (e.g. the pairs that
        claim neurons, :func:`mesojax.analysis.claimed_pairs`; all ``L·B`` would not fit at scale).

    Returns:
      ``(recorded [R, N], predicted [R, N], filter outputs [R, P, M], frame [R])``: the recorded
      ``x[t+1]`` (NaN kept), the model's teacher-forced one-step forecast of it, the pairs' filter
      outputs at that step, and the row's frame in the segment's pieces joined.
    """
    pairs = jnp.asarray(np.asarray(pairs, np.int32).reshape(-1, 2))
    spec, inputs = exp.spec, exp.inputs
    temps = final_temperatures(config)
    ctx = context(spec, params, inputs, temps)
    rows: dict[str, list] = {"data": [], "pred": [], "v": [], "frame": []}
    offset, h = 0, spec.history
    for x, stim in zip(segment_traces(exp, segment), segment_stimulus(exp, segment)):
        if len(x) > h:
            rows["data"].append(x[h:])
            rows["pred"].append(piece_predictions(spec, params, inputs, temps, x, stim).x_next)
            v = _filter_outputs(spec, params, inputs, ctx, *_bucketed(x, stim), temps, pairs)
            rows["v"].append(np.asarray(v)[:len(x) - h])
            rows["frame"].append(offset + np.arange(h, len(x)))
        offset += len(x)
    return tuple(np.concatenate(v) for v in (rows["data"], rows["pred"], rows["v"], rows["frame"]))


_filter_outputs = jax.jit(model.filter_outputs, static_argnums=0)


# Pieces (trials) are padded to a multiple of this many frames before a teacher-forced pass, so that
# trials of many different lengths share a few compiled programs instead of one each.
_PIECE_BUCKET = 128


def _bucketed(x: np.ndarray, stim: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """``x`` (NaN as 0) and ``stim`` zero-padded at the end to a multiple of `_PIECE_BUCKET` frames. A
    teacher-forced pass is causal, so its first rows are those of the unpadded piece."""
    t = len(x)
    pad = -t % _PIECE_BUCKET
    x = np.pad(np.nan_to_num(np.asarray(x, np.float32)), ((0, pad), (0, 0)))
    stim = np.pad(np.asarray(stim, np.float32), ((0, pad), (0, 0)))
    return jnp.asarray(x), jnp.asarray(stim)


def piece_predictions(spec: model.ModelSpec, params: model.Params, inputs: model.ModelInputs,
                      temps: model.Temperatures, x: np.ndarray, stim: np.ndarray) -> model.Step:
    """:func:`one_step_predictions` over one piece ``x [T, N]`` (NaN as 0), as numpy with ``T - H`` rows;
    the piece is padded to a length bucket so that pieces of any length reuse a few compilations."""
    outs = one_step_predictions(spec, params, inputs, temps, *_bucketed(x, stim))
    rows = len(x) - spec.history
    return model.Step(np.asarray(outs.x_next)[:rows], np.asarray(outs.pair_pred), np.asarray(outs.behaviour)[:rows],
                      np.asarray(outs.mode_logits)[:rows])


def partition(spec: model.ModelSpec, params: model.Params, inputs: model.ModelInputs,
              temps: model.Temperatures) -> dict[str, np.ndarray]:
    """Hard partition and filter usage: ``location, filter, confidence [N]``, ``usage [B]``, and each
    neuron's assignment weight per filter ``filter_weight [N, B]``."""
    a = assign.assignment(spec.assign, params.assign, inputs.assign, temps.assign)
    loc, filt, conf = assign.hard_partition(a, inputs.assign)
    return {
        "location": np.asarray(loc), "filter": np.asarray(filt), "confidence": np.asarray(conf),
        "usage": np.asarray(losses.usage(a)), "filter_weight": np.asarray(a.sum(1)),
    }


INIT_KEYS = ("domain_ari", "motif_accuracy", "filters_used")
"""The recovery scores also given for the initial parameters (``truth["at_init"]``, ``eval.recovery_at_init``)."""


def truth_recovery(part: dict[str, np.ndarray], truth: Any, n_filters: int) -> dict[str, Any]:
    """Domain ARI vs planted instances, Hungarian filter↔motif match, filters used vs planted K."""
    domain = part["location"].astype(np.int64) * n_filters + part["filter"]
    match = metrics.match_filters_to_motifs(part["filter"], truth.motif)
    used = metrics.filters_used(np.bincount(part["filter"][part["filter"] >= 0], minlength=n_filters).astype(float))
    planted_k = int(len(np.unique(truth.motif)))
    return {
        "domain_ari": metrics.adjusted_rand_index(truth.instance, domain),
        "motif_accuracy": match.accuracy,
        "motif_all_distinct": match.all_distinct,
        "motif_assignment": {str(truth.motif_names[int(m)]): int(f) for m, f in zip(match.motifs, match.assignment)},
        "motif_purity": match.purity.tolist(),
        "filters_used": used.n_used,
        "planted_k": planted_k,
        "n_domains": int(len(np.unique(domain))),
        "n_instances": int(len(np.unique(truth.instance))),
    }


def label_scores(part: dict[str, np.ndarray], labels: dict[str, np.ndarray], n_filters: int,
                 max_contingency: int = 200) -> dict[str, Any]:
    """The fitted domains and filters scored against each known partition of the neurons.

    For every labelling (cell types, planted instances, anatomical columns, ...) over the neurons whose
    label is known ("" or -1 = unknown) and that a domain claims: ARI of the domains
    (location, filter pairs) and ARI of the filters against the labels, and the contingency table of
    filters against labels (``label -> neurons per filter``; left out beyond `max_contingency` labels).

    Args:
      part: :func:`partition`'s output (``location``, ``filter`` ``[N]``; -1 = unclaimed).
      labels: ``name -> [N]`` labels.
      n_filters: B.

    Returns:
      ``name -> {"domain_ari", "filter_ari", "n_labels", "n_scored", "contingency"}``.
    """
    out = {}
    claimed = (part["location"] >= 0) & (part["filter"] >= 0)
    domain = part["location"].astype(np.int64) * n_filters + part["filter"]
    for name, values in labels.items():
        values = np.asarray(values)
        known = claimed & ((values != "") if values.dtype.kind in "US" else (values >= 0))
        if known.sum() < 2:
            continue
        lab = values[known].astype(str)
        entry: dict[str, Any] = {
            "domain_ari": metrics.adjusted_rand_index(lab, domain[known]),
            "filter_ari": metrics.adjusted_rand_index(lab, part["filter"][known]),
            "n_labels": int(len(np.unique(lab))), "n_scored": int(known.sum()),
        }
        if entry["n_labels"] <= max_contingency:
            filt = part["filter"][known]
            entry["contingency"] = {
                str(v): np.bincount(filt[lab == v], minlength=n_filters).tolist() for v in np.unique(lab)}
        out[name] = entry
    return out


def per_neuron(forecast: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
    """Per-neuron forecast scores of every forecaster: ``name -> {"mse", "r2"}``, each ``[K, N]``
    (horizons × neurons; NaN where a neuron has no scored target)."""
    return {name: {"mse": np.asarray(m["mse_per_neuron"]), "r2": np.asarray(m["r2_per_neuron"])}
            for name, m in forecast.items()}


def _binary(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    return bool(finite.size) and bool(np.isin(finite, (0.0, 1.0)).all())


def _behaviour_table(names: list[str], truth: np.ndarray, pred: dict[str, np.ndarray],
                     raw: Any, labels: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """R² pooled over targets and per target for each predictor; balanced accuracy of 0/1 targets.

    A 0/1 target's label is ``prediction ≥ 0.5`` (raw units) unless `labels` gives a predictor's own
    ``[T, K]`` labels (the state readout's balanced thresholds).
    """
    labels = labels or {}
    out: dict[str, Any] = {f"{who}_r2": float(metrics.r2_score(truth, p)) for who, p in pred.items()}
    per = {}
    for k, name in enumerate(names):
        entry = {f"{who}_r2": float(metrics.r2_score(truth[:, k], p[:, k])) for who, p in pred.items()}
        if raw is not None and _binary(raw[0][:, k]):  # a 0/1 target (e.g. reversal)
            mean, std, true01 = raw[1][k], raw[2][k], raw[0][:, k]
            known = np.isfinite(true01)
            for who, p in pred.items():
                own = labels[who][:, k] if who in labels else None
                # A target 0/1 here but not in the training rows has no threshold: the 0.5 rule applies.
                label = own if own is not None and np.isfinite(own).all() else (p[:, k] * std + mean >= 0.5)
                entry[f"{who}_balanced_accuracy"] = metrics.balanced_accuracy(
                    true01[known].astype(int), np.asarray(label)[known].astype(int))
        per[name] = entry
    out["targets"] = per
    return out


class _Rows(NamedTuple):
    """A segment's frames as behaviour rows, piece by piece and joined (no row pairs two trials).

    Model rows are ``t = H-1 .. T_p-2`` of every piece (the model needs H frames); decoder rows are
    ``t = 0 .. T_p-2``. Every row pairs ``x[t]`` with what happens at ``t + 1``.
    """

    x_now: np.ndarray  # [R, N] x[t], NaN as 0 (the training mean)
    x_next: np.ndarray | None  # [R, N] the model's one-step forecast of x[t+1] (None: not computed)
    behaviour: np.ndarray | None  # [R, Kc] the f* readout's prediction of behaviour[t+1]
    mode_logits: np.ndarray | None  # [R, n_modes]
    raw: np.ndarray | None  # [R, Kc] raw behaviour at t+1
    modes: np.ndarray | None  # [R] mode at t+1
    dec_x: np.ndarray  # [R', N] decoder rows x[t]
    dec_raw: np.ndarray | None  # [R', Kc] raw behaviour at t+1
    dec_modes: np.ndarray | None  # [R'] mode at t+1
    all_raw: np.ndarray | None  # [T_seg, Kc] every raw behaviour frame of the segment


def _behaviour_rows(exp: Experiment, params: model.Params, temps: model.Temperatures, segment: str,
                    x_pieces: list[np.ndarray], predict: bool) -> _Rows:
    rec, spec, h = exp.recording, exp.spec, exp.spec.history
    parts: dict[str, list] = {k: [] for k in _Rows._fields}
    for (a, b), x, stim in zip(exp.segments[segment], x_pieces, segment_stimulus(exp, segment)):
        x = np.nan_to_num(x)
        if len(x) > h:
            parts["x_now"].append(x[h - 1:-1])
            if predict:
                outs = piece_predictions(spec, params, exp.inputs, temps, x, stim)
                parts["x_next"].append(outs.x_next)
                parts["behaviour"].append(outs.behaviour)
                parts["mode_logits"].append(outs.mode_logits)
            if spec.n_behaviour:
                parts["raw"].append(np.asarray(rec.behaviour[a + h:b], np.float64))
            if spec.n_modes:
                parts["modes"].append(rec.modes[a + h:b])
        if len(x) > 1:
            parts["dec_x"].append(x[:-1])
            if spec.n_behaviour:
                parts["dec_raw"].append(np.asarray(rec.behaviour[a + 1:b], np.float64))
            if spec.n_modes:
                parts["dec_modes"].append(rec.modes[a + 1:b])
        if spec.n_behaviour:
            parts["all_raw"].append(np.asarray(rec.behaviour[a:b], np.float64))
    return _Rows(**{k: np.concatenate(v) if v else None for k, v in parts.items()})


def behaviour_scores(exp: Experiment, params: model.Params, temps: model.Temperatures,
                     train_x: list[np.ndarray], series: dict[str, Any] | None = None) -> dict[str, Any]:
    """The model's behaviour forecasts on the test segment vs a decoder with the same information.

    `train_x` is the normalised training segment's pieces (NaN allowed). The model predicts behaviour
    at t+1 from the neurons up to t: with ``spec.behaviour_readout == "pooled"`` its ``f*`` readout, with
    ``"state"`` the closed-form readout of the current state and its predicted change ``x̂[t+1] - x[t]``
    (:mod:`mesojax.readout`), fitted here on the training segment's one-step forecasts. The reference
    ridge (continuous) / LDA (modes) decoder maps ``x[t] -> behaviour[t+1]`` from the same group's
    neurons, fitted on the training segment. Both are scored on the same test frames: R² pooled over
    targets (``model_r2``, ``linear_decoder_r2``) and per target (``targets``), with balanced accuracy for
    0/1 targets (the decoder's label is a prediction ≥ 0.5; the state readout's is its balanced
    threshold). No row pairs frames of two trials. A disjoint union also gets the same per group under
    ``groups``. A `series` dict, when given, receives the scored test rows of the continuous targets
    (normalised units): ``names``, ``truth``, ``model`` and ``linear_decoder``, each ``[R, Kc]``.
    """
    norm, spec = exp.norm, exp.spec
    if spec.n_behaviour == 0 and spec.n_modes == 0:
        return {}
    test = _behaviour_rows(exp, params, temps, "test", segment_traces(exp, "test"), predict=True)
    groups = [(cols, np.flatnonzero(exp.behaviour_group == g)) for g, cols in enumerate(group_columns(exp))]
    state = spec.behaviour_readout == "state"
    result: dict[str, Any] = {"readout": spec.behaviour_readout}
    train = _behaviour_rows(exp, params, temps, "train", train_x, predict=state)
    if state:
        binary = (np.array([_binary(train.all_raw[:, k]) for k in range(spec.n_behaviour)])
                  if spec.n_behaviour else None)
        ro = readout.fit(
            train.x_next, train.x_now,
            (train.raw - norm.beh_mean) / norm.beh_std if spec.n_behaviour else None,
            columns=[c for c, _ in groups], targets=[k for _, k in groups], binary=binary,
            modes=train.modes if spec.n_modes else None,
            binary_truth=train.raw if spec.n_behaviour else None)
        test_state = test.x_next, test.x_now
    if spec.n_behaviour:
        beh = (test.raw - norm.beh_mean) / norm.beh_std
        train_beh = (train.dec_raw - norm.beh_mean) / norm.beh_std
        decoded = np.full(beh.shape, np.nan)
        for cols, ks in groups:
            if ks.size:
                dec = metrics.linear_decoder(train.dec_x[:, cols], train_beh[:, ks])
                decoded[:, ks] = metrics.decode(dec, test.x_now[:, cols])
        labels = {}
        if state:
            pred = {"model": readout.predict(ro, *test_state), "linear_decoder": decoded}
            labels["model"] = readout.predict_labels(ro, *test_state)
        else:
            pred = {"model": test.behaviour, "linear_decoder": decoded}
        names = list(exp.recording.behaviour_names)
        raw = (test.raw, norm.beh_mean, norm.beh_std)
        result.update(_behaviour_table(names, beh, pred, raw, labels))
        if series is not None:
            series.update(names=names, truth=beh, **{who: np.asarray(p) for who, p in pred.items()})
        if len(groups) > 1:
            result["groups"] = {
                exp.group_names[g]: _behaviour_table(
                    [names[k] for k in ks], beh[:, ks], {w: p[:, ks] for w, p in pred.items()},
                    (raw[0][:, ks], raw[1][ks], raw[2][ks]), {w: lab[:, ks] for w, lab in labels.items()})
                for g, (_, ks) in enumerate(groups) if ks.size
            }
    if spec.n_modes:
        modes = test.modes
        known = modes >= 0
        dec = metrics.linear_decoder(train.dec_x, train.dec_modes, discrete=True)
        model_modes = (readout.predict_modes(ro, *test_state) if state
                       else np.argmax(test.mode_logits, -1))
        for name, pred_modes in (("model", model_modes), ("linear_decoder", metrics.decode(dec, test.x_now))):
            result[f"{name}_mode_accuracy"] = metrics.accuracy(modes[known], pred_modes[known])
            result[f"{name}_mode_balanced_accuracy"] = metrics.balanced_accuracy(modes[known], pred_modes[known])
    return result


def forecasts(config: ml_collections.ConfigDict, exp: Experiment, params: model.Params,
              fitted: list[dict[str, tuple]], timings: progress.Timings | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Held-out forecast metrics of the model (soft and discretised) and of the `fitted` baselines.

    Every forecaster is scored from the same start frames: baselines skip the model's extra warm-up.

    Args:
      fitted: per group (:func:`group_columns`), the :func:`fit_baselines` of its columns.
      timings: records each forecaster's duration under ``forecast <name>``.

    Returns:
      ``name -> metrics.forecast_metrics(...)`` over all neurons (per-neuron entries included, so any
      subset can be pooled with :func:`metrics.pool_neurons`), for :data:`MODEL_KEYS` and every baseline.
    """
    test_x, test_stim = segment_traces(exp, "test"), segment_stimulus(exp, "test")
    horizons = range(1, config.eval.horizons + 1)
    window = config.eval.warmup + exp.spec.history
    forecast = {}
    # The discretised model runs the fixed-architecture bank (only its chosen parts); when the
    # architecture is already hard (a hard phase, a transferred hard basis) it is the model itself.
    fixed = dataclasses.replace(exp, spec=model.with_fixed_arch(exp.spec, params.arch))
    with progress.phase("forecast model_hard", timings):
        hard = _model_forecasts(config, fixed, params._replace(arch=basis.discretize(params.arch)), test_x,
                                test_stim, config.eval.stride)
    if basis.is_hard(params.arch):
        soft = hard
    else:
        with progress.phase("forecast model", timings):
            soft_exp = dataclasses.replace(exp, spec=model.with_fixed_arch(exp.spec, None))
            soft = _model_forecasts(config, soft_exp, params, test_x, test_stim, config.eval.stride)
    forecast = {"model": soft, "model_hard": hard}
    columns = group_columns(exp)
    for name in fitted[0]:
        with progress.phase(f"forecast {name}", timings):
            forecast[name] = _baseline_forecasts(config, name, fitted, columns, test_x, window, horizons)
    return forecast


def _baseline_forecasts(config: ml_collections.ConfigDict, name: str, fitted: list[dict[str, tuple]],
                        columns: list[np.ndarray], test_x: list[np.ndarray], window: int,
                        horizons: range) -> dict[str, np.ndarray]:
    """One baseline's forecast metrics over every group, from the model's start frames."""
    parts = []
    for cols, group_fitted in zip(columns, fitted):
        forecaster, bparams = group_fitted[name]
        skip = window - forecaster.history
        if skip < 0:
            raise ValueError(f"eval config: field 'warmup' = {config.eval.warmup} gives the model a shorter "
                             f"window than baseline {name!r} needs ({forecaster.history} frames)")
        parts.append((cols, metrics.forecast_metrics(
            forecaster.step, bparams, [x[skip:, cols] for x in test_x], history=forecaster.history,
            horizons=horizons, stride=config.eval.stride,
        )))
    return _merge_columns(parts, test_x[0].shape[1])


def _forecast_table(forecast: dict[str, dict], columns: np.ndarray | None = None) -> dict[str, Any]:
    """JSON-ready pooled forecast metrics (over `columns`, default all) and whether the model beats
    every baseline by MSE at each horizon."""
    keys = ("horizons", "mse", "r2", "r2_median", "n_starts", "n_targets")
    pooled = {n: (m if columns is None else metrics.pool_neurons(m, columns)) for n, m in forecast.items()}
    table = {n: {k: np.asarray(v).tolist() for k, v in m.items() if k in keys} for n, m in pooled.items()}
    others = [n for n in pooled if n not in MODEL_KEYS]
    beats = {str(h): bool(all(pooled["model"]["mse"][k] < pooled[n]["mse"][k] for n in others))
             for k, h in enumerate(np.asarray(pooled["model"]["horizons"]).tolist())}
    return {"forecast": table, "beats_all_baselines": beats}


def evaluate(config: ml_collections.ConfigDict, exp: Experiment, params: model.Params,
             timings: progress.Timings | None = None) -> tuple[dict[str, Any], dict]:
    """Every evaluation of the fitted model (see the module docstring).

    A disjoint union of several animals is also scored per animal under ``groups`` (forecasts pooled
    over that animal's neurons; its behaviour), with baselines fitted per animal throughout. Each phase
    (every baseline's fit and forecasts, behaviour) is logged and timed into `timings`.

    Returns:
      ``(results, partition)``: a JSON-ready dict, and the per-neuron results: the hard partition of
      :func:`partition` plus ``per_neuron`` (:func:`per_neuron`, every forecaster's ``[K, N]`` scores),
      ``horizons`` ``[K]`` and, with continuous behaviour, ``behaviour`` (the test series of
      :func:`behaviour_scores`).
    """
    spec, inputs = exp.spec, exp.inputs
    temps = final_temperatures(config)
    train_x = segment_traces(exp, "train")  # read once: baselines and the behaviour decoder
    columns = group_columns(exp)
    fitted = [fit_baselines(config, exp, train_x, cols, timings) for cols in columns]
    forecast = forecasts(config, exp, params, fitted, timings)
    results: dict[str, Any] = dict(_forecast_table(forecast))
    part = partition(spec, params, inputs, temps)
    results["partition"] = {"usage": part["usage"].tolist(), "n_filters": spec.n_filters}
    if exp.truth is not None:
        results["truth"] = truth_recovery(part, exp.truth, spec.n_filters)
    if exp.truth is not None and config.eval.get("recovery_at_init", True):
        # Was the answer decided at initialisation (by the activity-seeded claims) or found by training?
        with progress.phase("recovery at initialisation", timings):
            initial = partition(spec, init_params(config, exp), inputs, temps)
            at_init = truth_recovery(initial, exp.truth, spec.n_filters)
        results["truth"]["at_init"] = {k: at_init[k] for k in INIT_KEYS}
    if exp.labels:
        results["labels"] = label_scores(part, exp.labels, spec.n_filters)
    part["per_neuron"] = per_neuron(forecast)
    part["horizons"] = np.asarray(forecast["model"]["horizons"])
    with progress.phase("behaviour", timings):
        series: dict[str, Any] = {}
        results["behaviour"] = behaviour_scores(exp, params, temps, train_x, series)
        if series:
            part["behaviour"] = series
    clusters = bool(results.get("labels")) and config.eval.get("clusters", True)
    if config.eval.get("rsa", True) or clusters:
        with progress.phase("responses", timings):
            pairs = analysis.claimed_pairs(part)
            test_responses = responses(config, exp, params, "test", pairs)
        if config.eval.get("rsa", True):
            with progress.phase("representational similarity", timings):
                results["rsa"] = analysis.model_rsa(exp, part, test_responses)
        if clusters:
            with progress.phase("clustering", timings):
                features = analysis.neuron_features(part["filter_weight"], part, test_responses[0],
                                                    test_responses[2], pairs)
                for name, scores in analysis.cluster_scores(features, exp.labels, seed=config.seed).items():
                    results["labels"].setdefault(name, {}).update(scores)
    if len(columns) > 1:
        results["groups"] = {
            exp.group_names[g]: dict(_forecast_table(forecast, cols),
                                     behaviour=results["behaviour"].get("groups", {}).get(exp.group_names[g], {}))
            for g, cols in enumerate(columns)
        }
    return results, part


def best_baseline(forecast: dict[str, dict], k: int) -> str:
    """The baseline (not one of :data:`MODEL_KEYS`) with the lowest MSE at horizon index `k` of a forecast
    table (``results["forecast"]``)."""
    return min((n for n in forecast if n not in MODEL_KEYS), key=lambda n: forecast[n]["mse"][k])


def summary(results: dict[str, Any]) -> str:
    """The run's result as a short table: per horizon, the model's test MSE against the best baseline's
    (``model/best`` < 1: the model wins), and on phantoms the recovery of the planted truth.

    Example output::

        h   model MSE  best baseline   its MSE  model/best
        1      0.2121  masked_var       0.2139       0.992
        ...
        domain ARI 0.998, motif accuracy 1.000, filters used 4 (planted 4)
    """
    fc = results["forecast"]
    lines = [f"{'h':>3}  {'model MSE':>9}  {'best baseline':<14}  {'its MSE':>8}  {'model/best':>10}"]
    for k, h in enumerate(fc["model"].get("horizons", range(1, len(fc["model"]["mse"]) + 1))):
        best = best_baseline(fc, k)
        model_mse, best_mse = fc["model"]["mse"][k], fc[best]["mse"][k]
        lines.append(f"{int(h):>3}  {model_mse:>9.4f}  {best:<14}  {best_mse:>8.4f}  {model_mse / best_mse:>10.3f}")
    if "truth" in results:
        t = results["truth"]
        lines.append(f"domain ARI {t['domain_ari']:.3f}, motif accuracy {t['motif_accuracy']:.3f}, "
                     f"filters used {t['filters_used']} (planted {t['planted_k']})")
        if "at_init" in t:
            i = t["at_init"]
            lines.append(f"at initialisation: domain ARI {i['domain_ari']:.3f}, motif accuracy "
                         f"{i['motif_accuracy']:.3f}, filters used {i['filters_used']}")
    return "\n".join(lines)