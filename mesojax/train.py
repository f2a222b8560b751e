"""Training: setup, data, state, step, checkpoint, loop.

``run(config, workdir)`` fits a mesoscale model and writes everything into `workdir`:
``checkpoints/`` (orbax; an interrupted run resumes at its latest step with the same batches),
``metrics.jsonl`` (one line per logged step, every loss term separately; ``val_mse`` lines when
``train.val_every`` selects the evaluated parameters on the validation segment, with ``best/`` and
``validation.json``), and, after training, the evaluation and report files (see :mod:`mesojax.evaluate`,
:mod:`mesojax.report`). The workdir is locked to one run (:mod:`mesojax.workdir`); a damaged checkpoint
falls back to the previous one (:func:`restore_or_init`).

Devices: a ``jax.sharding.Mesh`` with axes ``("data", "space")``. Batches of time windows are split
along ``data``; every array with a leading location axis (tables, per-pair parameters) along ``space``.
The same code runs on one CPU, one GPU or many devices.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mesojax import analysis, basis, checkpoint, evaluate, losses, model, optim, progress, report, restructure, transfer
from mesojax import config as config_lib
from mesojax import workdir as workdir_lib
from mesojax.data import windows
from mesojax.experiment import Experiment, init_params, prepare
from mesojax.data import validation as V

# ----------------------------------------------------------------------------------------------- setup


def enable_compilation_cache(directory: str, min_compile_seconds: float = 1.0) -> None:
    """Keep compiled programs that took at least `min_compile_seconds` in `directory` across processes.

    A rerun, a resumed run or another run with the same shapes then loads the train step, the rollouts
    and the baselines' programs instead of compiling them (tens of seconds on a CPU). Call it before the
    first compilation; the directory is trusted code, so keep it private to the user.
    """
    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)


# Fields that count something a run must have at least one of (a zero or negative value would run
# nothing and still write reports as if a model had been fitted).
POSITIVE_FIELDS = ("train.steps", "train.batch_windows", "train.rollout", "train.log_every",
                   "train.checkpoint_every", "model.n_filters", "model.n_ports", "model.history",
                   "eval.horizons", "eval.stride")


def check_config(config: ml_collections.ConfigDict) -> None:
    """Reject settings that cannot give a fitted, evaluated model, before anything is loaded or written.

    Raises:
      ValueError: naming the field, its value and what it must be.
    """
    def get(name):
        node = config
        for part in name.split("."):
            node = node.get(part) if hasattr(node, "get") else None
        return node

    for name in POSITIVE_FIELDS:
        value = get(name)
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"config: field '{name}' = {value!r} must be an integer ≥ 1")
    for name in ("train.val_every", "train.patience"):
        value = get(name)
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 0):
            raise ValueError(f"config: field '{name}' = {value!r} must be an integer ≥ 0 (0: off)")
    if get("train.val_stride") is not None and int(config.train.val_stride) < 1:
        raise ValueError(f"config: field 'train.val_stride' = {config.train.val_stride} must be ≥ 1")
    threshold = get("eval.pair_threshold")
    if threshold is not None and not 0.0 <= float(threshold) < 1.0:
        raise ValueError(f"config: field 'eval.pair_threshold' = {threshold} must lie in [0, 1) (0: every pair)")
    if get("eval.warmup") is not None and int(config.eval.warmup) < 0:
        raise ValueError(f"config: field 'eval.warmup' = {config.eval.warmup} must be ≥ 0")
    if get("data.split_by") is not None and config.data.split_by not in windows.SPLIT_BY:
        raise ValueError(f"config: field 'data.split_by' = {config.data.split_by!r} must be one of "
                         f"{list(windows.SPLIT_BY)}")
    hard = get("train.hard_steps") or 0
    if hard < 0 or hard >= config.train.steps:
        raise ValueError(f"config: field 'train.hard_steps' = {hard} must be ≥ 0 and below train.steps = "
                         f"{config.train.steps}")
    rc = config.get("restructure")
    if rc is not None:
        for name in ("split_steps", "merge_steps"):
            steps = tuple(rc[name])
            if any(not isinstance(s, (int, np.integer)) or not 0 <= s < config.train.steps for s in steps):
                raise ValueError(f"config: field 'restructure.{name}' = {steps}: every step must be an integer "
                                 f"within training, 0 ≤ step < train.steps = {config.train.steps}")
        if not float(rc.tolerance) >= 0:
            raise ValueError(f"config: field 'restructure.tolerance' = {rc.tolerance} must be ≥ 0")
        for name in ("min_locations", "windows"):
            if int(rc[name]) < 1:
                raise ValueError(f"config: field 'restructure.{name}' = {rc[name]} must be ≥ 1")
    if config.get("transfer") is not None and config.transfer.animals:
        for animal in config.transfer.animals:
            V.check_name("config", "transfer.animals", animal)
        if int(config.transfer.steps) < 1:
            raise ValueError(f"config: field 'transfer.steps' = {config.transfer.steps} must be ≥ 1 when "
                             "transfer.animals is set")
    curve = tuple(get("transfer.curve") or ())
    if curve:
        bad = [f for f in curve if not 0.0 < float(f) < 1.0 - analysis.LEARNING_TEST_FRACTION]
        if bad:
            raise ValueError(f"config: field 'transfer.curve' = {curve}: every share must lie in (0, "
                             f"{1.0 - analysis.LEARNING_TEST_FRACTION:g}) (the last "
                             f"{analysis.LEARNING_TEST_FRACTION:g} of the recording is the test); got {bad}")
        if "persistence" not in tuple(get("eval.baselines") or ()):
            raise ValueError("config: field 'transfer.curve' needs 'persistence' in eval.baselines: the curve "
                             "compares sizes through each arm's MSE over persistence's")


def make_mesh(space: int = 1, devices: list | None = None) -> Mesh:
    """A ``(data, space)`` mesh over `devices` (default: all); `space` devices share the location axis."""
    devices = jax.devices() if devices is None else list(devices)
    if space < 1 or len(devices) % space:
        raise ValueError(f"mesh config: field 'space' = {space} must divide the device count {len(devices)}")
    return Mesh(np.asarray(devices).reshape(len(devices) // space, space), ("data", "space"))


def shard_locations(tree: Any, mesh: Mesh, n_locations: int) -> Any:
    """Place arrays with a leading axis of length `n_locations` split along ``space``; replicate the rest.

    The rule is by shape, so an array that only happens to have L rows (e.g. per-neuron when N == L) is
    split too: that changes the layout, never a result.
    """

    def place(x):
        x = jnp.asarray(x)
        spec = P("space") if x.ndim and x.shape[0] == n_locations else P()
        return jax.device_put(x, NamedSharding(mesh, spec))

    return jax.tree.map(place, tree)


def shard_batch(batch: windows.Batch, mesh: Mesh) -> windows.Batch:
    """Split the window axis of a host batch along ``data``."""
    return jax.tree.map(lambda x: jax.device_put(x, NamedSharding(mesh, P("data"))), batch)


# ----------------------------------------------------------------------------------------------- state


class TrainState(NamedTuple):
    """Everything that changes during training (a pytree; checkpointed whole)."""

    step: jax.Array
    params: model.Params
    opt_state: Any


def init_state(
    config: ml_collections.ConfigDict, exp: Experiment, optimizer: optax.GradientTransformation,
    params: model.Params | None = None,
) -> TrainState:
    """Step 0: `params` (default :func:`init_params`) and a fresh optimiser state."""
    params = init_params(config, exp) if params is None else params
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))


# ------------------------------------------------------------------------------------------------ step


def make_train_step(
    config: ml_collections.ConfigDict, exp: Experiment, optimizer: optax.GradientTransformation
) -> Callable[[TrainState, windows.Batch], tuple[TrainState, dict]]:
    """``train_step(state, batch) -> (state, metrics)``: pure, jitted, state donated."""
    weights = losses.Weights(**config.loss)
    n_teacher = config.train.n_teacher

    def step_fn(state: TrainState, batch: windows.Batch, inputs: model.ModelInputs):
        temps = optim.temperatures(config.anneal, state.step)
        grad_fn = jax.value_and_grad(losses.loss_fn, has_aux=True)
        (_, metrics), grads = grad_fn(state.params, batch, exp.spec, inputs, weights, temps, n_teacher)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics, grad_norm=optax.tree.norm(grads), tau_arch=temps.arch,
                       tau_assign=temps.assign)
        return TrainState(state.step + 1, params, opt_state), metrics

    jitted = jax.jit(step_fn, donate_argnums=0)
    return lambda state, batch: jitted(state, batch, exp.inputs)


# ------------------------------------------------------------------------------------------ checkpoint


# Settings that may change between an interrupted run and its resumption: they do not affect the state.
RESUMABLE_CHANGES = ("train.log_every", "train.checkpoint_every", "eval.", "transfer.curve")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _flatten(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: tree}


# Fields added after runs were started whose default is not the behaviour those runs had: a snapshot
# without the field had this value.
LEGACY_VALUES = {"model.behaviour_readout": "pooled", "data.extreme": 0.0, "model.basis.state_bound": 0.0,
                 "train.hard_steps": 0, "optim.hard_peak": 0.0}


def config_changes(saved: dict, current: dict) -> list[str]:
    """Dotted names of config fields that differ between two ``config.to_dict()`` snapshots.

    A field the saved snapshot lacks counts as unchanged while it holds the value that run had: its
    default (:func:`mesojax.config.base_config`; it was added to mesojax after the run started), or its
    :data:`LEGACY_VALUES` entry where the default changed behaviour.
    """
    a, b = _flatten(saved), _flatten(json.loads(json.dumps(current, default=str)))
    defaults = _flatten(json.loads(json.dumps(config_lib.base_config().to_dict(), default=str)))
    defaults.update(LEGACY_VALUES)
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)
                     and not (k not in a and k in defaults and b.get(k) == defaults[k]))
    # The validation history (train.val_every) is measured with these: they must stay for a resume.
    scored = ("eval.horizons", "eval.warmup") if b.get("train.val_every") else ()
    return [k for k in changed if not k.startswith(RESUMABLE_CHANGES) or k in scored]


class CheckpointError(RuntimeError):
    """No checkpoint in a run directory could be read."""


def restore_or_init(
    ckpt: checkpoint.Checkpointer, fresh: TrainState, config: ml_collections.ConfigDict
) -> TrainState:
    """The newest intact checkpoint restored into the layout of `fresh`, or `fresh` when there is none.

    A checkpoint that cannot be read (truncated arrays, a damaged record or metadata, a step that does
    not match its folder) is moved aside to ``damaged-<step>`` with a warning and the next older one is
    tried, so an interruption or a bad disk write costs the steps since the previous checkpoint, not
    the run.

    Raises:
      ValueError: the checkpoint was written with a different configuration (naming the fields).
      CheckpointError: checkpoints exist but none can be read (naming each step and its fault).
    """
    faults = []
    for step in reversed(ckpt.all_steps()):
        try:
            record = ckpt.read_record(step)
            if not isinstance(record, dict) or "config" not in record:
                raise ValueError("its record has no config")
        except Exception as e:  # noqa: BLE001 - any fault in reading a step sends us to an older one
            faults.append(_set_aside(ckpt, step, e))
            continue
        # Compare configs before reading the state: a changed shape would otherwise fail deep in orbax.
        changes = config_changes(record.get("config", {}), config.to_dict())
        if changes:
            raise ValueError(
                f"{ckpt.directory}: the checkpoint was written with a different config; changed fields: "
                + ", ".join(changes) + ". Use a new --workdir, or restore the original settings to resume."
            )
        try:
            saved = ckpt.saved_shapes(step)
        except Exception as e:  # noqa: BLE001 - unreadable metadata: damaged
            faults.append(_set_aside(ckpt, step, e))
            continue
        now = sorted(tuple(np.shape(x)) for x in jax.tree.leaves(fresh))
        if saved and saved != now:  # not damage: the data or the model changed under the same config
            raise ValueError(
                f"{ckpt.directory}: step {step} holds arrays of other shapes than this run's "
                f"({len(saved)} arrays, e.g. {_first_difference(saved, now)}): the data changed (neurons, "
                "locations, behaviour targets) although the config did not. Use a new --workdir, or restore the "
                "original data to resume.")
        try:
            state, _ = ckpt.restore(fresh, step)
            if int(state.step) != step:
                raise ValueError(f"it holds step {int(state.step)}")
            if not all(bool(np.isfinite(np.asarray(x)).all()) for x in jax.tree.leaves(state.params)):
                raise ValueError("its parameters hold non-finite values")
        except Exception as e:  # noqa: BLE001
            faults.append(_set_aside(ckpt, step, e))
            continue
        if faults:
            logging.warning("resumed from the older intact checkpoint, step %d", step)
        logging.info("resumed from %s at step %d", ckpt.directory, int(state.step))
        return state
    if faults:
        raise CheckpointError(
            f"{ckpt.directory}: no checkpoint could be read ({'; '.join(faults)}); the damaged steps were moved "
            "aside as damaged-<step>. Start again with a new --workdir, or delete the checkpoints folder to "
            "retrain in this one.")
    return fresh


def _first_difference(saved: list, now: list) -> str:
    extra, missing = sorted(set(saved) - set(now)), sorted(set(now) - set(saved))
    return f"saved {list(extra[:1]) or '-'} where this run has {list(missing[:1]) or '-'}"


def _set_aside(ckpt: checkpoint.Checkpointer, step: int, error: Exception) -> str:
    what = f"step {step}: {type(error).__name__}: {' '.join(str(error).split())[:300]}"
    where = ckpt.set_aside(step)
    logging.warning("%s: checkpoint %s is damaged and was moved to %s; trying an older one", ckpt.directory,
                    what, where)
    return what


# ------------------------------------------------------------------------------------------------ loop


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


def _log_line(step: int, total: int, metrics: dict, rate: float) -> str:
    eta = (total - step) / rate if rate > 0 else float("nan")
    terms = " ".join(f"{k}={metrics[k]:.4g}" for k in ("loss", *losses.TERMS) if k in metrics)
    return (f"step {step}/{total} {terms} filters_used={int(metrics['filters_used'])} "
            f"[{rate:.1f} steps/s, eta {eta:.0f}s]")


def _truncate_metrics(path: str, last_step: int) -> None:
    """Keep only the logged lines up to `last_step` (steps after the checkpoint, and a restructuring event at
    `last_step` itself, which ran after that checkpoint, are about to be redone)."""
    if not os.path.exists(path):
        return
    keep = []
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
                # A restructuring event at the last step ran after its checkpoint: it is redone.
                if row["step"] < last_step or (row["step"] == last_step and "restructure" not in row):
                    keep.append(line)
            except (json.JSONDecodeError, KeyError):  # a line cut short by the interruption
                continue
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.writelines(keep)
    os.replace(tmp, path)


def train(config: ml_collections.ConfigDict, workdir: str, exp: Experiment | None = None,
          mesh: Mesh | None = None, params: model.Params | None = None,
          timings: progress.Timings | None = None) -> tuple[Experiment, TrainState]:
    """Train (or resume) and return the experiment and the final state; writes checkpoints and metrics.

    `params` replaces the fresh initialisation (e.g. a transferred basis, :mod:`mesojax.transfer`).
    Setup, the first step (compilation) and training are logged and timed into `timings`. The config is
    checked first (:func:`check_config`) and `workdir` is held by this run (:func:`mesojax.workdir.hold`).
    """
    check_config(config)
    with workdir_lib.hold(workdir):
        return _train(config, workdir, exp, mesh, params, timings)


def _train(config: ml_collections.ConfigDict, workdir: str, exp: Experiment | None, mesh: Mesh | None,
           params: model.Params | None, timings: progress.Timings | None) -> tuple[Experiment, TrainState]:
    mesh = make_mesh(config.mesh.space) if mesh is None else mesh
    exp = prepare(config, mesh, timings) if exp is None else exp
    exp = dataclasses.replace(exp, inputs=shard_locations(exp.inputs, mesh, exp.spec.n_locations))
    tc = config.train
    if tc.batch_windows % mesh.shape["data"]:
        raise ValueError(f"train config: field 'batch_windows' = {tc.batch_windows} must be a multiple of "
                         f"the data-parallel device count {mesh.shape['data']}")
    optimizer = optim.make_optimizer(config.optim)
    with progress.phase("initial parameters", timings):
        fresh = shard_locations(init_state(config, exp, optimizer, params), mesh, exp.spec.n_locations)
        ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=2)
        state = restore_or_init(ckpt, fresh, config)
    exp = fixed_where_hard(exp, state.params, config, int(state.step))
    train_step = make_train_step(config, exp, optimizer)
    length = exp.spec.history + tc.rollout
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    start = int(state.step)
    _truncate_metrics(metrics_path, start)
    t_last, s_last = time.time(), start
    hard_from = tc.steps - tc.hard_steps if tc.hard_steps > 0 else None
    if start < tc.steps:
        logging.info("training steps %d..%d; the first one compiles the step", start + 1, tc.steps)
    t_train, compiled = time.perf_counter(), 0.0
    record = ckpt.read_record(start) if start else {}
    history = [(int(a), float(b)) for a, b in record.get("validation", [])]
    stopped = bool(record.get("stopped", False))
    best = None
    if tc.val_every:
        # Best parameters by step; steps after the resumed one belong to a discarded timeline (redone).
        best = checkpoint.Checkpointer(os.path.join(workdir, "best"), max_to_keep=None)
        for later in [b for b in best.all_steps() if b > start]:
            best.delete(later)
    events = list(record.get("restructure", []))
    merge_at = {int(s) for s in config.restructure.merge_steps}
    split_at = {int(s) for s in config.restructure.split_steps}
    events_at, errors = merge_at | split_at, None
    # Built before training, so a validation segment too short for it fails at once, not at the first event.
    val_windows = _validation_windows(config, exp) if merge_at else None
    with open(metrics_path, "a") as log:
        for step in range(start, tc.steps):
            if stopped:
                break
            if step == hard_from:
                # End of the architecture search: the filters train on with their hard architecture
                # (the optimiser's arch group stops here too, optim.arch_steps).
                hard = basis.discretize(state.params.arch)
                state = state._replace(params=state.params._replace(arch=hard))
                exp = fixed_where_hard(exp, state.params, config, step)
                train_step = make_train_step(config, exp, optimizer)  # the bank computes only the chosen parts
                logging.info("step %d: architectures discretised; %d steps with them fixed", step, tc.hard_steps)
            if step in events_at:  # after a discretisation at the same step: merges are judged on that model
                if merge_at and (errors is None or errors[0] is not exp.spec):  # compiled once per spec
                    errors = (exp.spec, restructure.validation_errors(exp.spec, exp.inputs, val_windows,
                                                                      config.train.n_teacher))
                state, ev = _restructure(config, exp, state, step, step in merge_at, step in split_at, mesh,
                                         errors[1] if errors else None)
                events.append(ev)
                if ev["splits"] and exp.spec.fixed_arch is not None:
                    # A split copied a fixed architecture into a free filter: the fixed bank changes.
                    exp = fixed_where_hard(exp, state.params, config, step)
                    train_step = make_train_step(config, exp, optimizer)
                log.write(json.dumps({"step": step, "restructure": ev}) + "\n")
            batch = windows.sample_batch(exp.recording, exp.norm, exp.segments["train"], length=length,
                                         n_windows=tc.batch_windows, seed=config.seed, step=step)
            state, metrics = train_step(state, shard_batch(batch, mesh))
            loss, grad_norm = float(metrics["loss"]), float(metrics["grad_norm"])
            if step == start:
                # The first step compiles: timed apart, so the rate below is the steady one.
                compiled = time.perf_counter() - t_train
                logging.info("first step (compilation) took %.1f s", compiled)
                if timings is not None:
                    timings.add("compile (first step)", compiled)
                t_last, s_last = time.time(), start + 1
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                ckpt.close()
                raise NonFiniteLossError(
                    f"non-finite loss {loss} (gradient norm {grad_norm}) at step {step}; terms: "
                    + ", ".join(f"{k}={float(metrics[k]):.4g}" for k in losses.TERMS)
                    + f". Last good checkpoint: step {ckpt.latest_step()} in {ckpt.directory}. "
                    "Lower optim.learning_rate or optim.clip_norm, or check the data for extreme values."
                )
            done = step + 1
            if done % tc.log_every == 0 or done == tc.steps:
                host = {k: float(v) for k, v in jax.device_get(metrics).items()}
                rate = (done - s_last) / max(time.time() - t_last, 1e-9)
                t_last, s_last = time.time(), done
                log.write(json.dumps({"step": done, **host}) + "\n")
                log.flush()
                logging.info("%s", _log_line(done, tc.steps, host, rate))
            # With a hard phase only its steps are candidates: the evaluated model is the discretised one.
            if tc.val_every and done % tc.val_every == 0 and (hard_from is None or done > hard_from):
                stopped = _validate(config, exp, state, done, history, best, log)
            if done % tc.checkpoint_every == 0 or done == tc.steps or stopped:
                ckpt.save(done, state, {"step": done, "config": json.loads(json.dumps(config.to_dict(), default=str)),
                                        "validation": history, "stopped": stopped, "restructure": events})
                if best is not None:
                    _prune_best(best, history, ckpt.all_steps())
    ckpt.close()
    if events_at:
        with open(os.path.join(workdir, "restructure.json"), "w") as f:
            json.dump(events, f, indent=1)
    if timings is not None and tc.steps - start > 1:
        timings.add("training", time.perf_counter() - t_train - compiled)
    if best is not None:
        state = _select_best(state, history, best, workdir)
        best.close()
    return fixed_where_hard(exp, state.params, config), state


def _restructure(config: ml_collections.ConfigDict, exp: Experiment, state: TrainState, step: int, merges: bool,
                 splits: bool, mesh: Mesh, errors: Callable | None) -> tuple[TrainState, dict]:
    """One filter split/merge event (:func:`mesojax.restructure.event`) at `step`; returns the state and its
    record. `errors` is :func:`mesojax.restructure.validation_errors` for ``exp.spec``."""
    rc = config.restructure
    temps, now = evaluate.final_temperatures(config), optim.temperatures(config.anneal, step)
    with progress.phase(f"restructure at step {step}", None):
        state, record = restructure.event(
            state, exp.spec, exp.inputs,
            partition=lambda p: evaluate.partition(exp.spec, p, exp.inputs, temps),
            errors=(lambda p: errors(p, now)) if merges else None,
            traces=np.concatenate(evaluate.segment_traces(exp, "train")) if splits else None,
            tolerance=float(rc.tolerance), min_locations=int(rc.min_locations), do_merge=merges, do_split=splits,
            rng=np.random.default_rng([config.seed, step]), min_silhouette=float(rc.min_silhouette),
            log=lambda s: logging.info("step %d: %s", step, s))
    return shard_locations(state, mesh, exp.spec.n_locations), dict(record, step=step)


def _validation_windows(config: ml_collections.ConfigDict, exp: Experiment) -> windows.Batch:
    """Training-length windows evenly spread over the validation segment (at most
    ``restructure.windows``): the fixed batch that restructuring scores merges on."""
    length = exp.spec.history + config.train.rollout
    starts = [t for a, b in windows.as_segment(exp.segments["val"]) for t in range(a, b - length + 1, length)]
    if not starts:
        raise ValueError(f"config: field 'restructure.merge_steps' = {tuple(config.restructure.merge_steps)}: the "
                         f"validation segment {list(exp.segments['val'])} (data.split = {tuple(config.data.split)}) "
                         f"holds no window of {length} frames (model.history + train.rollout) to judge merges on; "
                         "give the validation share more frames or set no merge steps")
    keep = np.unique(np.linspace(0, len(starts) - 1, min(len(starts), int(config.restructure.windows))).round())
    return windows.stack([windows.window(exp.recording, exp.norm, starts[int(i)], length) for i in keep])


def fixed_where_hard(exp: Experiment, params: model.Params, config: ml_collections.ConfigDict,
                     step: int | None = None) -> Experiment:
    """`exp` with the model spec that runs `params`: the fixed-architecture bank
    (:func:`mesojax.model.with_fixed_arch`, same results, only the chosen parts computed) when the
    architecture is hard and, during training (`step` given), no longer searched; the soft bank otherwise.

    Without `step` (the evaluated model), each filter is also computed only at the locations where its
    final assignment weight reaches ``eval.pair_threshold`` (:func:`mesojax.model.active_pairs`).
    """
    fixed = basis.is_hard(params.arch) and (step is None or not optim.arch_trains(config.optim, step))
    if fixed or exp.spec.fixed_arch is not None:
        exp = dataclasses.replace(exp, spec=model.with_fixed_arch(exp.spec, params.arch if fixed else None))
    threshold = float(config.eval.get("pair_threshold", 0.0))
    pooled = exp.spec.behaviour_readout == "pooled" and (exp.spec.n_behaviour or exp.spec.n_modes)
    locations = None
    if step is None and threshold > 0 and not pooled:  # the pooled readout reads every pair's output
        ctx = evaluate.context(exp.spec, params, exp.inputs, evaluate.final_temperatures(config))
        locations = model.active_pairs(ctx, exp.inputs, threshold)
    if locations is None and exp.spec.pair_locations is None:
        return exp
    return dataclasses.replace(exp, spec=model.with_pairs(exp.spec, locations))


def _validate(config: ml_collections.ConfigDict, exp: Experiment, state: TrainState, done: int,
              history: list[tuple[int, float]], best: checkpoint.Checkpointer, log: Any) -> bool:
    """Measure the validation MSE at step `done`, keep the parameters if they are the best so far, and
    say whether training should stop (``train.patience`` measurements without improvement)."""
    mse = evaluate.validation_mse(config, exp, state.params)
    if not math.isfinite(mse):
        mse = math.inf
    improved = not history or mse < min(v for _, v in history)
    history.append((done, mse))
    if improved:
        if done in best.all_steps():
            best.delete(done)
        best.save(done, state.params, {"step": done, "val_mse": mse})
    log.write(json.dumps({"step": done, "val_mse": mse}) + "\n")
    log.flush()
    best_step = _best_step(history)
    since = sum(1 for s, _ in history if s > best_step)
    logging.info("step %d: validation MSE %.4g (best %.4g at step %d)", done, mse, min(v for _, v in history), best_step)
    patience = int(config.train.patience)
    if patience and since >= patience:
        logging.info("stopping early at step %d: no better validation MSE in %d measurements since step %d",
                     done, since, best_step)
        return True
    return False


def _best_step(history: list[tuple[int, float]], upto: float = math.inf) -> int | None:
    kept = [(s, v) for s, v in history if s <= upto]
    return min(kept, key=lambda x: x[1])[0] if kept else None


def _prune_best(best: checkpoint.Checkpointer, history: list[tuple[int, float]], kept: list[int]) -> None:
    """Keep only the best steps a resume could still need: the best as of each kept checkpoint, and now."""
    needed = {_best_step(history, c) for c in kept} | {_best_step(history)}
    for step in best.all_steps():
        if step not in needed:
            best.delete(step)


def _select_best(state: TrainState, history: list[tuple[int, float]], best: checkpoint.Checkpointer,
                 workdir: str) -> TrainState:
    """`state` with the parameters of the step with the lowest validation MSE; writes ``validation.json``."""
    if not history:
        return state
    best_step, best_mse = min(history, key=lambda x: x[1])
    if not math.isfinite(best_mse):
        logging.warning("no finite validation MSE in %d measurements: evaluating the last step's parameters",
                        len(history))
        return state
    summary = {"best_step": best_step, "best_val_mse": best_mse, "last_step": int(state.step),
               "history": [{"step": s, "val_mse": v} for s, v in history]}
    if best_step != int(state.step):
        if best.latest_step() != best_step:
            raise CheckpointError(f"{best.directory}: holds step {best.latest_step()}, not the best validation "
                                  f"step {best_step}; delete the workdir's best/ and checkpoints/ to retrain")
        params, _ = best.restore(state.params, best_step)
        state = state._replace(params=params)
    logging.info("evaluating the parameters of step %d (validation MSE %.4g; last step %d)", best_step, best_mse,
                 summary["last_step"])
    with open(os.path.join(workdir, "validation.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return state


def run_transfer(config: ml_collections.ConfigDict, workdir: str, trained: model.Params,
                 source: Experiment, timings: progress.Timings | None = None) -> dict[str, Any]:
    """Refit every held-out animal of ``config.transfer.animals`` on the frozen basis (see
    :mod:`mesojax.transfer`); evaluate and report each in ``<workdir>/transfer/<animal>/`` (resumable).

    With ``config.transfer.curve`` fractions, each animal's one-shot learning curve
    (:func:`mesojax.analysis.learning_curve`: frozen basis, scratch and baselines on those shares of its
    frames) is added to its results and report, its runs in ``<workdir>/transfer/<animal>/curve/``.

    Returns:
      ``animal -> evaluation results`` (as :func:`mesojax.evaluate.evaluate`, plus ``learning_curve``).
    """
    results = {}
    for animal in config.transfer.animals:
        cfg = transfer.transfer_config(config, animal)
        mesh = make_mesh(cfg.mesh.space)
        exp = prepare(cfg, mesh, timings)
        start = transfer.transfer_params(trained, init_params(cfg, exp), source.recording.behaviour_names,
                                         exp.recording.behaviour_names)
        folder = os.path.join(workdir, "transfer", animal)
        logging.info("transfer to held-out animal %s: basis frozen, %d steps", animal, cfg.train.steps)
        exp, state = train(cfg, folder, exp, mesh, params=start, timings=timings)
        results[animal], part = evaluate.evaluate(cfg, exp, state.params, timings)
        # Checked, not assumed: the filters after refitting are the trained ones, bit for bit.
        same = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), (trained.basis, trained.arch),
                            (state.params.basis, state.params.arch))
        results[animal]["basis_frozen"] = all(jax.tree.leaves(same))
        if config.transfer.get("curve"):
            with progress.phase("learning curve", timings):
                results[animal]["learning_curve"] = analysis.learning_curve(
                    cfg, transfer.scratch_config(config, animal), trained, source.recording.behaviour_names,
                    os.path.join(folder, "curve"), fractions=tuple(config.transfer.curve))
        with progress.phase("report", timings):
            report.write(folder, cfg, exp, state.params, results[animal], part)
    return results


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Train, evaluate and write the report (and transfer to held-out animals when configured);
    returns the evaluation metrics (held-out animals under ``"transfer"``).

    The duration of every phase is logged as it ends, written to ``timings.json`` and logged as a table.
    The config is checked before anything is loaded, and `workdir` is held by this run throughout.
    """
    check_config(config)
    with workdir_lib.hold(workdir):
        return _run(config, workdir)


