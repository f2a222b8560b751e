"""Representational similarity on constructed cases with known answers, and on a fitted tiny model."""

import json

import numpy as np
import pytest

from mesojax import analysis
from mesojax.data import Recording


def _conditioned(seed=0, n_cond=6, t=600, n=30, noise=0.3):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_cond), 10)[np.arange(t) % (10 * n_cond)]  # blocks of 10 frames, cycling
    patterns = rng.normal(size=(n_cond, n))
    return labels, patterns[labels] + noise * rng.normal(size=(t, n))


def test_rdm_is_a_correlation_distance_matrix():
    labels = np.array([0, 0, 1, 1, 2, 2])
    x = np.array([[1, 2, 3], [1, 2, 3], [3, 2, 1], [3, 2, 1], [1, 2, 4], [1, 2, 4]], float)
    d = analysis.rdm(x, labels, 3)
    np.testing.assert_allclose(d, d.T)
    np.testing.assert_allclose(np.diag(d), 0.0)
    assert d[0, 1] == pytest.approx(2.0)  # anti-correlated patterns
    assert d[0, 2] == pytest.approx(1 - np.corrcoef([1, 2, 3], [1, 2, 4])[0, 1])


def test_an_identical_copy_scores_one_at_the_noise_ceiling():
    labels, x = _conditioned(noise=0.05)
    out = analysis.rsa(x, x.copy(), labels, 6, n_null=200)
    assert out["similarity"] == pytest.approx(1.0)
    assert out["ceiling"] > 0.95 and out["p_value"] < 0.05 and out["null_p95"] < 0.9
    assert out["similarity_cross_half"] == pytest.approx(out["ceiling_split_half"])  # a copy is as reliable as the data


def test_a_shuffled_copy_sits_at_the_null():
    labels, x = _conditioned()
    rng = np.random.default_rng(1)
    shuffled = x[rng.permutation(len(x))]  # frames moved across conditions: no representational structure
    scores = [analysis.rsa(x, shuffled[np.random.default_rng(s).permutation(len(x))], labels, 6, n_null=100,
                           seed=s) for s in range(5)]
    assert np.mean([r["p_value"] for r in scores]) > 0.2
    assert abs(np.mean([r["similarity"] for r in scores]) - np.mean([r["null_mean"] for r in scores])) < 0.3


def test_condition_labels_prefer_stimulus_then_modes_then_behavioural_states_then_time():
    t = 40
    base = dict(traces=np.zeros((t, 2)), timestamps=np.arange(float(t)))
    stim = np.zeros((t, 2))
    stim[5:10, 1] = 1.0
    labels, names = analysis.condition_labels(Recording(**base, stimulus=stim), ((0, t),))
    assert names[:2] == ("no stimulus", "stimulus 0") and labels[5] == 2 and labels[0] == 0
    modes = np.arange(t) % 3
    labels, names = analysis.condition_labels(Recording(**base, modes=modes, mode_names=("a", "b", "c")), ((0, t),))
    assert names == ("a", "b", "c") and labels.tolist() == modes.tolist()
    both = Recording(**base, stimulus=stim, modes=modes, mode_names=("a", "b", "c"))
    labels, names = analysis.condition_labels(both, ((0, t),))  # stimulus × state
    assert len(names) == 9 and names[7] == "stimulus 1 / b" and labels[7] == 2 * 3 + modes[7]
    beh = np.stack([np.linspace(-1, 1, t), (np.arange(t) % 4 == 0).astype(float)], 1)
    rec = Recording(**base, behaviour=beh, behaviour_names=("w/velocity", "w/reversal"))
    labels, names = analysis.condition_labels(rec, ((0, t),), prefix="w/")
    assert names[-1] == "reversal" and len(names) == 6 and (labels[np.arange(t) % 4 == 0] == 5).all()
    assert names[0] == "no reversal, velocity 1/5" and sorted(set(labels[np.arange(t) % 4 != 0])) == [0, 1, 2, 3, 4]
    labels, names = analysis.condition_labels(Recording(**base), ((0, 20), (20, 40)), n_time_bins=4)
    assert labels[:20].tolist() == labels[20:].tolist() == np.repeat(np.arange(4), 5).tolist()


