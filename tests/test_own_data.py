"""Your own circuit from the command line: tables + traces -> scripts/import_data.py -> configs/store.py.

The circuit is the tiny phantom written out as a user would have it: a neuron table and a synapse table
(CSV), traces as ``.npy`` with a neuron-id file (columns shuffled, one unknown id), behaviour as a CSV
with named columns.
"""

import csv
import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import h5py
import jax
import numpy as np
import pytest

from mesojax import config, experiment, train
from mesojax.data import ValidationError, importer, sources, storage, synthetic, windows

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    ph = synthetic.make_phantom(synthetic.preset("tiny", seed=0))
    c, r = ph.circuit.connectome, ph.recording
    with open(root / "neurons.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "x", "y", "z", "cell_type"])
        w.writerows([[i, *map(float, p), t] for i, p, t in zip(c.ids.tolist(), c.xyz, c.cell_type)])
    with open(root / "synapses.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["pre", "post", "x", "y", "z"])
        w.writerows([[c.ids[a], c.ids[b], *map(float, p)] for a, b, p in zip(c.pre, c.post, c.syn_xyz)])
    order = np.random.default_rng(0).permutation(r.n_sources)
    ids = c.ids[order].astype(str)
    ids[3] = "999"  # a source the connectome does not have: kept without position, reported
    np.save(root / "traces.npy", np.asarray(r.traces)[:, order])
    (root / "ids.csv").write_text("\n".join(ids) + "\n")
    with open(root / "behaviour.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(r.behaviour_names))
        w.writerows(np.asarray(r.behaviour).tolist())
    np.save(root / "stimulus.npy", np.asarray(r.stimulus))
    with open(root / "stimulus_xyz.csv", "w", newline="") as f:  # each channel at a neuron: a retinotopic stimulus
        w = csv.writer(f)
        w.writerow(["x", "y", "z"])
        w.writerows(c.xyz[[0, 100]].tolist())
    # Three recordings of the same tissue, given as a trial label per frame.
    (root / "trials.csv").write_text("\n".join(str(k) for k in np.repeat([7, 3, 9], [100, 120, 80])) + "\n")
    return root, ph, order


def _run(*args, timeout=600):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)


def test_import_then_train_from_the_command_line(files, tmp_path):
    root, ph, _ = files
    store = tmp_path / "store"
    out = _run(REPO / "scripts" / "import_data.py", "--out", store, "--neurons", root / "neurons.csv",
               "--synapses", root / "synapses.csv", "--traces", root / "traces.npy", "--neuron_ids", root / "ids.csv",
               "--rate_hz", 10, "--behaviour", root / "behaviour.csv", "--stimulus", root / "stimulus.npy",
               "--stimulus_positions", root / "stimulus_xyz.csv", "--trials", root / "trials.csv")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "registered 194/195 sources by id" in out.stdout and "(ids 999)" in out.stdout  # reported, kept
    assert (store / "connectome" / "meta.json").is_file() and (store / "recording" / "meta.json").is_file()
    rec = storage.open_recording(store / "recording")
    assert rec.trial_starts.tolist() == [0, 100, 220]
    np.testing.assert_allclose(rec.stimulus_positions, ph.circuit.connectome.xyz[[0, 100]])
    work = tmp_path / "run"
    out = _run(REPO / "scripts" / "train.py", "--config", REPO / "configs" / "store.py", f"--config.data.path={store}",
               "--config.train.steps=3", "--config.train.log_every=1", "--config.optim.warmup_steps=1",
               "--config.eval.mlp_steps=20", "--config.eval.stride=8", "--config.grid.diameter_um=30",
               "--workdir", work, "--compilation_cache=")
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((work / "metrics.json").read_text())
    assert np.isfinite(results["forecast"]["model"]["mse"]).all()
    assert set(results["behaviour"]["targets"]) == {"forward", "turn"}
    rows = list(csv.DictReader(open(work / "partition.csv")))
    assert len(rows) == ph.circuit.connectome.n_neurons
    assert len(list(csv.DictReader(open(work / "per_neuron.csv")))) == ph.circuit.connectome.n_neurons
    assert "not in the connectome" in (work / "data_report.txt").read_text()
    assert "cell_type" in results["labels"]  # the neuron table's types are scored against the domains


@pytest.fixture(scope="module")
def store(files, tmp_path_factory):
    root, _, _ = files
    path = tmp_path_factory.mktemp("store") / "s"
    importer.import_circuit(path, neurons=root / "neurons.csv", synapses=root / "synapses.csv",
                            traces=root / "traces.npy", neuron_ids=root / "ids.csv", rate_hz=10.0,
                            behaviour=root / "behaviour.csv", chunk_t=16)
    return path


def _store_config(path, **overrides):
    return config.load_config_file(REPO / "configs" / "store.py", **{"data.path": str(path), **overrides})


def test_the_store_source_registers_by_id_and_keeps_traces_on_disk(files, store):
    _, ph, order = files
    data = sources.load(_store_config(store).data)
    assert isinstance(data.recording.traces, storage.TensorStoreArray)  # never loaded whole
    np.testing.assert_array_equal(data.recording.traces[:], np.asarray(ph.recording.traces)[:, order])
    placed = data.connectome.placed
    assert placed.sum() == ph.circuit.connectome.n_neurons - 1 and not placed[3]
    exp = experiment.prepare(_store_config(store), train.make_mesh(1, jax.devices()[:1]))
    before = storage.io_counters()["bytes_read"]
    train.windows.sample_batch(exp.recording, exp.norm, exp.segments["train"], length=8, n_windows=2, seed=0, step=0)
    read = storage.io_counters()["bytes_read"] - before
    assert 0 < read < exp.recording.traces.shape[0] * exp.recording.traces.shape[1] * 4 / 4  # windows, not all


def test_registration_by_position_from_hdf5_traces(files, tmp_path):
    root, ph, order = files
    r = ph.recording
    with h5py.File(tmp_path / "traces.h5", "w") as f:
        f["traces"] = np.asarray(r.traces)[:, order]
        f["timestamps"] = np.asarray(r.timestamps)
        f["positions"] = ph.circuit.connectome.xyz[order] + 0.3  # imaged positions, slightly off
    report = importer.import_circuit(tmp_path / "s", neurons=root / "neurons.csv", synapses=root / "synapses.csv",
                                     traces=tmp_path / "traces.h5", register="position", tol_um=1.0)
    assert "registration by position" in str(report)
    data = sources.load(_store_config(tmp_path / "s").data)
    np.testing.assert_array_equal(data.connectome.ids.astype(str), ph.circuit.connectome.ids[order].astype(str))


@pytest.mark.parametrize("damage,field", [
    ("neurons_no_z", "z"), ("ids_short", "neuron_ids"), ("no_rate", "timestamps"), ("behaviour_short", "behaviour"),
])
def test_bad_input_names_the_file_and_field(files, tmp_path, damage, field):
    root, _, _ = files
    kw = dict(neurons=root / "neurons.csv", synapses=root / "synapses.csv", traces=root / "traces.npy",
              neuron_ids=root / "ids.csv", rate_hz=10.0)
    if damage == "neurons_no_z":
        text = (root / "neurons.csv").read_text().replace(",z,", ",depth,", 1)
        (tmp_path / "n.csv").write_text(text)
        kw["neurons"] = tmp_path / "n.csv"
    elif damage == "ids_short":
        (tmp_path / "ids.csv").write_text("\n".join((root / "ids.csv").read_text().split()[:-1]) + "\n")
        kw["neuron_ids"] = tmp_path / "ids.csv"
    elif damage == "no_rate":
        kw["rate_hz"] = None
    else:
        np.save(tmp_path / "b.npy", np.zeros((10, 2)))
        kw["behaviour"] = tmp_path / "b.npy"
    with pytest.raises(ValidationError) as info:
        importer.import_circuit(tmp_path / "s", **kw)
    assert info.value.field == field
    assert not (tmp_path / "s").exists()  # nothing half-written


def test_a_missing_store_is_one_clear_error(tmp_path):
    with pytest.raises(ValidationError, match="no such store directory"):
        sources.load(_store_config(tmp_path / "nothing").data)
    with pytest.raises(ValidationError, match=r"data.path.*not set"):
        sources.load(_store_config("").data)


def test_csv_traces_keep_absolute_timestamps_exact(tmp_path):
    t = 1.7e9 + np.arange(50) / 30.0  # seconds since the epoch, 30 Hz
    rows = ["time,a,b"] + [f"{x!r},{i},{-i}" for i, x in enumerate(t.tolist())]
    (tmp_path / "traces.csv").write_text("\n".join(rows) + "\n")
    rec, _ = importer.read_traces(tmp_path / "traces.csv")
    np.testing.assert_array_equal(rec.timestamps, t)
    assert rec.neuron_ids.tolist() == ["a", "b"] and rec.traces.dtype == np.float32


def test_the_store_source_registers_by_position(files, tmp_path):
    import dataclasses

    _, ph, _ = files
    storage.write_connectome(tmp_path / "s" / "connectome", ph.circuit.connectome)
    anonymous = dataclasses.replace(ph.recording, neuron_ids=None)  # positions only, as imaged
    storage.write_recording(tmp_path / "s" / "recording", anonymous)
    with pytest.raises(ValidationError, match="no neuron ids to register by"):
        sources.load(_store_config(tmp_path / "s").data)
    data = sources.load(_store_config(tmp_path / "s", **{"data.register": "position", "data.tol_um": 0.5}).data)
    np.testing.assert_array_equal(data.connectome.ids, ph.recording.neuron_ids.astype(str))  # circuit ids are names
    assert "registered by position" in str(data.reports["registration"])


class _Counted:
    """A lazy trace array that records the largest block any single read returned."""

    def __init__(self, inner):
        self.inner, self.shape, self.dtype, self.largest = inner, inner.shape, inner.dtype, 0

    def __getitem__(self, index):
        block = np.asarray(self.inner[index])
        self.largest = max(self.largest, block.nbytes)
        return block


def test_a_recording_larger_than_the_memory_budget_trains(store, tmp_path, monkeypatch):
    """Preparation (statistics in chunks) and training (window by window) never hold more than a budget of
    a fifth of the traces at once: a recording far larger than memory trains the same way."""
    real = experiment.load_data
    seen = {}

    def counted(cfg):
        data = real(cfg)
        seen["traces"] = _Counted(data.recording.traces)
        return data._replace(recording=dataclasses.replace(data.recording, traces=seen["traces"]))

    monkeypatch.setattr(experiment, "load_data", counted)
    monkeypatch.setattr(windows, "STATS_CHUNK", 32)  # frames read at once for the statistics
    cfg = _store_config(store, **{"train.steps": 2, "optim.warmup_steps": 1, "grid.diameter_um": 30.0})
    train.train(cfg, str(tmp_path / "w"))
    t, n = seen["traces"].shape
    budget = t * n * 4 / 5
    assert 0 < seen["traces"].largest <= budget
