"""Filter splits and merges (mesojax.restructure): exact re-parametrisations, and the trainer's events."""

import json
import pathlib

import jax
import numpy as np
import pytest

from mesojax import assign, config, evaluate, experiment, optim, restructure, train, transfer
from mesojax.data import windows

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained():
    """The tiny phantom after three training steps, and its per-neuron validation errors."""
    cfg = config.load_config_file(REPO / "configs" / "phantom_tiny.py", **{"restructure.windows": 8})
    exp = experiment.prepare(cfg, train.make_mesh())
    optimizer = optim.make_optimizer(cfg.optim)
    state = train.init_state(cfg, exp, optimizer)
    step = train.make_train_step(cfg, exp, optimizer)
    for s in range(3):
        batch = windows.sample_batch(exp.recording, exp.norm, exp.segments["train"], n_windows=4, seed=0, step=s,
                                     length=exp.spec.history + cfg.train.rollout)
        state, _ = step(state, batch)
    temps = evaluate.final_temperatures(cfg)
    fn = restructure.validation_errors(exp.spec, exp.inputs, train._validation_windows(cfg, exp), cfg.train.n_teacher)
    errors = lambda p: fn(p, temps)  # noqa: E731
    part = lambda p: evaluate.partition(exp.spec, p, exp.inputs, temps)  # noqa: E731
    return cfg, exp, state, errors, part


def _mse(errors, params):
    sse, count = errors(params)
    return sse / np.maximum(count, 1.0)


def _filters(exp, part, params):
    return restructure.location_filters(part(params), exp.spec.n_locations, exp.spec.n_filters)