def test_learning_curve_scores_every_arm_on_the_same_test_frames(tmp_path):
    from mesojax import config, train, transfer

    cfg = config.load_config_file("configs/phantom_tiny.py", **{
        "train.steps": 2, "transfer.steps": 2, "eval.mlp_steps": 5, "eval.rsa": False,
        "eval.baselines": ("persistence", "ar")})
    exp, state = train.train(cfg, str(tmp_path / "source"))
    scratch = cfg.copy_and_resolve_references()
    with scratch.unlocked():
        scratch.data.seed = 1
    curve = analysis.learning_curve(transfer.frozen_config(cfg, seed=1), scratch, state.params,
                                    exp.recording.behaviour_names, str(tmp_path / "curve"), fractions=(0.3, 0.7))
    assert curve["fractions"] == [0.3, 0.7] and curve["train_frames"] == [90, 210]
    assert curve["n_test_starts"][0] == curve["n_test_starts"][1]  # the same test segment at every size
    assert set(curve["mse"]) == {"transfer", "scratch", "persistence", "ar"}
    assert all(np.isfinite(v).all() for v in curve["mse"].values())
    # Persistence does not learn: across sizes its MSE changes only with the normalisation (z-scores from
    # each size's own training frames), so each arm is read relative to it.
    rel = np.asarray(curve["relative_to_persistence"]["transfer"])
    np.testing.assert_allclose(rel, np.asarray(curve["mse"]["transfer"]) / np.asarray(curve["mse"]["persistence"]))
    again = analysis.learning_curve(transfer.frozen_config(cfg, seed=1), scratch, state.params,
                                    exp.recording.behaviour_names, str(tmp_path / "curve"), fractions=(0.3, 0.7))
    assert again == curve  # finished runs are read back, not redone
    from mesojax import report

    fig = report.figure_learning_curve(curve)
    assert [ax.get_title() for ax in fig.axes] == ["horizon 1", "horizon 5"]
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["transfer", "scratch", "best baseline", "persistence"]
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), rel[:, 0])
    # Pooled with itself, a curve is unchanged; the transfer's wins count once per circuit.
    pooled = analysis.pool_curves([curve, curve])
    np.testing.assert_allclose(pooled["mse"]["transfer"], curve["mse"]["transfer"], rtol=1e-6)
    wins = [int(t[0] < s[0]) for t, s in zip(curve["mse"]["transfer"], curve["mse"]["scratch"])]
    assert pooled["n_folds"] == 2 and pooled["transfer_beats_scratch_h1"] == [2 * w for w in wins]
    # A finished run's own report takes the curve in (here: one of the curve's runs stands for the source).
    run = tmp_path / "curve" / "0.7" / "transfer"
    train.add_to_report(str(run), learning_curve=curve)
    assert (run / "figures" / "learning_curve.png").is_file()
    page = (run / "report.html").read_text()
    assert "One-shot learning" in page and page.count("<td class='best'>") >= 2
    assert json.loads((run / "metrics.json").read_text())["learning_curve"]["fractions"] == [0.3, 0.7]



def test_a_basis_fitted_to_the_generating_motifs_beats_scratch_with_little_data(tmp_path):
    """The known answer of one-shot learning: phantom seed 1 is generated by the same motif types as the
    source's phantom (another layout), so at 2 % of its frames (30) the frozen basis fitted on seed 0
    forecasts better than the same model trained from scratch on those frames, at every horizon."""
    from mesojax import config, train, transfer

    # 40 steps of search (no hard phase): too short a run to also fix architectures, and the known answer
    # is about the basis carried over, not about the schedule.
    cfg = config.load_config_file("configs/phantom_tiny.py", **{
        "train.steps": 40, "train.hard_steps": 0, "transfer.steps": 40, "eval.rsa": False,
        "eval.baselines": ("persistence",), "data.overrides.n_steps": 1500})
    exp, state = train.train(cfg, str(tmp_path / "source"))
    scratch = cfg.copy_and_resolve_references()
    with scratch.unlocked():
        scratch.data.seed = 1
    curve = analysis.learning_curve(transfer.frozen_config(cfg, seed=1), scratch, state.params,
                                    exp.recording.behaviour_names, str(tmp_path / "curve"), fractions=(0.02,))
    assert curve["train_frames"] == [30]
    transfer_mse, scratch_mse = (np.asarray(curve["mse"][arm][0]) for arm in ("transfer", "scratch"))
    assert (transfer_mse < scratch_mse).all(), (transfer_mse, scratch_mse)


