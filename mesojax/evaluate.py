"""Evaluation: held-out forecasts against baselines, planted-truth recovery on phantoms, behaviour.

All forecasts are scored by :func:`mesojax.metrics.forecast_metrics` on the held-out test segment, in
normalised units (per-neuron z-scores from the training segment), at horizons ``1..config.eval.horizons``.
The fitted model is scored by the same function with its own rollout (:func:`model_rollout`): from a
window of ``warmup + H`` observed frames, fed teacher-forced (building the recurrent filter state from
zero), it forecasts freely with the recorded stimulus. Every forecaster starts at the same frames.

On phantoms the partition is compared with the planted truth: domain ARI against module instances,
Hungarian matching of filters to motif types, and filters in use against the planted K.

Example (see ``tests/test_train.py`` for a full run)::

    results, partition = evaluate(config, experiment, params)
    results["forecast"]["model"]["r2"]      # [horizons]
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mesojax import assign, baselines, basis, losses, metrics, model, optim

MODEL_KEYS = ("model", "model_hard")
"""Forecast entries of the fitted model: soft architecture at the final temperature, and discretised."""


def normalised_traces(exp: Any, segment: str) -> np.ndarray:
    """The recording's traces over a time segment, z-scored with the training statistics (NaN kept)."""
    t0, t1 = exp.segments[segment]
    return (np.asarray(exp.recording.traces[t0:t1], np.float32) - exp.norm.mean) / exp.norm.std


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


def stimulus(exp: Any, segment: str) -> np.ndarray:
    """The stimulus over a time segment ``[T_seg, S]`` (``S = 0`` without stimulus)."""
    t0, t1 = exp.segments[segment]
    rec = exp.recording
    return (rec.stimulus[t0:t1] if rec.stimulus is not None else np.zeros((t1 - t0, 0))).astype(np.float32)


def connectome_mask(exp: Any) -> np.ndarray:
    """``mask[i, j]`` = neuron j synapses onto neuron i (the masked VAR's allowed inputs)."""
    return np.asarray(exp.connectome.weighted().toarray().T > 0)


def fit_baselines(config: ml_collections.ConfigDict, exp: Any, train_x: np.ndarray) -> dict[str, tuple]:
    """Fit every configured baseline on the normalised training traces: ``name -> (forecaster, params)``.

    Autoregressive baselines see as many frames as the model's input (order / history ``H``).
    """
    out = {}
    h = exp.spec.history
    for name in config.eval.baselines:
        opts: dict[str, Any] = {}
        if name in ("ar", "ridge_var", "masked_var"):
            opts["order"] = h
        if name == "masked_var":
            opts["mask"] = connectome_mask(exp)
        if name == "mlp":
            opts.update(history=h, steps=config.eval.mlp_steps, seed=config.seed)
        forecaster = baselines.make_baseline(name, **opts)
        out[name] = (forecaster, forecaster.fit(train_x))
    return out


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


def partition(spec: model.ModelSpec, params: model.Params, inputs: model.ModelInputs,
              temps: model.Temperatures) -> dict[str, np.ndarray]:
    """Hard partition and filter usage: ``location, filter, confidence [N]``, ``usage [B]``."""
    a = assign.assignment(spec.assign, params.assign, inputs.assign, temps.assign)
    loc, filt, conf = assign.hard_partition(a, inputs.assign)
    return {
        "location": np.asarray(loc), "filter": np.asarray(filt), "confidence": np.asarray(conf),
        "usage": np.asarray(losses.usage(a)),
    }


def truth_recovery(part: dict[str, np.ndarray], truth: Any, n_filters: int) -> dict[str, Any]:
    """Domain ARI vs planted instances, Hungarian filter↔motif match, filters used vs planted K."""
    domain = part["location"].astype(np.int64) * n_filters + part["filter"]
    match = metrics.match_filters_to_motifs(part["filter"], truth.motif)
    used = metrics.filters_used(np.bincount(part["filter"], minlength=n_filters).astype(float))
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


def behaviour_scores(exp: Any, params: model.Params, temps: model.Temperatures,
                     train_x: np.ndarray) -> dict[str, Any]:
    """The readout's behaviour forecasts on the test segment vs a decoder with the same information.

    `train_x` is the normalised training segment (NaN allowed). The model predicts behaviour at t+1
    from the neurons up to t; the reference ridge (continuous) /
    LDA (modes) decoder maps ``x[t] -> behaviour[t+1]``, fitted on the training segment. Both are scored
    on the same test frames.
    """
    rec, norm, spec = exp.recording, exp.norm, exp.spec
    if spec.n_behaviour == 0 and spec.n_modes == 0:
        return {}
    h = spec.history
    (t0, t1), (tr0, tr1) = exp.segments["test"], exp.segments["train"]
    x = np.nan_to_num(normalised_traces(exp, "test"))
    outs = one_step_predictions(spec, params, exp.inputs, temps, jnp.asarray(x), jnp.asarray(stimulus(exp, "test")))
    train_x = np.nan_to_num(train_x)
    result: dict[str, Any] = {}
    if spec.n_behaviour:
        beh = (rec.behaviour[t0:t1] - norm.beh_mean) / norm.beh_std
        train_beh = (rec.behaviour[tr0:tr1] - norm.beh_mean) / norm.beh_std
        dec = metrics.linear_decoder(train_x[:-1], train_beh[1:])
        result["model_r2"] = float(metrics.r2_score(beh[h:], np.asarray(outs.behaviour)))
        result["linear_decoder_r2"] = float(metrics.r2_score(beh[h:], metrics.decode(dec, x[h - 1:-1])))
    if spec.n_modes:
        modes = rec.modes[t0:t1][h:]
        known = modes >= 0
        dec = metrics.linear_decoder(train_x[:-1], rec.modes[tr0 + 1:tr1], discrete=True)
        for name, pred in (("model", np.asarray(jnp.argmax(outs.mode_logits, -1))),
                           ("linear_decoder", metrics.decode(dec, x[h - 1:-1]))):
            result[f"{name}_mode_accuracy"] = metrics.accuracy(modes[known], pred[known])
            result[f"{name}_mode_balanced_accuracy"] = metrics.balanced_accuracy(modes[known], pred[known])
    return result


