"""Data sources: a registry from ``config.data.source`` to a loader returning one typed :class:`Data`.

Every source gives the model the same thing: a circuit with one neuron per recorded source, the
recording registered 1:1 to it, and what loading left out (:class:`~mesojax.data.tables.LoadReport`).

* ``phantom``: a synthetic circuit with planted ground truth (:mod:`mesojax.data.synthetic`);
* ``celegans``: the C. elegans whole-brain recordings of ``data.animals`` as one disjoint-union circuit;
* ``store``: your own circuit, a directory ``DIR`` (``data.path``) holding ``DIR/connectome`` and
  ``DIR/recording`` as written by :func:`mesojax.data.storage.write_connectome` /
  :func:`~mesojax.data.storage.write_recording` (``scripts/import_data.py`` makes one from tables, NWB,
  HDF5 or ``.npy``). The traces stay on disk: training reads the windows it needs.

A new source is one function registered by name::

    @sources.register("mylab")
    def load_mylab(cfg: ml_collections.ConfigDict) -> sources.Data: ...

Example::

    data = sources.load(config.data)        # config.data.source == "store", config.data.path == DIR
    data.connectome.n_neurons, data.recording.n_timesteps
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, NamedTuple

import ml_collections
import numpy as np

from mesojax.data import celegans, storage, synthetic, union
from mesojax.data import validation as V
from mesojax.data.connectome import Connectome
from mesojax.data.recording import Recording
from mesojax.data.registration import matched_ids, register_by_position
from mesojax.data.tables import LoadReport


class Data(NamedTuple):
    """A data source as the model sees it.

    Attributes:
      connectome: the circuit, one neuron per recorded source (neurons without a position allowed).
      recording: registered 1:1 to the circuit.
      truth: ``synthetic.GroundTruth`` for phantoms, else None.
      group_names: the independent circuits (animals) of a disjoint union; one name otherwise.
      neuron_group: ``[N]`` group of every neuron.
      behaviour_group: ``[Kc]`` group of every behaviour target.
      cell_types: the cell-type vocabulary of the model's inputs (fixed across animals), or None.
      reports: what loading excluded or repaired, per file.
      labels: ``name -> [N]`` partitions of the neurons to score the fitted domains and filters against
        (e.g. anatomical columns, hand-annotated types; "" / -1 = unknown), beyond the connectome's
        ``cell_type`` and a phantom's planted truth, which are always scored.
    """

    connectome: Connectome
    recording: Recording
    truth: Any
    group_names: tuple[str, ...]
    neuron_group: np.ndarray
    behaviour_group: np.ndarray
    cell_types: tuple[str, ...] | None = None
    reports: dict | None = None
    labels: dict | None = None


Loader = Callable[[ml_collections.ConfigDict], Data]
_REGISTRY: dict[str, Loader] = {}


def register(name: str) -> Callable[[Loader], Loader]:
    """Register a loader under ``config.data.source = name`` (a decorator)."""

    def add(fn: Loader) -> Loader:
        if name in _REGISTRY:
            raise ValueError(f"data source {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return add


def names() -> tuple[str, ...]:
    """The registered source names."""
    return tuple(sorted(_REGISTRY))


def load(cfg: ml_collections.ConfigDict) -> Data:
    """The data of ``cfg.source`` (``config.data``)."""
    if cfg.source not in _REGISTRY:
        raise ValueError(f"data config: field 'source' = {cfg.source!r} is not one of {names()}")
    return _REGISTRY[cfg.source](cfg)


def one_circuit(name: str, connectome: Connectome, recording: Recording, truth: Any = None,
                reports: dict | None = None) -> Data:
    """A single circuit (one group) as :class:`Data`."""
    n_beh = 0 if recording.behaviour is None else recording.behaviour.shape[1]
    return Data(connectome, recording, truth, (name,), np.zeros(recording.n_sources, np.int32),
                np.zeros(n_beh, np.int32), None, reports)


@register("phantom")
def load_phantom(cfg: ml_collections.ConfigDict) -> Data:
    """The phantom ``cfg.preset`` (seed ``cfg.seed``, fields overridden by ``cfg.overrides``); only its
    recorded neurons when ``recorded_fraction < 1``."""
    overrides = {k: v for k, v in cfg.overrides.items() if v is not None}
    phantom = synthetic.make_phantom(synthetic.preset(cfg.preset, seed=cfg.seed, **overrides))
    full = phantom.circuit.connectome
    if len(phantom.recorded) == full.n_neurons:
        return one_circuit("phantom", full, phantom.recording, phantom.truth)
    # Part of the circuit is not imaged: the model sees the recorded neurons (in trace order) and the
    # synapses among them, as with a registered recording; the truth follows the same rows.
    circuit = full.select(phantom.recorded)
    note = (f"{len(phantom.recorded)} of {full.n_neurons} neurons imaged (recorded_fraction); "
            f"{circuit.n_synapses} of {full.n_synapses} synapses join two imaged neurons, the others are left out")
    return one_circuit("phantom", circuit, phantom.recording, phantom.truth.take(phantom.recorded),
                       reports={"registration": LoadReport(phantom.recording.source, (note,))})


@register("celegans")
def load_celegans(cfg: ml_collections.ConfigDict) -> Data:
    """The configured C. elegans animals as one disjoint-union circuit (see :mod:`mesojax.data.union`).

    Each animal's identified neurons (label confidence ≥ ``cfg.confidence``) are registered by name to
    the connectome ``cfg.connectome`` and its atlas positions; unidentified ones are kept without
    position. Behaviour targets are ``cfg.behaviour`` plus reversal (a 0/1 column) per animal.
    """
    data = celegans.load_dataset(cfg.path, cfg.connectome, uids=list(cfg.animals), confidence=cfg.confidence,
                                 behaviour=tuple(cfg.behaviour))
    parts, reports = [], dict(data.reports)
    for uid, rec in data.recordings.items():
        circuit, rec, rep = union.source_circuit(rec, data.connectome)
        parts.append((uid, circuit, rec))
        reports[uid] = reports[uid].merge(rep)
    u = union.disjoint_union(parts, gap_um=cfg.gap_um)
    vocab = tuple(sorted(set(data.connectome.cell_type.tolist()) | {union.UNIDENTIFIED}))
    return Data(u.connectome, u.recording, None, u.names, u.neuron_group, u.behaviour_group, vocab, reports)


@register("store")
def load_store(cfg: ml_collections.ConfigDict) -> Data:
    """A stored circuit: ``cfg.path/connectome`` and ``cfg.path/recording`` (read lazily).

    Sources are registered to connectome neurons by ``neuron_ids`` (``cfg.register = "id"``) or by
    position within ``cfg.tol_um`` µm (``"position"``); unregistered sources stay in the model without
    position. ``cfg.recording`` picks ``recording-<name>`` instead of ``recording`` (several recordings
    of one circuit).
    """
    root = str(cfg.path) if cfg.get("path") else ""
    if not root:
        raise V.ValidationError("config", "data.path", None, "the store directory is not set (--config.data.path=DIR)")
    if not os.path.isdir(root):
        raise V.ValidationError(root, "data.path", None, "no such store directory (make one with "
                                "scripts/import_data.py)")
    name = cfg.get("recording") or ""
    if name:
        V.check_name(root, "data.recording", name)
    rec_dir = os.path.join(root, f"recording-{name}" if name else "recording")
    connectome = storage.open_connectome(os.path.join(root, "connectome"))
    recording = storage.open_recording(rec_dir, lazy=True)
    how = cfg.get("register", "id")
    notes = []
    if how == "position":
        recording, note = _ids_by_position(recording, connectome, float(cfg.get("tol_um", 2.0)))
        notes.append(note)
    elif how != "id":
        raise V.ValidationError("config", "data.register", None, f"{how!r} is not 'id' or 'position'")
    elif recording.neuron_ids is None:
        raise V.ValidationError(rec_dir, "neuron_ids", None, "the recording has no neuron ids to register by "
                                "(set --config.data.register=position to match sources by position)")
    circuit, recording, report = union.source_circuit(recording, connectome)
    report = LoadReport(rec_dir, tuple(notes)).merge(report) if notes else report
    group = os.path.basename(os.path.normpath(root)) or "store"
    data = one_circuit(group, circuit, recording, reports={"registration": report})
    vocab = tuple(sorted(set(connectome.cell_type.tolist()) | {union.UNIDENTIFIED}))
    return data._replace(cell_types=vocab)


def _ids_by_position(recording: Recording, connectome: Connectome, tol_um: float) -> tuple[Recording, str]:
    """The recording with ``neuron_ids`` set to the connectome neuron at each source's position ("" if none)."""
    reg = register_by_position(recording, connectome, tol_um=tol_um)
    ids = matched_ids(reg, connectome)
    renamed = dataclasses.replace(recording, neuron_ids=ids)
    return renamed, f"registered by position (tolerance {tol_um} µm): {int((reg.neuron >= 0).sum())} of " \
                    f"{len(reg.neuron)} sources matched a connectome neuron"