def test_simulate_without_innovations_is_a_free_rollout():
    import jax
    import jax.numpy as jnp

    from mesojax import config, evaluate, experiment, model, train

    cfg = config.load_config_file("configs/phantom_tiny.py")
    exp = experiment.prepare(cfg, train.make_mesh())
    params = experiment.init_params(cfg, exp)
    temps = evaluate.final_temperatures(cfg)
    ctx = evaluate.context(exp.spec, params, exp.inputs, temps)
    x = jnp.asarray(np.nan_to_num(experiment.segment_traces(exp, "train")[0][:12]))
    stim = jnp.asarray(experiment.segment_stimulus(exp, "train")[0][:12])
    h = exp.spec.history
    free = model.rollout(exp.spec, params, exp.inputs, ctx, x, stim, temps, n_teacher=0)[0].x_next
    sim = model.simulate(exp.spec, params, exp.inputs, ctx, x[:h], stim, temps, jax.random.key(0))
    np.testing.assert_allclose(sim, free, rtol=1e-5, atol=1e-6)
    noisy = model.simulate(exp.spec, params, exp.inputs, ctx, x[:h], stim, temps, jax.random.key(0), noise=0.1)
    assert noisy.shape == free.shape and not np.allclose(noisy, free)
    # The innovation enters the frame it is added to: the first simulated frame differs by exactly it.
    eps = 0.1 * jax.random.normal(jax.random.key(0), free.shape)
    np.testing.assert_allclose(noisy[0] - free[0], eps[0], rtol=1e-4, atol=1e-5)


def test_clusters_recover_separated_groups_and_not_shuffled_labels():
    rng = np.random.default_rng(0)
    truth = np.repeat(np.array(["a", "b", "c"]), 40)
    centres = {"a": [0, 0, 5], "b": [5, 0, 0], "c": [0, 5, 0]}
    x = np.asarray([centres[t] for t in truth], float) + 0.5 * rng.normal(size=(120, 3))
    x[5] = np.nan  # an unclaimed neuron is left out, not clustered
    labels = {"type": truth, "shuffled": rng.permutation(truth), "instance": np.where(np.arange(120) < 60, 0, -1)}
    out = analysis.cluster_scores(x, labels)
    assert out["type"]["cluster_ari"] == 1.0 and out["type"]["k"] == 3 and out["type"]["n_scored"] == 119
    assert abs(out["shuffled"]["cluster_ari"]) < 0.05
    assert "instance" not in out  # one known label: nothing to cluster against
    np.testing.assert_array_equal(analysis.kmeans(x[:5], 2, seed=3), analysis.kmeans(x[:5], 2, seed=3))


def test_neuron_features_read_the_port_a_neuron_follows():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(200, 2, 3))  # two pairs, three ports
    data = np.stack([v[:, 0, 2], -v[:, 1, 0], rng.normal(size=200)], axis=1) + 0.1 * rng.normal(size=(200, 3))
    part = {"location": np.array([4, 7, -1]), "filter": np.array([1, 0, -1])}
    weight = np.array([[0.2, 0.8], [0.9, 0.1], [0.5, 0.5]])
    f = analysis.neuron_features(weight, part, data, v, np.array([[4, 1], [7, 0]]))
    np.testing.assert_array_equal(f[:2, :2], weight[:2])
    assert np.argmax(f[0, 2:]) == 2 and f[0, 4] > 0.9 and np.argmin(f[1, 2:]) == 0 and f[1, 2] < -0.9
    assert np.isnan(f[2, 2:]).all()  # unclaimed: no role