def forecasts(config: ml_collections.ConfigDict, exp: Any, params: model.Params,
              fitted: dict[str, tuple]) -> dict[str, dict[str, np.ndarray]]:
    """Held-out forecast metrics of the model (soft and discretised) and of the `fitted` baselines.

    Every forecaster is scored from the same start frames: baselines skip the model's extra warm-up.

    Returns:
      ``name -> metrics.forecast_metrics(...)`` for :data:`MODEL_KEYS` and every baseline.
    """
    spec, inputs = exp.spec, exp.inputs
    temps = final_temperatures(config)
    test_x, test_stim = normalised_traces(exp, "test"), stimulus(exp, "test")
    horizons = range(1, config.eval.horizons + 1)
    window = config.eval.warmup + spec.history
    forecast = {}
    for name, arch in zip(MODEL_KEYS, (params.arch, basis.discretize(params.arch))):
        p = params._replace(arch=arch)
        # Missing inputs are filled with 0 (the training mean in normalised units); NaN targets are masked.
        forecast[name] = metrics.forecast_metrics(
            spec, (p, context(spec, p, inputs, temps), inputs, temps), test_x, history=window,
            horizons=horizons, stride=config.eval.stride, exog=test_stim, rollout=model_rollout,
            fill=np.zeros(spec.n_neurons, np.float32),
        )
    for name, (forecaster, bparams) in fitted.items():
        skip = window - forecaster.history
        if skip < 0:
            raise ValueError(f"eval config: field 'warmup' = {config.eval.warmup} gives the model a shorter "
                             f"window than baseline {name!r} needs ({forecaster.history} frames)")
        forecast[name] = metrics.forecast_metrics(
            forecaster.step, bparams, test_x[skip:], history=forecaster.history, horizons=horizons,
            stride=config.eval.stride,
        )
    return forecast


def evaluate(config: ml_collections.ConfigDict, exp: Any, params: model.Params) -> tuple[dict[str, Any], dict]:
    """Every evaluation of the fitted model (see the module docstring).

    Returns:
      ``(results, partition)``: a JSON-ready dict, and the hard partition of :func:`partition`.
    """
    spec, inputs = exp.spec, exp.inputs
    temps = final_temperatures(config)
    train_x = normalised_traces(exp, "train")  # read once: baselines and the behaviour decoder
    forecast = forecasts(config, exp, params, fit_baselines(config, exp, train_x))
    results: dict[str, Any] = {
        "forecast": {name: {k: np.asarray(v).tolist() for k, v in m.items()
                            if k in ("horizons", "mse", "r2", "r2_median", "n_starts")}
                     for name, m in forecast.items()},
    }
    part = partition(spec, params, inputs, temps)
    results["partition"] = {"usage": part["usage"].tolist(), "n_filters": spec.n_filters}
    if exp.truth is not None:
        results["truth"] = truth_recovery(part, exp.truth, spec.n_filters)
    results["behaviour"] = behaviour_scores(exp, params, temps, train_x)
    baseline_names = [n for n in forecast if n not in MODEL_KEYS]
    results["beats_all_baselines"] = {
        str(h): bool(all(forecast["model"]["mse"][k] < forecast[n]["mse"][k] for n in baseline_names))
        for k, h in enumerate(forecast["model"]["horizons"].tolist())
    }
    return results, part


def summary(results: dict[str, Any]) -> str:
    """A few lines: test R² at horizons 1 and 5 for the model and the best baseline; truth recovery."""
    fc = results["forecast"]
    lines = []
    for h in (1, 5):
        if h > len(fc["model"]["r2"]):
            continue
        best = max((n for n in fc if n not in MODEL_KEYS), key=lambda n: fc[n]["r2"][h - 1])
        lines.append(f"h={h}: model R²={fc['model']['r2'][h - 1]:.3f}, best baseline {best} "
                     f"R²={fc[best]['r2'][h - 1]:.3f}")
    if "truth" in results:
        t = results["truth"]
        lines.append(f"domain ARI={t['domain_ari']:.3f}, motif accuracy={t['motif_accuracy']:.3f}, "
                     f"filters used={t['filters_used']} (planted {t['planted_k']})")
    return "\n".join(lines)