def _run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    timings = progress.Timings()
    exp, state = train(config, workdir, timings=timings)
    results, part = evaluate.evaluate(config, exp, state.params, timings)
    if config.get("transfer") is not None and config.transfer.animals:
        results["transfer"] = run_transfer(config, workdir, state.params, exp, timings)
        curves = [r["learning_curve"] for r in results["transfer"].values() if "learning_curve" in r]
        if curves:
            results["learning_curve"] = analysis.pool_curves(curves)
    with progress.phase("report", timings):
        report.write(workdir, config, exp, state.params, results, part)
    report.write_timings(workdir, timings)
    logging.info("time per phase:\n%s", progress.table(timings))
    return results


def saved_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run in `workdir` was trained with (from its latest intact checkpoint's record).

    Fields added to mesojax after the run was trained take the value that run had: their
    :data:`LEGACY_VALUES` entry where the default changed behaviour, else their default (as
    :func:`config_changes` reads them).

    Raises:
      FileNotFoundError: `workdir` holds no checkpoint.
    """
    folder = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{workdir}: no checkpoints/ folder (is this a mesojax workdir?)")
    ckpt = checkpoint.Checkpointer(folder, max_to_keep=None)
    try:
        for step in reversed(ckpt.all_steps()):
            try:
                saved = ckpt.read_record(step)["config"]
            except Exception:  # noqa: BLE001 - an unreadable record: try the previous step
                continue
            return ml_collections.ConfigDict(_tuples(_with_defaults(saved, _defaults())))
    finally:
        ckpt.close()
    raise FileNotFoundError(f"{folder}: no checkpoint with a readable config")


def _defaults() -> dict:
    """Every field's value for a run that predates it: the default, or its :data:`LEGACY_VALUES` entry."""
    out = json.loads(json.dumps(config_lib.base_config().to_dict(), default=str))
    for key, value in LEGACY_VALUES.items():
        config_lib.set_dotted(out, key, value)
    return out


def _with_defaults(saved: dict, defaults: dict) -> dict:
    """`saved` with every field it lacks taken from `defaults` (recursively)."""
    out = dict(saved)
    for key, value in defaults.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = _with_defaults(out[key], value)
    return out




def _tuples(tree: Any) -> Any:
    """JSON lists back to the tuples a config holds (hashable, as in the specs built from it)."""
    if isinstance(tree, dict):
        return {k: _tuples(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return tuple(_tuples(v) for v in tree)
    return tree


def add_to_report(workdir: str, **fields: Any) -> dict:
    """Add `fields` to a finished run's saved evaluation and write its report again (:func:`rewrite_report`
    with them), e.g. ``learning_curve=`` from :func:`mesojax.analysis.learning_curve` of a circuit this
    run's basis was transferred to. ``metrics.json`` is only rewritten once the run has been restored and
    its report written. Returns the updated evaluation results.

    Raises:
      FileNotFoundError: not a finished run.
    """
    return rewrite_report(workdir, extra=json.loads(json.dumps(fields, default=float)))


def rewrite_report(workdir: str, extra: dict | None = None) -> dict:
    """Write the report files of a finished run again, from its checkpoint and ``metrics.json``.

    Nothing is retrained or re-evaluated: the parameters are restored (the selected ones, with
    ``train.val_every``), the partition is recomputed, and figures, ``partition.csv``, ``motif_map.json``,
    ``filters.txt``, ``metrics.json`` and ``report.html`` are written from the saved evaluation (and its
    per-neuron scores, ``evaluation.npz``), also for every held-out
    animal of ``config.transfer.animals``. Returns the saved evaluation results.

    Args:
      extra: fields added to this run's saved evaluation (not its held-out animals'), e.g. a learning
        curve (:func:`add_to_report`).

    Raises:
      FileNotFoundError: not a finished run (no checkpoint, or no ``metrics.json``).
    """
    config = saved_config(workdir)
    check_config(config)
    folders = [(config, workdir)]
    if config.get("transfer") is not None and config.transfer.animals:
        folders += [(transfer.transfer_config(config, a), os.path.join(workdir, "transfer", a))
                    for a in config.transfer.animals]
    results = None
    for cfg, folder in folders:
        path = os.path.join(folder, "metrics.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: missing; the run has not finished (run scripts/train.py to complete it)")
        with open(path) as f:
            saved = json.load(f)
        saved.pop("filters", None)
        if extra and folder == workdir:
            saved.update(extra)  # written with the rest by report.write, after the restore succeeded
        with workdir_lib.hold(folder):
            mesh = make_mesh(cfg.mesh.space)
            exp = prepare(cfg, mesh)
            exp, state = _train(cfg, folder, exp, mesh, None, None)
            if int(state.step) < cfg.train.steps and not os.path.exists(os.path.join(folder, "validation.json")):
                raise FileNotFoundError(f"{folder}: trained to step {int(state.step)} of {cfg.train.steps}; finish it "
                                        "with scripts/train.py first")
            part = evaluate.partition(exp.spec, state.params, exp.inputs, evaluate.final_temperatures(cfg))
            part.update(report.load_arrays(os.path.join(folder, "evaluation.npz")))  # per-neuron scores
            report.write(folder, cfg, exp, state.params, saved, part)
        results = saved if results is None else results
    logging.info("rewrote the report in %s", workdir)
    return results
