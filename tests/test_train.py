"""End-to-end tests of training: the tiny config, resume, sharding, non-finite losses, and the script."""

import csv
import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from mesojax import config, experiment, losses, metrics, readout, train

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_config(name: str, **overrides):
    return config.load_config_file(REPO / "configs" / f"{name}.py", **overrides)


def short(steps: int, **kw):
    # optim.total_steps and anneal.steps follow train.steps (config field references).
    return load_config("phantom_tiny", **{"train.steps": steps, "train.checkpoint_every": 3,
                                          "train.log_every": 1, **kw})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny")
    cfg = short(6)
    results = train.run(cfg, str(workdir))
    return cfg, workdir, results


def test_end_to_end_tiny_writes_every_output(tiny_run):
    cfg, workdir, results = tiny_run
    for name in ("partition.csv", "motif_map.json", "filters.txt", "metrics.json", "metrics.jsonl"):
        assert (workdir / name).stat().st_size > 0, name
    described = (workdir / "filters.txt").read_text()
    assert described.count("v = Wo·") == cfg.model.n_filters  # every filter's equation is written out
    assert all("equation" in f for f in json.loads((workdir / "motif_map.json").read_text())["filters"].values())
    for name in ("domains_3d.png", "filter_usage.png", "forecast.png", "traces.png"):
        assert (workdir / "figures" / name).read_bytes()[:4] == b"\x89PNG", name
    rows = list(csv.DictReader(open(workdir / "partition.csv")))
    assert len(rows) == experiment.load_data(cfg.data)[0].n_neurons
    assert {"neuron_id", "location", "filter", "confidence", "true_instance", "true_motif"} <= set(rows[0])
    assert all(0 <= int(r["filter"]) < cfg.model.n_filters for r in rows)
    metrics = json.loads((workdir / "metrics.json").read_text())
    for name in ("model", "model_hard", *cfg.eval.baselines):
        assert len(metrics["forecast"][name]["r2"]) == cfg.eval.horizons
        assert np.isfinite(metrics["forecast"][name]["mse"]).all()
    truth = metrics["truth"]
    assert truth["planted_k"] == 4 and truth["n_instances"] == 52
    # What initialisation alone recovers: the initial parameters of the config's seed, scored the same way.
    exp = experiment.prepare(cfg, train.make_mesh())
    initial = train.evaluate.partition(exp.spec, experiment.init_params(cfg, exp), exp.inputs,
                                       train.evaluate.final_temperatures(cfg))
    expected = train.evaluate.truth_recovery(initial, exp.truth, exp.spec.n_filters)
    assert truth["at_init"] == pytest.approx({k: expected[k] for k in train.evaluate.INIT_KEYS})
    assert "at initialisation: domain ARI" in train.evaluate.summary(results)
    assert 0 < truth["n_domains"] <= experiment.load_data(cfg.data)[0].n_neurons
    assert len(metrics["filters"]) == cfg.model.n_filters
    logged = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    assert [m["step"] for m in logged] == list(range(1, 7))
    assert set(losses.TERMS) <= set(logged[0])
    assert "model/best" in train.evaluate.summary(results).splitlines()[0]
    timings = json.loads((workdir / "timings.json").read_text())
    expected = {"load data", "initial parameters", "compile (first step)", "training", "forecast model_hard",
                "report", *(f"fit {name}" for name in cfg.eval.baselines)}
    assert expected <= set(timings) and all(v >= 0 for v in timings.values())
    # By default the last three quarters of training fix the architectures: the evaluated model is the hard one.
    assert cfg.train.hard_steps == 4 and metrics["forecast"]["model"] == metrics["forecast"]["model_hard"]
    assert described.startswith("The discretised architectures: the evaluated model itself")


