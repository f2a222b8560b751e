"""Trials (segments never joined) and retinotopic stimulus (each field reads its own channels)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mesojax import config, evaluate, experiment, model, spatial, train
from mesojax.data import Recording, ValidationError, sources, storage, synthetic, windows


# ----------------------------------------------------------------------------------------------- splits
@pytest.mark.parametrize("fractions", [(0.7, 0.1, 0.2), (0.5, 0.0, 0.5), (1.0, 0.0, 0.0)])
def test_one_trial_splits_exactly_like_split_time(fractions):
    flat = windows.split_time(300, fractions)
    assert windows.split(300, fractions) == {k: ((a, b),) if b > a else () for k, (a, b) in flat.items()}


def test_time_split_takes_the_same_share_of_every_trial_and_trial_split_holds_out_whole_trials():
    trials = [(0, 100), (100, 160), (160, 300)]
    by_time = windows.split(300, (0.5, 0.25, 0.25), trials)
    for k, (a, b) in enumerate(trials):
        pieces = [by_time[name][k] for name in windows.SPLITS]
        assert pieces[0][0] == a and pieces[-1][1] == b  # the trial is covered, in order, nothing joined
        assert all(p[1] == q[0] for p, q in zip(pieces, pieces[1:]))
    by_trial = windows.split(300, (0.34, 0.33, 0.33), trials, by="trial")
    assert by_trial == {"train": ((0, 100),), "val": ((100, 160),), "test": ((160, 300),)}
    with pytest.raises(ValidationError, match="rounds to no trial"):
        windows.split(300, (0.8, 0.1, 0.1), trials, by="trial")
    with pytest.raises(ValidationError, match="data.split_by"):
        windows.split(300, (0.8, 0.1, 0.1), trials, by="frames")


def test_window_draws_stay_inside_one_piece_and_one_piece_draws_as_before():
    segment = ((0, 40), (100, 112), (200, 260))
    starts = np.concatenate([windows.window_starts(segment, 10, 64, seed=1, step=s) for s in range(50)])
    inside = [(a <= starts) & (starts + 10 <= b) for a, b in segment]
    assert np.logical_or.reduce(inside).all()
    assert all(m.any() for m in inside)  # every piece long enough is drawn from
    for step in range(5):  # a single piece: the draw is integers(t0, t1 - length + 1), as before trials
        want = np.random.default_rng([3, step]).integers(20, 300 - 8 + 1, size=6)
        np.testing.assert_array_equal(windows.window_starts((20, 300), 8, 6, seed=3, step=step), want)
    with pytest.raises(ValidationError, match="no piece"):
        windows.window_starts(((0, 5), (10, 15)), 8, 2, seed=0, step=0)


def test_the_normaliser_reads_only_the_segment_pieces():
    x = np.zeros((200, 2), np.float32)
    x[50:100] = 1000.0  # a stretch outside the pieces: must not move the statistics
    x[:50, 0], x[100:, 0] = np.arange(50), np.arange(100)
    rec = Recording(traces=x, timestamps=np.arange(200.0))
    norm = windows.fit_normalizer(rec, ((0, 50), (100, 200)), extreme=None)
    inside = np.concatenate([x[:50], x[100:]])
    np.testing.assert_allclose(norm.mean, inside.mean(0), rtol=1e-6)


# -------------------------------------------------------------------------------------------- recording
def test_trials_let_timestamps_restart_but_not_go_back_inside_a_trial():
    t = np.concatenate([np.arange(5.0), np.arange(5.0)])
    rec = Recording(traces=np.zeros((10, 2)), timestamps=t, trial_starts=[0, 5])
    assert rec.trials == [(0, 5), (5, 10)]
    with pytest.raises(ValidationError, match=r"timestamps.*row 5"):
        Recording(traces=np.zeros((10, 2)), timestamps=t)
    bad = t.copy()
    bad[7] = 0.5
    with pytest.raises(ValidationError, match=r"row 7.*within trial 1"):
        Recording(traces=np.zeros((10, 2)), timestamps=bad, trial_starts=[0, 5])
    for starts, problem in (([1, 5], "frame 0"), ([0, 5, 5], "strictly increasing"), ([0, 10], "below T")):
        with pytest.raises(ValidationError, match=problem):
            Recording(traces=np.zeros((10, 2)), timestamps=np.arange(10.0), trial_starts=starts)
    win = rec.window(3, 9)
    assert win.trial_starts.tolist() == [0, 2] and win.trials == [(0, 2), (2, 6)]


def test_stimulus_positions_need_a_stimulus_of_matching_width():
    with pytest.raises(ValidationError, match="without a stimulus"):
        Recording(traces=np.zeros((4, 2)), timestamps=np.arange(4.0), stimulus_positions=np.zeros((3, 3)))
    with pytest.raises(ValidationError, match="stimulus_positions"):
        Recording(traces=np.zeros((4, 2)), timestamps=np.arange(4.0), stimulus=np.zeros((4, 2)),
                  stimulus_positions=np.zeros((3, 3)))


def test_store_round_trip_keeps_trials_and_stimulus_positions(tmp_path):
    ph = synthetic.make_phantom(synthetic.preset("tiny", n_steps=60, n_trials=3, retinotopic_stimulus=True))
    rec = ph.recording
    storage.write_recording(tmp_path / "recording", rec)
    back = storage.open_recording(tmp_path / "recording")
    np.testing.assert_array_equal(back.trial_starts, rec.trial_starts)
    np.testing.assert_array_equal(back.stimulus_positions, rec.stimulus_positions)
    np.testing.assert_array_equal(back.timestamps, rec.timestamps)
    # ... and through the store data source, which registers the sources to the circuit.
    storage.write_connectome(tmp_path / "connectome", ph.circuit.connectome)
    cfg = config.load_config_file("configs/store.py", **{"data.path": str(tmp_path)})
    loaded = sources.load(cfg.data).recording
    np.testing.assert_array_equal(loaded.trial_starts, rec.trial_starts)
    np.testing.assert_array_equal(loaded.stimulus_positions, rec.stimulus_positions)


def test_phantom_trials_restart_the_clock_and_are_independent_runs():
    ph = synthetic.make_phantom(synthetic.preset("tiny", n_steps=120, n_trials=2, retinotopic_stimulus=True))
    rec = ph.recording
    assert rec.trial_starts.tolist() == [0, 60] and rec.timestamps[60] == 0.0
    assert rec.stimulus.shape[1] == ph.circuit.n_instances
    np.testing.assert_allclose(rec.stimulus_positions, ph.circuit.instance_center)
    one = synthetic.make_phantom(synthetic.preset("tiny", n_steps=60))
    # Trial 0 is the untrialled phantom's start; trial 1 has its own streams (not a continuation).
    assert not np.allclose(rec.traces[60:], one.recording.traces)


# ---------------------------------------------------------------------------------------- retinotopy
@pytest.mark.parametrize("shape", ["sphere", "column"])
def test_stimulus_tables_hold_exactly_the_channels_inside_each_field(shape):
    rng = np.random.default_rng(0)
    xyz = rng.uniform(0, 60, size=(80, 3)).astype(np.float32)
    spec = spatial.GridSpec(24.0, 12.0, shape=shape, height_um=30.0 if shape == "column" else None)
    grid = spatial.build_grid(xyz, spec)
    pos = rng.uniform(0, 60, size=(25, 3)).astype(np.float32)
    st = spatial.stimulus_tables(pos, grid)
    d = (pos[None] - grid.centers[:, None]) * np.asarray(grid.scale)  # [L, S, 3], unit-aspect fields
    if shape == "sphere":
        inside = (d ** 2).sum(-1) <= grid.radius ** 2
    else:
        across = np.delete(d, spec.axis, axis=-1)
        inside = ((across ** 2).sum(-1) <= grid.radius ** 2) & (np.abs(d[..., spec.axis]) <= grid.radius)
    got = np.zeros_like(inside)
    for loc in range(grid.n_locations):
        got[loc, st.channels[loc][st.mask[loc]]] = True
        dist = np.linalg.norm(d[loc, st.channels[loc][st.mask[loc]]], axis=-1)
        assert np.all(np.diff(dist) >= -1e-4)  # nearest first
    np.testing.assert_array_equal(got, inside)
    with pytest.raises(ValidationError, match="no stimulus channel"):
        spatial.stimulus_tables(pos + 1e4, grid)


@pytest.fixture(scope="module")
def retinotopic():
    cfg = config.load_config_file(
        "configs/phantom_tiny.py", **{"data.overrides.retinotopic_stimulus": True, "data.overrides.n_trials": 3})
    exp = experiment.prepare(cfg, train.make_mesh(1, jax.devices()[:1]))
    return cfg, exp, experiment.init_params(cfg, exp)


def test_a_location_reads_only_the_stimulus_of_its_own_field(retinotopic):
    cfg, exp, params = retinotopic
    spec, inputs = exp.spec, exp.inputs
    assert spec.n_local_stimulus == inputs.stim_channels.shape[1] and spec.basis.n_in == spec.n_ports * 2 + spec.n_local_stimulus
    temps = evaluate.final_temperatures(cfg)
    ctx = model.context(spec, params, inputs, temps)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(spec.history, spec.n_neurons)), jnp.float32)
    state = model.init_state(spec)
    neuron = 7

    def out(stim):
        return model.step(spec, params, inputs, ctx, x, stim, state, temps)[0].x_next[neuron]

    grad = jax.grad(out)(jnp.ones(exp.recording.stimulus.shape[1]))
    tables = exp.tables
    locs = tables.candidates[neuron][tables.candidate_mask[neuron]]
    seen = np.zeros(grad.shape[0], bool)
    for loc in locs:
        seen[np.asarray(inputs.stim_channels[loc])[np.asarray(inputs.stim_mask[loc])]] = True
    assert np.all(np.asarray(grad)[~seen] == 0.0) and np.any(np.asarray(grad)[seen] != 0.0)


def test_trials_and_retinotopic_stimulus_train_and_evaluate_without_joining_trials(retinotopic, tmp_path):
    cfg, exp, _ = retinotopic
    assert all(len(exp.segments[name]) == 3 for name in windows.SPLITS)
    cfg = config.load_config_file("configs/phantom_tiny.py", **{
        "data.overrides.retinotopic_stimulus": True, "data.overrides.n_trials": 3, "train.steps": 3})
    results = train.run(cfg, str(tmp_path / "w"))
    fc = results["forecast"]["model"]
    # Starts per trial: the test pieces are scored apart (stride 4 over each 20-frame piece).
    h_max, window = cfg.eval.horizons, cfg.eval.warmup + cfg.model.history
    per_piece = [len(range(window - 1, (b - a) - h_max, cfg.eval.stride)) for a, b in exp.segments["test"]]
    assert fc["n_starts"] == sum(per_piece)
    assert np.isfinite(fc["mse"]).all() and "instance" in results["labels"]
    for scores in results["labels"].values():  # the unsupervised clusters are scored with the domains
        assert -1.0 <= scores["cluster_ari"] <= 1.0 and 2 <= scores["k"] <= scores["n_labels"]


def test_a_split_by_trial_needs_every_share_to_get_a_trial():
    cfg = config.load_config_file("configs/phantom_tiny.py", **{
        "data.overrides.n_trials": 2, "data.split_by": "trial"})
    with pytest.raises(ValidationError, match="rounds to no trial"):
        experiment.prepare(cfg, train.make_mesh(1, jax.devices()[:1]))


def test_label_scores_match_a_perfect_and_a_shuffled_partition():
    part = {"location": np.repeat(np.arange(5), 4), "filter": np.tile([0, 0, 1, 1], 5)}
    domain = part["location"] * 2 + part["filter"]
    got = evaluate.label_scores(part, {"same": domain, "types": np.where(part["filter"] == 0, "a", "b"),
                                       "unknown": np.full(20, -1)}, n_filters=2)
    assert got["same"]["domain_ari"] == pytest.approx(1.0) and got["types"]["filter_ari"] == pytest.approx(1.0)
    assert got["types"]["contingency"] == {"a": [10, 0], "b": [0, 10]} and "unknown" not in got


def test_use_trials_false_treats_the_recording_as_one_stretch():
    cfg = config.load_config_file("configs/phantom_tiny.py", **{
        "data.overrides.n_trials": 3, "data.use_trials": False})
    exp = experiment.prepare(cfg, train.make_mesh(1, jax.devices()[:1]))
    flat = windows.split_time(300, tuple(cfg.data.split))
    assert exp.segments == {k: ((a, b),) for k, (a, b) in flat.items()}


def test_stimulus_channels_outside_every_field_are_reported(monkeypatch):
    real = experiment.load_data

    def one_far_channel(cfg):
        data = real(cfg)
        rec = data.recording
        stim = np.concatenate([rec.stimulus, rec.stimulus[:, :1]], axis=1)
        pos = np.concatenate([rec.stimulus_positions, [[1e4, 1e4, 1e4]]]).astype(np.float32)
        return data._replace(recording=dataclasses.replace(rec, stimulus=stim, stimulus_positions=pos))

    monkeypatch.setattr(experiment, "load_data", one_far_channel)
    cfg = config.load_config_file("configs/phantom_tiny.py", **{"data.overrides.retinotopic_stimulus": True})
    exp = experiment.prepare(cfg, train.make_mesh(1, jax.devices()[:1]))
    report = exp.reports["stimulus"]
    assert report.excluded["unread_stimulus_channels"] == (52,) and "read by no location" in str(report)


def test_user_given_centres_replace_the_lattice(tmp_path):
    """A column lattice given as points (the axes of anatomical columns): one field per column."""
    ph = synthetic.make_phantom(synthetic.preset("tiny", n_steps=60, instance_height_um=60.0))
    centres = np.asarray(ph.circuit.instance_center, np.float32)
    far = np.array([[1e4, 0, 0]], np.float32)  # holds no neuron: dropped
    spec = spatial.GridSpec(20.0, shape="column", height_um=80.0)
    grid = spatial.build_grid(ph.circuit.connectome.xyz, spec, centers=np.concatenate([centres, far]))
    np.testing.assert_allclose(grid.centers, centres, atol=1e-4)
    assert grid.lattice[:, 0].tolist() == list(range(len(centres)))
    tables = spatial.build_tables(ph.circuit.connectome.xyz, grid)
    first = tables.candidates[:, 0]
    for inst in range(ph.circuit.n_instances):  # every column's neurons share their nearest field
        assert len(set(first[ph.truth.instance == inst].tolist())) == 1
    path = tmp_path / "centres.csv"
    path.write_text("x,y,z\n" + "\n".join(",".join(map(str, p)) for p in centres.tolist()) + "\n")
    np.testing.assert_allclose(spatial.load_centers(path), centres, atol=1e-4)
    (tmp_path / "bad.csv").write_text("x,y\n1,2\n")
    with pytest.raises(ValidationError, match="'z'.*missing column"):
        spatial.load_centers(tmp_path / "bad.csv")
    cfg = config.load_config_file("configs/phantom_tiny.py", **{
        "data.overrides.instance_height_um": 60.0, "grid.shape": "column", "grid.diameter_um": 20.0,
        "grid.height_um": 80.0, "grid.centers": str(path)})
    exp = experiment.prepare(cfg, train.make_mesh(1, jax.devices()[:1]))
    assert exp.grid.n_locations == len(centres)


def test_trials_of_many_lengths_share_one_compiled_pass_and_give_the_unpadded_rows(retinotopic):
    cfg, exp, params = retinotopic
    temps = evaluate.final_temperatures(cfg)
    x = np.concatenate(experiment.segment_traces(exp, "train"))
    stim = np.concatenate(experiment.segment_stimulus(exp, "train"))
    evaluate.piece_predictions(exp.spec, params, exp.inputs, temps, x[:40], stim[:40])
    before = evaluate.one_step_predictions._cache_size()
    lengths = (37, 61, 90, 127)
    got = [evaluate.piece_predictions(exp.spec, params, exp.inputs, temps, x[:t], stim[:t]) for t in lengths]
    assert evaluate.one_step_predictions._cache_size() == before  # every length reused the first program
    for t, g in zip(lengths, got):
        want = evaluate.one_step_predictions(exp.spec, params, exp.inputs, temps, jnp.asarray(np.nan_to_num(x[:t])),
                                             jnp.asarray(stim[:t]))
        np.testing.assert_array_equal(g.x_next, np.asarray(want.x_next))
