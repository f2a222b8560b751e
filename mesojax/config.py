"""The default experiment configuration that every file in ``configs/`` starts from.

Each entry is documented where it is read; the loss weights mirror :class:`mesojax.losses.Weights`.
Config files override what they need and return ``config.lock()``-ed dicts, so a misspelt
``--config.x=y`` override fails loudly instead of being ignored.

Example:
    >>> cfg = base_config()
    >>> cfg.loss.sparsity, cfg.optim.mode
    (0.01, 'joint')
"""

from __future__ import annotations

import ast
import importlib.util
import os
from typing import Any

import ml_collections

from mesojax import losses


def base_config() -> ml_collections.ConfigDict:
    """All fields with defaults (unlocked, so config files can add data-source specific fields)."""
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.source = "phantom"  # a mesojax.data.sources name: "phantom", "celegans" or "store" (configs/*.py)
    c.data.preset = "tiny"  # mesojax.data.synthetic.preset name
    c.data.seed = 0
    # PhantomConfig fields to override (None keeps the preset's value); settable from the command line.
    c.data.overrides = ml_collections.ConfigDict(dict(
        n_instances=ml_collections.FieldReference(None, field_type=int),
        n_steps=ml_collections.FieldReference(None, field_type=int),
        calcium_noise=ml_collections.FieldReference(None, field_type=float),
        instance_height_um=ml_collections.FieldReference(None, field_type=float),  # columnar instances
        retinotopic_stimulus=ml_collections.FieldReference(None, field_type=bool),  # a channel per instance
        n_trials=ml_collections.FieldReference(None, field_type=int),  # separate trials, never joined
        # Sweeps of benchmarks/phantom_recovery.py: motif types (of synthetic.ALL_MOTIF_TYPES) and their
        # relative frequencies, unequal instance radii, and a share of neurons left unimaged.
        motifs=ml_collections.FieldReference(None, field_type=tuple),
        motif_weights=ml_collections.FieldReference(None, field_type=tuple),
        radius_range=ml_collections.FieldReference(None, field_type=tuple),
        recorded_fraction=ml_collections.FieldReference(None, field_type=float),
    ))
    c.data.split = (0.7, 0.1, 0.2)  # train / val / test fractions of time (or of trials, below)
    # A recording of several trials (Recording.trial_starts) is never joined across trials: "time" splits
    # every trial with data.split; "trial" holds out whole trials (mesojax.data.windows.split).
    c.data.split_by = "time"
    # False treats the trials as one continuous recording (windows cross their boundaries; for comparison):
    # with split_by="time" the split ignores them, with "trial" consecutive trials of a segment are joined.
    c.data.use_trials = True
    # Stimulus channels with positions (Recording.stimulus_positions): each receptive field reads only the
    # channels inside it (retinotopic); False gives every location the whole stimulus vector.
    c.data.retinotopic = True
    # Trace samples beyond median ± extreme · (1-99 % half-range) of their neuron read as missing and are
    # reported (data_report.txt); 0 keeps every sample (mesojax.data.windows.fit_normalizer).
    c.data.extreme = 50.0

    c.grid = ml_collections.ConfigDict()
    c.grid.diameter_um = 30.0
    c.grid.stride_um = ml_collections.FieldReference(None, field_type=float)  # None: d / 2
    c.grid.origin = ml_collections.FieldReference(None, field_type=tuple)  # None: centred on the bounding box
    # "sphere", or "column": a cylinder of diameter_um across and height_um along `axis` (0/1/2 = x/y/z;
    # height None: the whole depth, one layer), for columnar tissue (mesojax.spatial.GridSpec).
    c.grid.shape = "sphere"
    c.grid.axis = 2
    c.grid.height_um = ml_collections.FieldReference(None, field_type=float)
    c.grid.height_stride_um = ml_collections.FieldReference(None, field_type=float)
    # Your own receptive-field centres instead of a lattice: a .npy [L, 3] or a CSV with x, y, z (µm), e.g.
    # the axes of anatomical columns; "" lays the lattice (mesojax.spatial.build_grid).
    c.grid.centers = ""

    c.features = ml_collections.ConfigDict()
    c.features.motifs = True  # 3-node motif participation columns
    c.features.max_dim = 3  # directed-clique dimension

    c.model = ml_collections.ConfigDict()
    c.model.n_filters = 6
    c.model.n_ports = 4
    c.model.history = 2
    c.model.use_synapses = False
    c.model.window_norm = False  # each step centred on its window's own level (model.ModelSpec.window_norm)
    # "state": behaviour is the decoder of x[t] plus a correction from the forecast x̂[t+1] - x[t], fitted in
    # closed form after training (mesojax.readout; chosen by the C. elegans cross-validation and the
    # phantom, BENCHMARKS.md); "pooled": the gated f* readout of the filters, trained with the model.
    c.model.behaviour_readout = "state"
    c.model.behaviour_stop_gradient = False  # behaviour cannot move the neural forecasts
    # state_bound: the recurrent state passes through c·tanh(h / c), so a discretised recurrence with gain
    # above one saturates instead of diverging over long teacher-forced passes (mesojax.basis.BasisSpec).
    c.model.basis = ml_collections.ConfigDict(dict(n_layers=2, max_width=16, width_step=4, state_bound=10.0))
    c.model.interface = ml_collections.ConfigDict(dict(hidden=(32,), dense=False))
    c.model.assign = ml_collections.ConfigDict(dict(network="gather_scatter", hidden=32, distance_prior=2.0,
                                                    coherence=0.0, coherence_steps=2, partner_prior=False,
                                                    activity_claims=0.0))

    c.loss = ml_collections.ConfigDict(losses.Weights()._asdict())

    c.train = ml_collections.ConfigDict()
    c.train.steps = 1000
    # The last three quarters of training run with the architectures discretised and fixed (the hard phase):
    # the evaluated model is exactly the one filters.txt describes, and the bank then computes only the
    # chosen layer types, units and edges (a hard step costs about a quarter of a soft one). 0: search to the
    # end (soft model, plus a
    # discretised copy scored as model_hard). Measured in BENCHMARKS.md (issue 13/16, seventh session).
    c.train.hard_steps = c.train.get_ref("steps") * 3 // 4

    # Filter splits and merges during training (mesojax.restructure, README "Filter splits and merges").
    # At each split step, the clearest 2-means halves (by activity) of used filters move to copies in the
    # free filters; at each merge step, one filter's locations move onto another's while the moved neurons'
    # validation error rises by less than `tolerance` (relative), cheapest first. Copies need steps to
    # learn apart and merges need trained filters: for 600 steps, splits (200, 350) and merges (350, 500)
    # (BENCHMARKS.md). (): off, the filters used are those initialisation seeded.
    c.restructure = ml_collections.ConfigDict()
    c.restructure.split_steps = ml_collections.FieldReference((), field_type=tuple)
    c.restructure.merge_steps = ml_collections.FieldReference((), field_type=tuple)
    c.restructure.tolerance = 0.04
    c.restructure.min_locations = 4  # the smaller half of a split holds at least this many locations
    c.restructure.min_silhouette = 0.25  # a split's 2-means must reach it (as the initial clusters' k > 1)
    c.restructure.windows = 32  # validation windows (training length, evenly spaced) that merges are scored on

    c.anneal = ml_collections.ConfigDict()
    c.anneal.steps = c.train.get_ref("steps")  # steps over which temperatures go from start to end
    c.anneal.arch = (1.0, 0.1)
    c.anneal.assign = (1.0, 0.1)
    c.anneal.ports = (1.0, 0.2)

    c.optim = ml_collections.ConfigDict()
    c.optim.learning_rate = 3e-3
    c.optim.warmup_steps = 50
    c.optim.total_steps = c.train.get_ref("steps")  # schedule length follows --config.train.steps
    c.optim.clip_norm = 1.0
    c.optim.mode = "joint"  # or "alternating" (Supplement A)
    c.optim.alternate_every = 50
    c.optim.lr_scale = ml_collections.ConfigDict(dict(assign=3.0))
    c.optim.freeze = ()  # groups that never update (mesojax.optim.GROUPS)
    # Architecture search ends here; the last train.hard_steps steps train the discretised filters.
    c.optim.arch_steps = c.train.get_ref("steps") - c.train.get_ref("hard_steps")
    # > 0: the hard phase restarts the learning-rate schedule (warm-up + cosine) with this peak factor, so
    # the discretised filters are trained at a useful rate rather than at the tail of the search's schedule.
    c.optim.hard_peak = 1.0

    c.train.batch_windows = 8
    c.train.rollout = 6  # R predicted frames per window
    c.train.n_teacher = 1  # of which teacher-forced
    c.train.log_every = 50
    c.train.checkpoint_every = 500
    # Every val_every steps (0: never) the forecast MSE on the validation segment (data.split) is measured;
    # evaluation uses the parameters of the best such step, and training stops after `patience`
    # measurements without improvement (0: never stops early). With a hard phase (train.hard_steps) only its
    # steps are measured and counted: the selected parameters are always a discretised model.
    c.train.val_every = 0
    c.train.val_stride = 2  # forecast start every val_stride frames of the validation segment
    c.train.patience = 0

    c.eval = ml_collections.ConfigDict()
    c.eval.horizons = 10
    c.eval.warmup = 8  # teacher-forced frames before each forecast
    c.eval.stride = 1  # forecast start every `stride` frames
    c.eval.baselines = ("persistence", "mean", "ar", "ridge_var", "masked_var", "mlp")
    c.eval.mlp_steps = 1500
    # The evaluated model computes a (location, filter) pair only where some member's final assignment
    # weight reaches this (model.active_pairs): a trained assignment is sparse, so the forecasts cost a
    # fraction; dropped pairs change them by at most this weight times their output (BENCHMARKS.md,
    # issue 16, eleventh session). 0: every pair. Ignored with the in-model "pooled" behaviour readout,
    # which reads every pair.
    c.eval.pair_threshold = 1e-4
    # Representational similarity of the model to the recording on the test segment (mesojax.analysis).
    c.eval.rsa = True
    # Unsupervised clusters of the neurons scored against every known labelling (mesojax.analysis).
    c.eval.clusters = True
    # On phantoms, the planted truth is also scored for the initial parameters (truth["at_init"]).
    c.eval.recovery_at_init = True

    # Held-out animals (celegans): refit interfaces and assignment on a frozen basis (mesojax.transfer).
    c.transfer = ml_collections.ConfigDict()
    c.transfer.animals = ()
    c.transfer.steps = 300
    # One-shot learning curve of every held-out animal (mesojax.analysis.learning_curve): the frozen basis,
    # scratch and baselines refit on these shares of its frames, e.g. (0.02, 0.05, 0.1, 0.3, 0.7); () off.
    c.transfer.curve = ()

    c.mesh = ml_collections.ConfigDict()
    c.mesh.space = 1  # devices along the location axis; the rest split the batch
    return c