def test_the_evaluated_model_computes_only_the_pairs_its_assignment_uses(tiny_run):
    """The evaluated spec lists, per filter, the locations holding member weight ≥ eval.pair_threshold, and
    its forecasts are those of the model computing every pair."""
    cfg, workdir, _ = tiny_run
    exp = experiment.prepare(cfg, train.make_mesh(1, jax.devices()[:1]))
    optimizer = train.optim.make_optimizer(cfg.optim)
    fresh = train.init_state(cfg, exp, optimizer)
    params = train.checkpoint.Checkpointer(workdir / "checkpoints").restore(fresh, 6)[0].params
    evaluated = train.fixed_where_hard(exp, params, cfg)
    every = train.fixed_where_hard(exp, params, short(6, **{"eval.pair_threshold": 0.0}))
    assert every.spec.pair_locations is None and evaluated.spec.fixed_arch == every.spec.fixed_arch
    temps = train.evaluate.final_temperatures(cfg)
    ctx = train.evaluate.context(exp.spec, params, exp.inputs, temps)
    assert evaluated.spec.pair_locations == train.model.active_pairs(ctx, exp.inputs, cfg.eval.pair_threshold)
    n_pairs = sum(map(len, evaluated.spec.pair_locations))
    assert 0 < n_pairs < int(np.asarray(exp.inputs.tables.location_mask).sum()) * cfg.model.n_filters
    fitted = [{"persistence": train.evaluate.fit_baselines(cfg, exp, experiment.segment_traces(exp, "train"))["persistence"]}]
    a = train.evaluate.forecasts(cfg, evaluated, params, fitted)["model"]
    b = train.evaluate.forecasts(cfg, every, params, fitted)["model"]
    np.testing.assert_allclose(a["mse"], b["mse"], rtol=1e-4)
    with pytest.raises(ValueError, match="eval.pair_threshold"):
        train.check_config(short(3, **{"eval.pair_threshold": 1.0}))


@pytest.mark.parametrize("name", ["phantom", "phantom_tiny"])
def test_every_config_trains_on_tiny_data(tmp_path, name):
    """Each shipped config runs end to end (on the tiny phantom, for a few steps)."""
    cfg = load_config(name, **{"data.preset": "tiny", "train.steps": 2, "optim.warmup_steps": 1,
                               "train.log_every": 1})
    assert cfg.optim.total_steps == cfg.anneal.steps == 2
    exp, state = train.train(cfg, str(tmp_path))
    assert int(state.step) == 2
    assert exp.spec.n_filters == cfg.model.n_filters
    assert (tmp_path / "checkpoints").is_dir()


def test_a_model_that_predicts_no_change_scores_exactly_like_persistence():
    """Evaluation alignment: with zero output gain the model is persistence, frame for frame."""
    cfg = short(1)
    exp = experiment.prepare(cfg, train.make_mesh(1, jax.devices()[:1]))
    params = train.model.init(jax.random.key(0), exp.spec, exp.inputs)
    pairs = params.interface.pairs
    still = params._replace(interface=params.interface._replace(
        pairs=pairs._replace(log_gain_out=pairs.log_gain_out - 1e4)))  # exp(-1e4) = 0: y = x[t]
    fitted = train.evaluate.fit_baselines(cfg, exp,
                                          experiment.segment_traces(exp, "train"))
    fitted = {"persistence": fitted["persistence"]}
    fc = train.evaluate.forecasts(cfg, exp, still, [fitted])
    np.testing.assert_array_equal(fc["model"]["n_starts"], fc["persistence"]["n_starts"])
    np.testing.assert_allclose(fc["model"]["mse"], fc["persistence"]["mse"], rtol=1e-5)
    np.testing.assert_allclose(fc["model"]["r2"], fc["persistence"]["r2"], rtol=1e-4, atol=1e-6)


def _params(state):
    return jax.tree.map(np.asarray, jax.device_get(state.params))


def test_resume_reproduces_the_uninterrupted_run(tmp_path, interrupted):
    _, straight = train.train(short(6), str(tmp_path / "straight"))
    with interrupted(4):
        train.train(short(6), str(tmp_path / "resumed"))  # checkpointed at step 3, dies in step 5
    _, resumed = train.train(short(6), str(tmp_path / "resumed"))
    assert int(resumed.step) == 6
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 _params(straight), _params(resumed))
    logged = [json.loads(line)["step"] for line in open(tmp_path / "resumed" / "metrics.jsonl")]
    assert logged == [1, 2, 3, 4, 5, 6]  # the lost step 4 is logged once, after the restart


def test_resume_with_a_changed_config_is_refused(tmp_path):
    train.train(short(6), str(tmp_path))
    with pytest.raises(ValueError, match=r"different config; changed fields: model\.n_ports"):
        train.train(short(6, **{"model.n_ports": 5}), str(tmp_path))


