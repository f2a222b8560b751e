"""End to end on the real C. elegans files: the union of animals, unidentified neurons, transfer.

Skipped (by the ``celegans_dir`` fixture) only when ../shared is absent.
"""

import csv
import json
import pathlib

import jax
import numpy as np
import pytest

from mesojax import experiment, train, transfer
from mesojax.config import load_config_file

CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "celegans.py"

TRAIN_ANIMALS = ("2022-07-26-31", "2022-07-26-38")
HELD_OUT = "2022-07-27-45"


def tiny(celegans_dir, steps: int = 2):
    return load_config_file(CONFIG, **{
        "data.path": str(celegans_dir), "data.animals": TRAIN_ANIMALS, "transfer.animals": (HELD_OUT,),
        "train.steps": steps, "transfer.steps": steps, "train.log_every": 1, "optim.warmup_steps": 1,
        "eval.horizons": 3, "eval.stride": 8, "eval.mlp_steps": 20,
    })


@pytest.fixture(scope="module")
def celegans_run(celegans_dir, tmp_path_factory):
    cfg = tiny(celegans_dir)
    cfg.transfer.curve = (0.3,)  # the held-out animal's one-shot learning curve, one share
    workdir = tmp_path_factory.mktemp("celegans")
    return cfg, workdir, train.run(cfg, str(workdir))


def test_prepare_builds_one_circuit_of_the_animals(celegans_dir):
    cfg = tiny(celegans_dir)
    exp = experiment.prepare(cfg, train.make_mesh(1))
    assert exp.group_names == TRAIN_ANIMALS
    assert exp.spec.n_groups == 2
    counts = np.bincount(exp.neuron_group)
    assert counts.tolist() == [146, 141]  # every recorded source is a model neuron
    placed = exp.connectome.placed
    has_candidate = exp.tables.candidate_mask.any(-1)
    np.testing.assert_array_equal(has_candidate, placed)  # unidentified: no position, no candidate
    assert (exp.connectome.cell_type[~placed] == "unidentified").all()
    # Every identified neuron of the first animal sits at its atlas position (first animal: no shift).
    first = exp.neuron_group == 0
    assert exp.connectome.ids[first & placed][0].startswith("2022-07-26-31/")
    # Behaviour: velocity, head angle and reversal (0/1) per animal, each read from its own animal.
    assert [n.split("/")[1] for n in exp.recording.behaviour_names] == ["velocity", "head_angle", "reversal"] * 2
    np.testing.assert_array_equal(exp.behaviour_group, [0, 0, 0, 1, 1, 1])
    loc_group = np.asarray(exp.inputs.location_group)[np.asarray(exp.tables.location_mask)]
    assert set(loc_group.tolist()) == {0, 1}


def test_celegans_run_writes_per_animal_and_transfer_results(celegans_run):
    cfg, workdir, results = celegans_run
    assert set(results["groups"]) == set(TRAIN_ANIMALS)
    for name in ("model", *cfg.eval.baselines):
        for animal in TRAIN_ANIMALS:
            r2 = results["groups"][animal]["forecast"][name]["r2"]
            assert len(r2) == cfg.eval.horizons and np.isfinite(r2).all()
    beh = results["groups"][TRAIN_ANIMALS[0]]["behaviour"]
    reversal = beh["targets"][f"{TRAIN_ANIMALS[0]}/reversal"]
    assert 0.0 <= reversal["model_balanced_accuracy"] <= 1.0
    assert 0.0 <= reversal["linear_decoder_balanced_accuracy"] <= 1.0
    held = results["transfer"][HELD_OUT]
    assert held["basis_frozen"] is True
    assert np.isfinite(held["forecast"]["model"]["r2"]).all()
    assert (workdir / "transfer" / HELD_OUT / "metrics.json").is_file()
    rows = list(csv.DictReader(open(workdir / "partition.csv")))
    unidentified = [r for r in rows if r["cell_type"] == "unidentified"]
    assert unidentified and all(r["x"] == "" and r["location"] == "-1" and r["filter"] == "-1"
                                for r in unidentified)
    loading = (workdir / "data_report.txt").read_text()  # what loading left out is written, not dropped
    assert "unidentified sources are kept without position" in loading and "below confidence" in loading
    saved = json.loads((workdir / "metrics.json").read_text())
    assert saved["transfer"][HELD_OUT]["basis_frozen"] is True


def test_the_held_out_animals_learning_curve_is_in_the_reports(celegans_run):
    cfg, workdir, results = celegans_run
    curve = results["transfer"][HELD_OUT]["learning_curve"]
    assert curve["fractions"] == [0.3] and set(curve["mse"]) == {"transfer", "scratch", *cfg.eval.baselines}
    pooled = results["learning_curve"]  # over the held-out animals (one here)
    assert pooled["n_folds"] == 1 and pooled["mse"]["transfer"] == curve["mse"]["transfer"]
    for folder in (workdir, workdir / "transfer" / HELD_OUT):
        assert (folder / "figures" / "learning_curve.png").is_file()
        assert "One-shot learning" in (folder / "report.html").read_text()
    assert json.loads((workdir / "metrics.json").read_text())["learning_curve"]["n_folds"] == 1


def test_transfer_refits_only_what_is_specific_to_the_animal(celegans_dir, tmp_path):
    cfg = tiny(celegans_dir)
    mesh = train.make_mesh(1)
    source, state = train.train(cfg, str(tmp_path / "source"))
    tcfg = transfer.transfer_config(cfg, HELD_OUT)
    exp = experiment.prepare(tcfg, mesh)
    start = transfer.transfer_params(state.params, experiment.init_params(tcfg, exp), source.recording.behaviour_names,
                                     exp.recording.behaviour_names)
    frozen0 = [np.asarray(x).copy() for x in jax.tree.leaves((start.basis, start.arch))]
    free0 = np.asarray(start.assign.free).copy()
    _, refit = train.train(tcfg, str(tmp_path / "held_out"), exp, mesh, params=start)
    for a, b in zip(frozen0, jax.tree.leaves((refit.params.basis, refit.params.arch))):
        np.testing.assert_array_equal(a, np.asarray(b))
    assert not np.allclose(free0, np.asarray(refit.params.assign.free))  # the assignment is refit