def load_config_file(path: str | os.PathLike, arg: str | None = None, **overrides: Any) -> ml_collections.ConfigDict:
    """``get_config(arg)`` of a config file, with dotted-name overrides (as ``--config.x=y`` would set).

    Example:
        >>> cfg = load_config_file("configs/phantom_tiny.py", **{"train.steps": 5})  # doctest: +SKIP
        >>> cfg.train.steps, cfg.optim.total_steps                                     # doctest: +SKIP
        (5, 5)

    Raises:
      KeyError: an override names a field the config does not have (the config stays locked).
    """
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"{path}: not a Python config file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = module.get_config(arg)
    for key, value in overrides.items():
        set_dotted(cfg, key, value)
    return cfg


def literal(text: str) -> Any:
    """A ``FIELD=VALUE`` override's value: a Python literal (number, tuple, bool, None), else the string.

    Example:
        >>> literal("(1, 2)"), literal("0.5"), literal("masked_var")
        ((1, 2), 0.5, 'masked_var')
    """
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def set_dotted(tree: Any, key: str, value: Any) -> None:
    """``tree["a"]["b"] = value`` for ``key = "a.b"`` (a ConfigDict or nested dicts)."""
    *parents, leaf = key.split(".")
    node = tree
    for name in parents:
        node = node[name]
    node[leaf] = value