def test_a_field_added_after_a_run_started_blocks_its_resume_only_when_set():
    """Checkpoints written before a config field existed resume while the field keeps its default."""
    current = short(3).to_dict()
    saved = json.loads(json.dumps(current, default=str))
    del saved["model"]["window_norm"]  # as written by a mesojax that did not have the field
    assert train.config_changes(saved, current) == []
    current["model"]["window_norm"] = True
    assert train.config_changes(saved, current) == ["model.window_norm"]
    current["model"]["window_norm"] = False
    current["model"]["n_ports"] = 5
    assert train.config_changes(saved, current) == ["model.n_ports"]


def test_non_finite_loss_stops_with_a_clear_message(tmp_path, monkeypatch):
    real = losses.loss_fn

    def poisoned(*args, **kwargs):
        loss, metrics = real(*args, **kwargs)
        return loss * np.nan, dict(metrics, loss=loss * np.nan)

    monkeypatch.setattr(losses, "loss_fn", poisoned)
    with pytest.raises(train.NonFiniteLossError, match=r"non-finite loss nan \(gradient norm .*\) at step 0; terms: "):
        train.train(short(3), str(tmp_path))


def test_bad_batch_size_for_the_mesh_is_rejected(tmp_path):
    cfg = short(2, **{"train.batch_windows": 3})
    with pytest.raises(ValueError, match="batch_windows"):
        train.train(cfg, str(tmp_path), mesh=train.make_mesh(1, jax.devices()[:2]))


def test_script_runs_and_rejects_unknown_overrides(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    bad = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train.py"), "--config", str(REPO / "configs" / "phantom_tiny.py"),
         "--config.train.nonsense=1", "--workdir", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert bad.returncode != 0 and "nonsense" in bad.stderr


def test_state_readout_of_a_no_change_model_is_the_decoder_on_the_same_frames():
    """``behaviour_readout="state"`` is the decoder of x[t] plus a correction from x̂[t+1] - x[t]; a model
    predicting no change has x̂[t+1] = x[t], so its behaviour scores are those of the ridge decoder of x[t]
    on the same frames (and of an LDA of x[t] or of [x[t], 0] for the modes)."""
    import dataclasses

    cfg = short(1, **{"model.behaviour_readout": "state"})
    exp = experiment.prepare(cfg, train.make_mesh(1, jax.devices()[:1]))
    assert exp.spec.behaviour_readout == "state" and exp.spec.n_behaviour and exp.spec.n_modes
    params = train.model.init(jax.random.key(0), exp.spec, exp.inputs)
    pairs = params.interface.pairs
    still = params._replace(interface=params.interface._replace(
        pairs=pairs._replace(log_gain_out=pairs.log_gain_out - 1e4)))
    ev = train.evaluate
    train_x = experiment.segment_traces(exp, "train")
    temps = ev.final_temperatures(cfg)
    got = ev.behaviour_scores(exp, still, temps, train_x)
    assert got["readout"] == "state"
    h, norm, rec = exp.spec.history, exp.norm, exp.recording
    ((t0, t1),), ((tr0, tr1),) = exp.segments["test"], exp.segments["train"]
    x_tr = np.nan_to_num(train_x[0])[h - 1:-1]
    x_te = np.nan_to_num(experiment.segment_traces(exp, "test")[0])[h - 1:-1]
    z = lambda b: (b - norm.beh_mean) / norm.beh_std  # noqa: E731
    dec = metrics.linear_decoder(x_tr, z(rec.behaviour[tr0:tr1])[h:])
    truth = z(rec.behaviour[t0:t1])[h:]
    np.testing.assert_allclose(got["model_r2"], metrics.r2_score(truth, metrics.decode(dec, x_te)),
                               rtol=1e-4, atol=1e-5)
    modes = rec.modes[t0:t1][h:]
    expected = [metrics.balanced_accuracy(modes, metrics.decode(
        metrics.linear_decoder(a, rec.modes[tr0:tr1][h:], discrete=True), b))
        for a, b in ((x_tr, x_te), (readout.features(x_tr, x_tr), readout.features(x_te, x_te)))]
    assert min(abs(got["model_mode_balanced_accuracy"] - e) for e in expected) < 1e-6
    # The pooled readout reads the same model differently, so the switch is what changed the scores.
    pooled = ev.behaviour_scores(dataclasses.replace(exp, spec=dataclasses.replace(exp.spec, behaviour_readout="pooled")),
                                 still, temps, train_x)
    assert pooled["readout"] == "pooled" and pooled["model_r2"] != got["model_r2"]


@pytest.mark.parametrize("hard_steps", [0, 12])
def test_validation_selects_the_best_step_and_stops_early(tmp_path, hard_steps):
    """``train.val_every`` measures the validation forecast MSE; evaluation gets the best step's
    parameters, ``train.patience`` stops the run, and a rerun of the finished run selects the same. With
    a hard phase only its steps are measured: the evaluated model is the discretised one."""
    cfg = short(30, **{"train.val_every": 5, "train.patience": 2, "train.checkpoint_every": 10,
                       "train.hard_steps": hard_steps})
    exp, state = train.train(cfg, str(tmp_path))
    summary = json.loads((tmp_path / "validation.json").read_text())
    steps = [h["step"] for h in summary["history"]]
    mses = [h["val_mse"] for h in summary["history"]]
    first = 5 if not hard_steps else 20  # the first multiple of 5 after the switch at step 18
    assert steps == list(range(first, first + 5 * len(steps), 5))
    assert train.basis.is_hard(state.params.arch) == bool(hard_steps)
    best = int(np.argmin(mses))
    assert summary["best_step"] == steps[best]
    stopped_early = len(steps) - 1 - best >= 2
    assert stopped_early == (summary["last_step"] < 30)
    assert train.evaluate.validation_mse(cfg, exp, state.params) == pytest.approx(mses[best], rel=1e-5)
    logged = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["val_mse"] for r in logged if "val_mse" in r] == pytest.approx(mses)
    _, again = train.train(cfg, str(tmp_path))  # finished: restores, selects the same step, trains nothing
    for a, b in zip(jax.tree.leaves(_params(state)), jax.tree.leaves(_params(again))):
        np.testing.assert_array_equal(a, b)