def test_a_swap_exchanges_the_logits_and_twice_is_the_identity(trained):
    _, exp, state, _, part = trained
    lf = _filters(exp, part, state.params)
    assert np.any(lf == 0) and np.any(lf == 1)
    once = restructure.merge(exp.spec, state, exp.inputs, lf, 1, 0)
    # Every neuron's logits are the same numbers, with filters 0 and 1 exchanged at filter 1's locations.
    before = np.asarray(assign.logits(exp.spec.assign, state.params.assign, exp.inputs.assign))
    after = np.asarray(assign.logits(exp.spec.assign, once.params.assign, exp.inputs.assign))
    at = (lf == 1)[np.asarray(exp.inputs.assign.candidates)] & np.asarray(exp.inputs.assign.candidate_mask)
    assert at.sum() > 5
    expected = before.copy()
    expected[at, 0], expected[at, 1] = before[at, 1], before[at, 0]
    np.testing.assert_allclose(after, expected, rtol=1e-5, atol=1e-5)
    twice = restructure.merge(exp.spec, once, exp.inputs, lf, 1, 0)
    for a, b in zip(jax.tree.leaves(twice), jax.tree.leaves(state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_a_merge_moves_the_locations_and_leaves_unrelated_neurons_alone(trained):
    cfg, exp, state, _, part = trained
    lf = _filters(exp, part, state.params)
    src, dst = 1, 0
    merged = restructure.merge(exp.spec, state, exp.inputs, lf, src, dst)
    after = _filters(exp, part, merged.params)
    moved = lf == src
    assert moved.any() and not np.any(after[moved] == src)
    assert np.mean(after[moved] == dst) > 0.9  # the moved locations now run filter dst
    # Teacher-forced, a neuron none of whose candidates was moved predicts exactly as before (free-running,
    # the moved neurons' forecasts reach it through the locations they share).
    cand, mask = np.asarray(exp.inputs.assign.candidates), np.asarray(exp.inputs.assign.candidate_mask)
    far = ~np.any(moved[cand] & mask, axis=1)
    assert far.sum() > 10
    fn = restructure.validation_errors(exp.spec, exp.inputs, train._validation_windows(cfg, exp),
                                       n_teacher=cfg.train.rollout)
    forced = lambda p: _mse(lambda q: fn(q, evaluate.final_temperatures(cfg)), p)  # noqa: E731
    np.testing.assert_allclose(forced(merged.params)[far], forced(state.params)[far], rtol=1e-5, atol=1e-7)
    assert not np.allclose(forced(merged.params)[~far], forced(state.params)[~far])


def test_a_split_into_a_free_filter_leaves_the_model_unchanged(trained):
    _, exp, state, errors, part = trained
    lf = _filters(exp, part, state.params)
    state = restructure.merge(exp.spec, state, exp.inputs, lf, 2, 0)  # frees filter 2 ...
    closed = state.params.assign.gate.at[:, 2].set(-1e4)  # ... entirely: no neuron keeps any weight on it
    state = state._replace(params=state.params._replace(assign=state.params.assign._replace(gate=closed)))
    lf = _filters(exp, part, state.params)
    assert not np.any(lf == 2)
    half = (lf == 0) & (np.arange(len(lf)) % 2 == 0)
    split = restructure.split(exp.spec, state, exp.inputs, half, 0, 2)
    np.testing.assert_allclose(_mse(errors, split.params), _mse(errors, state.params), rtol=1e-4, atol=1e-6)
    before, after = part(state.params), part(split.params)
    moved = half[np.maximum(before["location"], 0)] & (before["location"] >= 0) & (before["filter"] == 0)
    assert moved.sum() > 5 and np.all(after["filter"][moved] == 2)
    np.testing.assert_array_equal(after["location"], before["location"])
    # Adam's moments moved with the parameters: filter 2's basis moments are now filter 0's.
    mu = [x for x in jax.tree.leaves(split.opt_state) if getattr(x, "shape", ()) == state.params.basis.w.shape]
    assert mu and any(np.array_equal(np.asarray(m)[2], np.asarray(m)[0]) and np.abs(np.asarray(m)[0]).sum() > 0
                      for m in mu)


@pytest.mark.parametrize("tolerance, expect", [(-1.0, "none"), (np.inf, "one filter")])
def test_merges_follow_the_tolerance(trained, tolerance, expect):
    _, exp, state, errors, part = trained
    used = len(set(_filters(exp, part, state.params).tolist()) - {-1})
    assert used >= 2
    out, record = restructure.event(state, exp.spec, exp.inputs, partition=part, errors=errors, traces=None,
                                    tolerance=tolerance, min_locations=4, do_merge=True, do_split=False,
                                    rng=np.random.default_rng(0))
    left = len(set(_filters(exp, part, out.params).tolist()) - {-1})
    assert len(record["merges"]) == (0 if expect == "none" else used - 1)
    assert left == (used if expect == "none" else 1)
    assert record["tested"] and all(np.isfinite(t["cost"]) for t in record["tested"])


@pytest.mark.parametrize("field, value, match", [
    ("restructure.split_steps", (3, 40), "within training"), ("restructure.merge_steps", (-1,), "within training"),
    ("restructure.tolerance", -0.1, "≥ 0"), ("restructure.min_locations", 0, "≥ 1")])
def test_bad_restructure_settings_are_refused(field, value, match):
    cfg = config.load_config_file(REPO / "configs" / "phantom_tiny.py", **{field: value})
    with pytest.raises(ValueError, match=f"{field}.*{match}"):
        train.check_config(cfg)


def test_a_split_only_event_needs_no_validation_errors(trained):
    _, exp, state, errors, part = trained
    lf = _filters(exp, part, state.params)
    state = restructure.merge(exp.spec, state, exp.inputs, lf, 2, 0)
    closed = state.params.assign.gate.at[:, 2].set(-1e4)  # filter 2 free: no neuron keeps any weight on it
    state = state._replace(params=state.params._replace(assign=state.params.assign._replace(gate=closed)))
    traces = np.concatenate(experiment.segment_traces(exp, "train"))
    out, record = restructure.event(state, exp.spec, exp.inputs, partition=part, errors=None, traces=traces,
                                    tolerance=0.04, min_locations=2, do_merge=False, do_split=True,
                                    rng=np.random.default_rng(0), min_silhouette=0.0)
    assert not record["merges"] and not record["tested"] and "val_mse" not in record
    assert [s["dst"] for s in record["splits"]] == [2]
    np.testing.assert_allclose(_mse(errors, out.params), _mse(errors, state.params), rtol=1e-4, atol=1e-6)


def test_location_filters_and_split_halves():
    part = {"location": np.array([0, 0, 0, 1, 2, -1]), "filter": np.array([1, 1, 0, 2, 2, -1])}
    assert restructure.location_filters(part, 4, 3).tolist() == [1, 2, 2, -1]
    rng = np.random.default_rng(0)
    fingerprint = np.concatenate([rng.normal(0, 0.1, (6, 3)), rng.normal(5, 0.1, (4, 3))])
    loc_filter = np.zeros(10, np.int64)
    proposals = restructure.halves(fingerprint, np.ones(10, bool), loc_filter, 2, 3, rng)
    assert len(proposals) == 1
    silhouette, src, half = proposals[0]
    assert src == 0 and silhouette > 0.9 and half.tolist() == [False] * 6 + [True] * 4
    assert restructure.halves(fingerprint, np.ones(10, bool), loc_filter, 2, 5, rng) == []  # a half of 4 < 5


def test_a_run_with_events_logs_them_and_resumes_to_the_same_result(tmp_path, interrupted):
    # Events at step 2 (soft phase), at the checkpointed step 6 (hard phase from step 5; the event runs after
    # that checkpoint) and at 7, where the run is cut; every merge is kept (a huge tolerance), and a bank of 4
    # leaves free filters for the splits. One test for both phases: every run here compiles two steps.
    cfg = config.load_config_file(REPO / "configs" / "phantom_tiny.py", **{
        "train.steps": 8, "train.hard_steps": 3, "model.n_filters": 4, "train.checkpoint_every": 3,
        "train.log_every": 1, "restructure.split_steps": (2, 6), "restructure.merge_steps": (2, 6, 7),
        "restructure.tolerance": 1e9, "restructure.min_silhouette": 0.0, "restructure.windows": 4})
    exp, full = train.train(cfg, str(tmp_path / "full"))
    events = json.loads((tmp_path / "full" / "restructure.json").read_text())
    assert [e["step"] for e in events] == [2, 6, 7]
    assert events[0]["merges"] and events[0]["splits"] and events[2]["merges"] and not events[2]["splits"]
    assert events[1]["tested"] and all(np.isfinite(t["cost"]) for t in events[1]["tested"])
    # The split at step 6, in the hard phase, copied the fixed architecture into the free filter.
    split = events[1]["splits"][0]
    assert exp.spec.fixed_arch[split["dst"]] == exp.spec.fixed_arch[split["src"]]
    assert int(full.step) == 8 and all(np.isfinite(x).all() for x in jax.tree.leaves(full.params))
    with interrupted(7):
        train.train(cfg, str(tmp_path / "cut"))
    _, resumed = train.train(cfg, str(tmp_path / "cut"))
    for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(full.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)

    def moves(record):
        return [(e["step"], [(m["src"], m["dst"]) for m in e["merges"]], [(m["src"], m["dst"]) for m in e["splits"]])
                for e in record]

    assert moves(json.loads((tmp_path / "cut" / "restructure.json").read_text())) == moves(events)
    logged = [json.loads(line) for line in open(tmp_path / "cut" / "metrics.jsonl")]
    assert [r["step"] for r in logged if "restructure" in r] == [2, 6, 7]  # each event logged once


def test_a_frozen_basis_and_its_scratch_arm_are_never_restructured():
    cfg = config.load_config_file(REPO / "configs" / "phantom_tiny.py", **{
        "restructure.split_steps": (5,), "restructure.merge_steps": (10,), "transfer.steps": 4})
    frozen = transfer.frozen_config(cfg)
    assert tuple(frozen.restructure.split_steps) == () and tuple(frozen.restructure.merge_steps) == ()
    train.check_config(frozen)  # the original steps lie beyond its 4 steps
    scratch = transfer.scratch_config(cfg, "a")
    assert tuple(scratch.restructure.split_steps) == () and tuple(scratch.restructure.merge_steps) == ()


def test_a_validation_segment_too_short_for_the_merge_test_fails_before_training(tmp_path):
    cfg = config.load_config_file(REPO / "configs" / "phantom_tiny.py", **{
        "train.steps": 4, "restructure.merge_steps": (2,), "data.split": (0.94, 0.01, 0.05)})
    with pytest.raises(ValueError, match=r"restructure.merge_steps.*data.split = \(0.94, 0.01, 0.05\).*no window"):
        train.train(cfg, str(tmp_path / "run"))
    assert not (tmp_path / "run" / "metrics.jsonl").exists() or not (tmp_path / "run" / "metrics.jsonl").read_text()
