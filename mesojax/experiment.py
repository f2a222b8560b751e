"""The experiment: everything fixed before training, built once from a config.

:func:`prepare` loads the configured data source (:mod:`mesojax.data.sources`), splits time into
train / validation / test segments that never join two trials (:func:`mesojax.data.windows.split`),
fits the normalisation on the training segment, lays the grid of receptive fields, builds the spatial
tables and connectome features, and assembles the model's spec and inputs. The result, an
:class:`Experiment`, is what training (:mod:`mesojax.train`), evaluation (:mod:`mesojax.evaluate`),
reports (:mod:`mesojax.report`) and transfer (:mod:`mesojax.transfer`) take.

Example::

    exp = experiment.prepare(config, train.make_mesh(1))
    exp.spec.n_neurons, exp.segments["train"]          # e.g. 600, ((0, 2520),)
    pieces = experiment.segment_traces(exp, "test")    # [T_piece, N] z-scored arrays, one per piece
    params = experiment.init_params(config, exp)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from mesojax import assign, features, model, progress, spatial
from mesojax.data import Connectome, Recording, sources, windows
from mesojax.data.tables import LoadReport

Data = sources.Data
"""What a data source returns (:class:`mesojax.data.sources.Data`)."""


@dataclasses.dataclass(frozen=True, eq=False)
class Experiment:
    """Everything fixed before training: data, splits, spatial tables, features, model spec and inputs.

    Attributes:
      connectome: the circuit (one neuron per recorded source).
      recording: registered 1:1 to the circuit; traces may be lazy (read window by window).
      truth: ``synthetic.GroundTruth`` for phantoms, else None.
      segments: ``{"train", "val", "test"} ->`` :data:`mesojax.data.windows.Segment` pieces.
      norm: per-neuron normalisation fitted on the training segment.
      grid, tables: the receptive fields and their member / candidate tables.
      feature_names: the connectome features' names.
      spec, inputs: the model's static spec and its input arrays.
      group_names: the independent circuits (animals) of a disjoint union; one name otherwise.
      neuron_group: ``[N]`` group of every neuron.
      behaviour_group: ``[Kc]`` group of every behaviour target.
      reports: what loading excluded or repaired, per file (may be empty).
      labels: ``name -> [N]`` partitions the fitted domains and filters are scored against (cell types,
        planted instances; "" / -1 = unknown), from the data source.
    """

    connectome: Connectome
    recording: Recording
    truth: Any
    segments: dict[str, windows.Segment]
    norm: windows.Normalizer
    grid: spatial.Grid
    tables: spatial.SpatialTables
    feature_names: tuple[str, ...]
    spec: model.ModelSpec
    inputs: model.ModelInputs
    group_names: tuple[str, ...]
    neuron_group: np.ndarray
    behaviour_group: np.ndarray
    reports: dict
    labels: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def load_data(cfg: ml_collections.ConfigDict) -> Data:
    """The configured data source (``cfg.source``, one of :func:`mesojax.data.sources.names`)."""
    return sources.load(cfg)


def check_lengths(config: ml_collections.ConfigDict, recording: Recording,
                  segments: dict[str, windows.Segment]) -> None:
    """Every length a run needs, checked before training: a training window, and one forecast start.

    A training window holds ``history + rollout`` frames; the test segment (and the validation segment,
    when ``train.val_every`` selects checkpoints on it) must hold the forecast window
    (``eval.warmup + history`` frames) plus ``eval.horizons`` scored frames, inside one piece (trial).

    Raises:
      ValueError: naming the recording, the segment, the frames it has and the frames needed.
    """
    h = config.model.history
    forecast = (config.eval.warmup + h + config.eval.horizons, "eval.warmup + model.history + eval.horizons")
    need = {"train": (h + config.train.rollout, "model.history + train.rollout"), "test": forecast}
    if config.train.get("val_every", 0):
        need["val"] = forecast
    for name, (frames, why) in need.items():
        longest = windows.longest_piece(segments[name])
        if longest < frames:
            pieces = len(segments[name])
            where = f"{longest} frames" if pieces <= 1 else f"at most {longest} frames in one of its {pieces} trials"
            raise ValueError(
                f"{recording.source}: the {name} segment has {where} (of T = {recording.n_timesteps}, "
                f"data.split = {tuple(config.data.split)}) but needs {frames} ({why}); use a longer recording, "
                "a larger share for that segment, or shorter windows")


def extreme_report(recording: Recording, norm: windows.Normalizer,
                   segment: windows.Segment) -> LoadReport | None:
    """A :class:`mesojax.data.tables.LoadReport` naming the neurons with extreme training samples (read
    as missing, :func:`mesojax.data.windows.fit_normalizer`), or None when there are none."""
    if norm.n_extreme is None or not norm.n_extreme.any():
        return None
    cols = np.flatnonzero(norm.n_extreme)
    ids = recording.neuron_ids
    name = (lambda j: f"column {j}") if ids is None else (lambda j: f"{ids[j]!s} (column {j})")  # noqa: E731
    lines = [f"{name(j)}: {int(norm.n_extreme[j])} sample(s) outside [{norm.lo[j]:.4g}, {norm.hi[j]:.4g}], "
             f"first at frame {int(norm.first_extreme[j])}" for j in cols[:20]]
    more = [f"... and {len(cols) - 20} more neurons"] if len(cols) > 20 else []
    where = segment[0] if len(segment) == 1 else list(segment)
    note = (f"{int(norm.n_extreme.sum())} extreme trace sample(s) in the training segment {where} read as "
            "missing and left out of the normalisation (data.extreme; 0 keeps them): " + "; ".join(lines + more))
    return LoadReport(recording.source, (note,), {"extreme_samples": tuple(int(j) for j in cols)})


def location_groups(tables: spatial.SpatialTables, neuron_group: np.ndarray) -> np.ndarray:
    """The group of every location: that of its members (a union's spheres never mix groups).

    Raises:
      ValueError: naming a location whose members belong to two groups.
    """
    first = np.where(tables.member_mask.any(1), neuron_group[tables.members[:, 0]], 0)
    mixed = tables.member_mask & (neuron_group[tables.members] != first[:, None])
    if mixed.any():
        loc = int(np.flatnonzero(mixed.any(1))[0])
        raise ValueError(f"location {loc} holds neurons of two groups: increase data.gap_um beyond the sphere "
                         "diameter")
    return first.astype(np.int32)


def grid_spec(config: ml_collections.ConfigDict, mesh: Mesh) -> spatial.GridSpec:
    """The receptive-field grid of ``config.grid`` (locations padded to a multiple of the space axis).

    ``grid.origin`` of ``(None,)`` or ``()`` means unset (the lattice centred on the bounding box): the
    command line cannot set a tuple field to None, ml_collections reads ``--config.grid.origin=None`` as
    ``(None,)``.
    """
    g = config.grid
    origin = None if g.origin is None or tuple(g.origin) in ((None,), ()) else tuple(g.origin)
    return spatial.GridSpec(
        diameter_um=g.diameter_um, stride_um=g.stride_um, origin=origin, location_multiple=mesh.shape["space"],
        shape=g.get("shape", "sphere"), axis=int(g.get("axis", 2)), height_um=g.get("height_um"),
        height_stride_um=g.get("height_stride_um"),
    )


def data_labels(data: Data) -> dict[str, np.ndarray]:
    """The partitions of the neurons a source knows (scored against the fitted domains and filters).

    ``cell_type`` when the connectome has any; on phantoms also the planted ``instance`` and ``motif``.
    """
    labels: dict[str, np.ndarray] = {}
    for name, values in (data.labels or {}).items():
        values = np.asarray(values)
        if values.dtype.kind == "O":  # mixed or missing entries: strings, with "" for unknown
            values = np.asarray(["" if v is None else str(v) for v in values])
        labels[name] = values
    types = data.connectome.cell_type
    if types is not None and "cell_type" not in labels and np.any(np.asarray(types) != ""):
        labels["cell_type"] = np.asarray(types)
    if data.truth is not None:
        labels.setdefault("instance", np.asarray(data.truth.instance))
        labels.setdefault("motif", np.asarray(data.truth.motif))
    n = data.connectome.n_neurons
    for name, v in labels.items():
        if v.shape != (n,):
            raise ValueError(f"{data.connectome.source}: labels {name!r} have shape {v.shape}, expected ({n},)")
    return labels


def prepare(config: ml_collections.ConfigDict, mesh: Mesh, timings: progress.Timings | None = None) -> Experiment:
    """Load data, split time, normalise, build the grid, tables and features, and the model inputs.

    Each phase is logged with its duration and recorded in `timings` (:mod:`mesojax.progress`).

    Args:
      config: a full mesojax config (:mod:`mesojax.config`).
      mesh: the device mesh; the location count is padded to a multiple of its ``space`` axis.
      timings: where phase durations are recorded (optional).

    Returns:
      The :class:`Experiment`.
    """
    with progress.phase("load data", timings):
        data = load_data(config.data)
        connectome, recording = data.connectome, data.recording
        by, use_trials = config.data.get("split_by", "time"), config.data.get("use_trials", True)
        segments = windows.split(recording.n_timesteps, tuple(config.data.split),
                                 recording.trials if use_trials or by == "trial" else None, by=by)
        if not use_trials:  # trials held out whole stay apart from the training stretch; consecutive ones join
            segments = {name: windows.join_pieces(seg) for name, seg in segments.items()}
        check_lengths(config, recording, segments)
        norm = windows.fit_normalizer(recording, segments["train"], extreme=config.data.get("extreme", 50.0))
        reports = dict(data.reports or {})
        extreme = extreme_report(recording, norm, segments["train"])
        if extreme is not None:
            logging.warning("%s", extreme)
            reports["normalisation"] = extreme
    logging.info("circuit: %d neurons, %d synapses, %d frames in %d trial(s)", connectome.n_neurons,
                 len(connectome.pre), recording.n_timesteps, len(recording.trials))
    with progress.phase("grid and tables", timings):
        centers_path = config.grid.get("centers", "")
        centers = spatial.load_centers(centers_path) if centers_path else None
        grid = spatial.build_grid(connectome.xyz, grid_spec(config, mesh), centers=centers, source=connectome.source)
        tables = spatial.build_tables(connectome.xyz, grid, pre=connectome.pre, post=connectome.post,
                                      source=connectome.source)
        stim_tables = None
        if recording.stimulus_positions is not None and config.data.get("retinotopic", True):
            stim_tables = spatial.stimulus_tables(recording.stimulus_positions, grid, source=recording.source)
            unread = np.setdiff1d(np.arange(recording.stimulus.shape[1]), stim_tables.channels[stim_tables.mask])
            if unread.size:
                note = (f"{unread.size} of {recording.stimulus.shape[1]} stimulus channels lie in no receptive "
                        f"field and are read by no location: channels {unread[:20].tolist()}"
                        + (" ..." if unread.size > 20 else ""))
                logging.warning("%s", note)
                reports["stimulus"] = LoadReport(recording.source, (note,), {"unread_stimulus_channels": tuple(
                    int(k) for k in unread)})
    logging.info("grid: %d locations, up to %d members each, up to %d candidates per neuron",
                 tables.members.shape[0], tables.members.shape[1], tables.candidates.shape[1])
    with progress.phase("connectome features", timings):
        raw, names = features.connectome_features(connectome, motifs=config.features.motifs,
                                                  max_dim=config.features.max_dim)
    use_syn = config.model.use_synapses
    inputs = model.build_inputs(
        tables, features.standardize(np.log1p(np.maximum(raw, 0.0))), connectome.cell_type,
        syn_pre=connectome.pre if use_syn else None, syn_post=connectome.post if use_syn else None,
        cell_types=data.cell_types, location_group=location_groups(tables, data.neuron_group),
        behaviour_group=data.behaviour_group,
        neighbours=(connectome.pre, connectome.post) if (
            config.model.assign.coherence > 0 or config.model.assign.partner_prior or config.loss.cut > 0) else None,
        stimulus_tables=stim_tables,
    )
    n_beh = 0 if recording.behaviour is None else recording.behaviour.shape[1]
    n_modes = len(recording.mode_names) if recording.modes is not None else 0
    n_stim = 0 if recording.stimulus is None else recording.stimulus.shape[1]
    mc = config.model
    spec = model.make_spec(
        n_neurons=connectome.n_neurons, n_locations=tables.members.shape[0], n_members=tables.members.shape[1],
        n_candidates=tables.candidates.shape[1], n_features=inputs.member_features.shape[-1],
        n_filters=mc.n_filters, n_ports=mc.n_ports, history=mc.history, n_stimulus=n_stim,
        n_local_stimulus=0 if stim_tables is None else stim_tables.channels.shape[1],
        n_behaviour=n_beh, n_modes=n_modes, use_synapses=use_syn, n_groups=len(data.group_names),
        window_norm=mc.window_norm, behaviour_readout=mc.behaviour_readout,
        behaviour_stop_gradient=mc.behaviour_stop_gradient,
        basis_kwargs=dict(mc.basis), interface_kwargs=dict(mc.interface), assign_kwargs=dict(mc.assign),
    )
    return Experiment(connectome, recording, data.truth, segments, norm, grid, tables, names, spec, inputs,
                      data.group_names, data.neuron_group, data.behaviour_group, reports, data_labels(data))


def segment_traces(exp: Experiment, segment: str) -> list[np.ndarray]:
    """The recording's traces over a segment, one ``[T_piece, N]`` array per piece (trial), z-scored with
    the training statistics (NaN kept; extreme samples, :class:`mesojax.data.windows.Normalizer`, read as NaN)."""
    return [windows.apply(exp.norm, exp.recording.traces[a:b]) for a, b in exp.segments[segment]]


def segment_stimulus(exp: Experiment, segment: str) -> list[np.ndarray]:
    """The stimulus over a segment, one ``[T_piece, S]`` array per piece (``S = 0`` without stimulus)."""
    rec = exp.recording
    return [(rec.stimulus[a:b] if rec.stimulus is not None else np.zeros((b - a, 0))).astype(np.float32)
            for a, b in exp.segments[segment]]


def init_params(config: ml_collections.ConfigDict, exp: Experiment) -> model.Params:
    """Fresh parameters from ``config.seed``; claims seeded by activity clusters when
    ``model.assign.activity_claims > 0`` (:func:`mesojax.assign.seed_claims`, on the training segment's
    pieces joined: it clusters neurons by their activity, not by transitions)."""
    c = exp.connectome
    strength = c.strength[:, 0] if c.strength is not None else c.synapse_weight("count")
    params = model.init(jax.random.key(config.seed), exp.spec, exp.inputs, syn_strength=strength, syn_sign=c.sign)
    if exp.spec.assign.activity_claims > 0:
        traces = np.concatenate(segment_traces(exp, "train"))
        rng = np.random.default_rng(config.seed)
        params = params._replace(assign=assign.seed_claims(params.assign, exp.spec.assign, exp.inputs.assign,
                                                           traces, rng))
    return params