def test_validation_needs_a_long_enough_validation_segment():
    with pytest.raises(ValueError, match=r"val segment has \d+ frames"):
        experiment.prepare(short(3, **{"train.val_every": 1, "data.split": (0.79, 0.01, 0.2)}),
                      train.make_mesh(1, jax.devices()[:1]))


def test_fields_whose_default_changed_behaviour_compare_with_the_old_behaviour():
    """A run from before ``behaviour_readout`` / ``data.extreme`` existed had the pooled readout and no
    exclusion: resuming it under the new defaults would change it silently, so it is refused."""
    current = short(3).to_dict()
    saved = json.loads(json.dumps(current, default=str))
    del saved["model"]["behaviour_readout"], saved["data"]["extreme"]
    assert train.config_changes(saved, current) == ["data.extreme", "model.behaviour_readout"]
    current["model"]["behaviour_readout"], current["data"]["extreme"] = "pooled", 0.0
    assert train.config_changes(saved, current) == []


def test_validation_history_pins_the_scored_horizons():
    current = short(3, **{"train.val_every": 1}).to_dict()
    saved = json.loads(json.dumps(current, default=str))
    current["eval"]["horizons"] += 2
    assert train.config_changes(saved, current) == ["eval.horizons"]
    saved["train"]["val_every"] = current["train"]["val_every"] = 0
    assert train.config_changes(saved, current) == []  # without selection, eval settings may change


def test_a_resumed_run_redoes_the_best_steps_of_the_discarded_timeline(tmp_path):
    """Killed after the best parameters at step 20 were saved but before the checkpoint of step 20:
    the resume from step 10 replays step 20, replaces that best step, and selects as the straight run."""
    import shutil

    cfg = short(20, **{"train.val_every": 5, "train.checkpoint_every": 10})
    _, straight = train.train(cfg, str(tmp_path / "a"))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "20")  # as if killed while writing it
    _, resumed = train.train(cfg, str(tmp_path / "b"))
    for a, b in zip(jax.tree.leaves(_params(straight)), jax.tree.leaves(_params(resumed))):
        np.testing.assert_array_equal(a, b)
    assert json.loads((tmp_path / "a" / "validation.json").read_text()) == \
        json.loads((tmp_path / "b" / "validation.json").read_text())


def test_the_report_is_rewritten_from_a_finished_workdir(tiny_run, tmp_path):
    """``scripts/report.py`` / ``train.rewrite_report``: same files from the checkpoint and metrics.json."""
    import shutil

    cfg, workdir, results = tiny_run
    copy = tmp_path / "w"
    shutil.copytree(workdir, copy)
    for name in ("partition.csv", "motif_map.json", "filters.txt", "report.html"):
        (copy / name).unlink()
    shutil.rmtree(copy / "figures")
    again = train.rewrite_report(str(copy))
    page = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), (copy / "report.html").read_text())
    assert "<br>R² h1 " in page  # the per-neuron scores come back from evaluation.npz, without re-evaluating
    assert again["forecast"]["model"]["mse"] == pytest.approx(results["forecast"]["model"]["mse"])
    for name in ("partition.csv", "motif_map.json", "filters.txt", "metrics.json"):
        assert (copy / name).read_text() == (workdir / name).read_text(), name
    assert (copy / "figures" / "forecast.png").is_file()
    table = train.evaluate.summary(again).splitlines()
    # header, one line per horizon, the recovery and the recovery at initialisation
    assert table[0].split()[:3] == ["h", "model", "MSE"] and len(table) == 1 + cfg.eval.horizons + 2


def test_rewriting_the_report_of_an_unfinished_or_missing_run_is_one_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoints/ folder"):
        train.rewrite_report(str(tmp_path))
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "report.py"), "--workdir", str(tmp_path / "none")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 1 and out.stderr.startswith("error: FileNotFoundError") and "Traceback" not in out.stderr


def test_a_saved_config_from_before_a_field_existed_reads_it_as_that_run_had_it():
    merged = train._with_defaults({"data": {"extreme": 5.0}, "extra": 1}, train._defaults())
    assert merged["data"]["extreme"] == 5.0 and merged["extra"] == 1  # saved values kept
    assert merged["train"]["val_every"] == 0 and merged["data"]["split_by"] == "time"  # later fields: defaults
    fresh = train._with_defaults({}, train._defaults())
    assert fresh["model"]["behaviour_readout"] == "pooled"  # a changed default: the legacy value


def test_the_hard_phase_runs_the_fixed_bank_with_the_soft_banks_results(tmp_path, monkeypatch):
    """With train.hard_steps the last steps train the discretised filters through the fixed-architecture
    bank (only the chosen parts computed): the same losses as the soft bank with hard logits, also after a
    resume inside the hard phase; the evaluated model is then the discretised one."""
    cfg = short(6, **{"train.hard_steps": 3})
    exp, fast = train.train(cfg, str(tmp_path / "fixed"))
    assert train.basis.is_hard(fast.params.arch)
    assert exp.spec.fixed_arch == train.basis.fix_bank(exp.spec.basis, fast.params.arch)
    with monkeypatch.context() as m:  # the soft bank throughout, with the same hard logits
        m.setattr(train, "fixed_where_hard", lambda exp, *a, **k: exp)
        _, slow = train.train(cfg, str(tmp_path / "soft"))
    losses_of = lambda d: [json.loads(x)["loss"] for x in open(tmp_path / d / "metrics.jsonl")]  # noqa: E731
    np.testing.assert_allclose(losses_of("fixed"), losses_of("soft"), rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), _params(fast), _params(slow))
    # Resumed at step 3 (the checkpoint is taken before the switch at step 3), and at 6 for the report.
    (tmp_path / "fixed" / "checkpoints" / "6").rename(tmp_path / "fixed-6")
    exp2, resumed = train.train(cfg, str(tmp_path / "fixed"))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), _params(fast), _params(resumed))
    results, _ = train.evaluate.evaluate(cfg, exp2, resumed.params)
    assert results["forecast"]["model"] == results["forecast"]["model_hard"]



@pytest.mark.parametrize("overrides,match", [
    ({"transfer.curve": (0.02, 0.8)}, r"transfer.curve.*0.8"),
    ({"transfer.curve": (0.1,), "eval.baselines": ("ar",)}, "persistence"),
])
def test_a_learning_curve_that_cannot_be_scored_is_refused_before_training(overrides, match):
    with pytest.raises(ValueError, match=match):
        train.check_config(short(3, **overrides))


@pytest.mark.parametrize("origin, expected", [(None, None), ((None,), None), ((), None),
                                              ((1.0, 2.0, 3.0), (1.0, 2.0, 3.0))])
def test_grid_origin_none_from_the_command_line_means_centred(origin, expected):
    """ml_collections reads ``--config.grid.origin=None`` as ``(None,)``: that, and ``()``, mean unset."""
    cfg = load_config("phantom_tiny", **{"grid.origin": origin})
    assert experiment.grid_spec(cfg, train.make_mesh(1, jax.devices()[:1])).origin == expected
