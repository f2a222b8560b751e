r"""Synthetic phantom circuits with planted truth (DESIGN.md, "Synthetic phantom circuits").

A volume is tiled with **module instances** on a jittered cubic lattice. Each instance is one of K
**motif types**, a small rate network of 3–4 units (one neuron per unit):

* ``ei_oscillator`` — two mutually exciting E cells and an I cell in a Wilson–Cowan loop (limit cycle
  of a few seconds) and a projection cell that follows E;
* ``integrator`` — a slow leaky integrator of its input feeding a three-stage delay line;
* ``normalisation`` — three competitors divided by a shared inhibitory pool (divisive normalisation);
* ``relay`` — a sensory cell, a steeply thresholded relay cell and a slow inhibitory cell that ends
  each burst (a thresholded relay of external input).

Four more (:data:`EXTRA_MOTIF_TYPES`, for sweeps with up to eight types): ``switch`` (a flip-flop of two
self-exciting cells suppressing each other through their inhibitory cells), ``resonator`` (a damped E–I
resonator near 1 Hz with an output cell), ``fast_chain`` (a steep two-stage feed-forward chain) and
``coincidence`` (an output that fires only when its two independently driven inputs are both high).

Canonical dynamics (rule ``"sigmoid"``; unit ``u`` of one instance, exponential-Euler sub-steps):

.. math::

    τ_u \dot x_u = -x_u + \textstyle\sum_v W_{uv} r_v + b_u + g_u η_u + [u = \mathrm{in}]\,(c\, s_k(t) + J_u),
    \qquad r_u = σ(a_u (x_u - θ_u)) ∈ (0, 1)

where ``η`` is a private unit-variance Ornstein–Uhlenbeck drive (time constant ``drive_tau_s``), ``s_k``
the stimulus channel of a stimulated instance and ``J`` the input from other instances through
inter-instance synapses (``J_post = Σ w_link r_out(pre)``). Rule ``"divisive"`` (normalisation):
competitors have ``y_j = max(x_j, 0)^n`` and ``r_j = y_j / (σ^n + max(p, y_j))`` with the pool state
``τ_p \dot p = -p + Σ_j W_{pj} y_j`` and ``r_p = p / (σ^n + p)``. Each instance then reports the firing
rate ``rate = rate_scale_hz · (offset_i + gain_i · r)``: per-instance gain and offset are what an
interface must absorb; the canonical dynamics of all instances of a motif are identical.

Rates become Poisson spike counts per frame; spikes become calcium through a rise/decay kernel
(peak-normalised difference of exponentials, ``calcium_amplitude`` ΔF/F per spike) plus Gaussian noise.
Behaviour is a low-pass readout of the output units of a few instances per channel; its discrete mode is
``still`` unless a channel is more than ``behaviour_threshold`` running standard deviations above its
running mean, in which case it is that channel's name.

Wiring (the connectome): every nonzero off-diagonal ``W[post, pre]`` of a motif is a connection
present in every instance, realised as ``1 + Poisson(λ - 1)`` synapse rows with ``λ ∝ |W|``; diagonal
terms are intrinsic and carry no synapse. Inter-instance links connect the output cell of an instance to
the input cell of one of its lattice neighbours (these carry the coupling ``J``). Distractor synapses
join random neurons of neighbouring instances and carry no signal. Synapse sign follows the
presynaptic cell (Dale's law). Neuron rows and synapse rows are shuffled, so row order reveals nothing.

Everything is deterministic from ``config.seed``; each component (layout, wiring, stimulus, dynamics,
spikes, ...) draws from its own spawned stream, so e.g. changing ``n_steps`` leaves the wiring alone.

Example:
    >>> from mesojax.data import synthetic
    >>> ph = synthetic.make_phantom(synthetic.preset("tiny"))
    >>> ph.recording.traces.shape == (300, ph.circuit.connectome.n_neurons)
    True
    >>> print(ph.summary())  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterator, NamedTuple

import numpy as np
import scipy.sparse
import scipy.spatial
from scipy.special import expit

from mesojax.data import validation as V
from mesojax.data.connectome import Connectome
from mesojax.data.recording import Recording

_SRC = "PhantomConfig"
_DEFAULT_INSTANCES = 52
ID_BASE = 10**15  # neuron ids are ID_BASE + a permutation: large int64 values like EM segment ids
INTRA, INTER, DISTRACTOR = 0, 1, 2
ORIGIN_NAMES = ("intra", "inter", "distractor")
MOTIF_TYPES = ("ei_oscillator", "integrator", "normalisation", "relay")  # the default phantom's four
# Four more types for sweeps with more motif types (benchmarks/phantom_recovery.py): 8 in all.
EXTRA_MOTIF_TYPES = ("switch", "resonator", "fast_chain", "coincidence")
ALL_MOTIF_TYPES = MOTIF_TYPES + EXTRA_MOTIF_TYPES

# Named spawn slots of the seed: fixed forever so that adding a stream never reshuffles the others.
_STREAMS = (
    "layout", "motif", "intra", "inter", "distractor", "synapse_xyz", "instance", "stimulus_assign",
    "behaviour_assign", "order", "dyn", "stimulus", "spikes", "calcium", "behaviour", "size", "recorded",
)


# ---------------------------------------------------------------------------------------------- motifs
def _motif(units, cell_types, sign, W, tau_s, slope, threshold, bias, drive_gain, input_unit,
           output_unit, rule, description, **extra) -> dict[str, Any]:
    f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
    return dict(
        units=tuple(units), cell_types=tuple(cell_types), sign=np.asarray(sign, np.int8), W=f64(W),
        tau_s=f64(tau_s), slope=f64(slope), threshold=f64(threshold), bias=f64(bias),
        drive_gain=f64(drive_gain), input_unit=int(input_unit), output_unit=int(output_unit), rule=rule,
        description=description, **extra,
    )


def motif_library() -> dict[str, dict[str, Any]]:
    """The built-in motif types and their parameters (fresh copies).

    Each motif is a dict with ``units`` (role names), ``cell_types``, ``sign [u]`` (Dale sign of each
    cell), ``W [u, u]`` (``W[post, pre]``; off-diagonal nonzeros are the wiring), ``tau_s [u]``,
    ``slope``, ``threshold``, ``bias`` and ``drive_gain`` ``[u]``, ``input_unit`` (receives stimulus
    and inter-instance input), ``output_unit`` (projects to neighbours, read out by behaviour), ``rule``
    (``"sigmoid"`` or ``"divisive"``) and a one-line ``description``.

    Returns:
      ``{name: params}`` for every name in :data:`ALL_MOTIF_TYPES` (the default phantom uses
      :data:`MOTIF_TYPES`).
    """
    wee, wei, wie, wpe = 12.0, 10.0, 10.0, 6.0
    lib = {
        "ei_oscillator": _motif(
            units=("exc_a", "exc_b", "inh", "proj"), cell_types=("E", "E", "I", "E"), sign=(1, 1, -1, 1),
            W=[[0, wee, -wei, 0], [wee, 0, -wei, 0], [wie / 2, wie / 2, 0, 0], [wpe / 2, wpe / 2, 0, 0]],
            tau_s=(0.35, 0.35, 0.7, 0.25), slope=(1, 1, 1, 1), threshold=(0, 0, 0, 3.0),
            bias=(-3.0, -3.0, -6.0, 0), drive_gain=(1.0, 1.0, 0.0, 0.0), input_unit=0, output_unit=3,
            rule="sigmoid", description="Wilson-Cowan E-I limit cycle (period ~3-4 s) with a projection cell",
        ),
        "integrator": _motif(
            units=("in", "d1", "d2", "d3"), cell_types=("E", "E", "E", "E"), sign=(1, 1, 1, 1),
            W=[[0, 0, 0, 0], [6, 0, 0, 0], [0, 6, 0, 0], [0, 0, 6, 0]],
            tau_s=(3.0, 1.0, 1.0, 1.0), slope=(1, 1, 1, 1), threshold=(0, 3, 3, 3), bias=(0, 0, 0, 0),
            drive_gain=(4.0, 0, 0, 0), input_unit=0, output_unit=3, rule="sigmoid",
            description="slow leaky integrator feeding a 3-stage delay line",
        ),
        "normalisation": _motif(
            units=("c0", "c1", "c2", "pool"), cell_types=("E", "E", "E", "I"), sign=(1, 1, 1, -1),
            W=[[0, 0, 0, -1], [0, 0, 0, -1], [0, 0, 0, -1], [1, 1, 1, 0]],
            tau_s=(0.4, 0.4, 0.4, 0.3), slope=(1, 1, 1, 1), threshold=(0, 0, 0, 0), bias=(0.6, 0.6, 0.6, 0),
            drive_gain=(1.0, 1.0, 1.0, 0), input_unit=0, output_unit=0, rule="divisive",
            description="three competitors divided by a shared pool: r_j = y_j / (σ^n + pool)",
            sigma=0.3, exponent=2.0,
        ),
        "relay": _motif(
            units=("sensory", "relay", "inh"), cell_types=("sensory", "relay", "I"), sign=(1, 1, -1),
            W=[[0, 0, 0], [1.0, 0, -1.0], [0, 1.0, 0]],
            tau_s=(0.15, 0.08, 1.2), slope=(2.0, 14.0, 8.0), threshold=(0.8, 0.6, 0.5), bias=(0, 0, 0),
            drive_gain=(1.2, 0, 0), input_unit=0, output_unit=1, rule="sigmoid",
            description="steep threshold relay of external input with slow burst-ending inhibition",
        ),
        # EXTRA_MOTIF_TYPES. Diagonal terms are intrinsic (self-excitation), as everywhere: no synapse.
        "switch": _motif(
            units=("a", "b", "inh_a", "inh_b"), cell_types=("E", "E", "I", "I"), sign=(1, 1, -1, -1),
            W=[[6, 0, 0, -8], [0, 6, -8, 0], [8, 0, 0, 0], [0, 8, 0, 0]],
            tau_s=(0.5, 0.5, 0.2, 0.2), slope=(1, 1, 1, 1), threshold=(3, 3, 4, 4), bias=(0, 0, 0, 0),
            drive_gain=(1.5, 1.5, 0, 0), input_unit=0, output_unit=1, rule="sigmoid",
            description="flip-flop: two self-exciting cells that suppress each other through their I cells",
        ),
        "resonator": _motif(
            units=("exc", "inh", "out"), cell_types=("E", "I", "E"), sign=(1, -1, 1),
            W=[[4, -7, 0], [7, 0, 0], [6, 0, 0]],
            tau_s=(0.12, 0.25, 0.2), slope=(1, 1, 1), threshold=(2, 3, 3), bias=(0, 0, 0),
            drive_gain=(2.0, 0, 0), input_unit=0, output_unit=2, rule="sigmoid",
            description="damped E-I resonator (~1 Hz) rung by noise, read out by an output cell",
        ),
        "fast_chain": _motif(
            units=("in", "s1", "s2"), cell_types=("E", "E", "E"), sign=(1, 1, 1),
            W=[[0, 0, 0], [7, 0, 0], [0, 7, 0]],
            tau_s=(0.25, 0.5, 0.5), slope=(2, 2, 2), threshold=(0.5, 3.5, 3.5), bias=(0, 0, 0),
            drive_gain=(1.5, 0, 0), input_unit=0, output_unit=2, rule="sigmoid",
            description="fast, steep two-stage feed-forward chain (half-second delays)",
        ),
        "coincidence": _motif(
            units=("in_a", "in_b", "and"), cell_types=("E", "E", "E"), sign=(1, 1, 1),
            W=[[0, 0, 0], [0, 0, 0], [5, 5, 0]],
            tau_s=(0.6, 0.6, 0.15), slope=(1.5, 1.5, 3), threshold=(1, 1, 7), bias=(0, 0, 0),
            drive_gain=(2.0, 2.0, 0), input_unit=0, output_unit=2, rule="sigmoid",
            description="coincidence detector: fires only when both independently driven inputs are high",
        ),
    }
    return lib


# ---------------------------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class PhantomConfig:
    """All knobs of a phantom circuit and its recording (see :func:`preset`).

    Attributes (sizes):
      seed: master seed; every component draws from its own stream spawned from it.
      n_instances: number of module instances; or None to derive it from `n_neurons`.
      n_neurons: target neuron count (give at most one of the two; neither: 52 instances, ~200 neurons).
      motifs: motif type names (from :data:`ALL_MOTIF_TYPES`), assigned to instances in balanced counts.
      motif_weights: None (balanced), or one relative frequency per motif type: instance counts are
        ``n_instances · w / Σw`` rounded by largest remainder, at least one instance per type when
        ``n_instances >= K`` (equal weights give balanced counts, in another arrangement than None).
    Attributes (space, µm):
      spacing_um: lattice spacing between instance centres.
      instance_radius_um: neurons lie uniformly in a ball of this radius around their centre.
      radius_range: each instance's radius is ``instance_radius_um`` times a factor drawn uniformly from
        this range (``(1, 1)``: all equal), so instances of unequal spatial size share one lattice
        (columnar instances: their cross-section; the height stays ``instance_height_um``).
      instance_height_um: None (balls), or columnar instances: neurons uniform in an upright cylinder of
        radius ``instance_radius_um`` and this height along z, the instances side by side in one layer
        (a lattice in x and y), like the columns of a cortex or an optic lobe.
      jitter_um: each centre is moved by up to this much per axis; ``radius + √3·jitter < spacing/2``
        so instances never overlap.
      synapse_jitter_um: Gaussian scatter of a synapse around the segment joining its two cells.
    Attributes (wiring):
      syn_intra_per_neuron, syn_inter_per_neuron, syn_distractor_per_neuron: mean synapse rows per
        neuron of each origin.
      inter_links_per_instance: mean number of outgoing inter-instance links per instance.
      inter_weight: coupling strength of a link of mean synapse count (canonical units).
      neighbours: number of nearest instances (besides itself) that links and distractors may reach.
    Attributes (time):
      n_steps: frames T; dt: frame period in seconds; n_substeps: dynamics sub-steps per frame;
      burn_in_s: simulated and discarded before frame 0.
    Attributes (dynamics and observation):
      drive_tau_s, drive_scale: time constant and multiplier of the private OU drives;
      gain_range, offset_range: per-instance output gain and offset (uniform);
      rate_scale_hz: firing rate of a canonical rate of 1 at gain 1;
      calcium_tau_rise_s, calcium_tau_decay_s, calcium_amplitude (ΔF/F per spike), calcium_noise (σ).
      recorded_fraction: the share of neurons that are imaged (drawn at random): the recording holds only
        their traces, as when part of the tissue is out of the field of view or unlabelled.
    Attributes (stimulus and behaviour):
      n_stimulus: channels S; stimulus_fraction: fraction of instances driven by one channel;
      stimulus_gain: input per unit stimulus; stimulus_rate_hz: pulse onsets per second per channel;
      stimulus_duration_s: mean pulse length.
      retinotopic_stimulus: every instance has its own stimulus channel, placed at its centre (like a
        pixel driving its column), so ``S = I`` and ``n_stimulus`` / ``stimulus_fraction`` are not used;
        the recording's ``stimulus_positions`` hold the centres.
      n_trials: the ``n_steps`` frames are recorded as this many trials of (nearly) equal length, each
        simulated from a fresh state after its own burn-in, with timestamps restarting at 0: joining two
        trials would join unrelated dynamics.
      behaviour_names: one name per continuous behaviour channel (Kc); behaviour_instances_per_channel;
      behaviour_tau_s: readout low-pass; behaviour_noise: observation noise σ;
      behaviour_threshold: mode threshold in running standard deviations; behaviour_stats_tau_s.
    """

    seed: int = 0
    n_instances: int | None = None
    n_neurons: int | None = None
    motifs: tuple[str, ...] = MOTIF_TYPES
    motif_weights: tuple[float, ...] | None = None
    spacing_um: float = 30.0
    instance_radius_um: float = 9.0
    radius_range: tuple[float, float] = (1.0, 1.0)
    instance_height_um: float | None = None
    jitter_um: float = 2.0
    synapse_jitter_um: float = 0.5
    syn_intra_per_neuron: float = 12.0
    syn_inter_per_neuron: float = 2.0
    syn_distractor_per_neuron: float = 3.0
    inter_links_per_instance: float = 1.0
    inter_weight: float = 0.3
    neighbours: int = 6
    n_steps: int = 300
    dt: float = 0.25
    n_substeps: int = 4
    burn_in_s: float = 20.0
    drive_tau_s: float = 1.0
    drive_scale: float = 1.0
    gain_range: tuple[float, float] = (0.6, 1.4)
    offset_range: tuple[float, float] = (0.0, 0.2)
    rate_scale_hz: float = 20.0
    calcium_tau_rise_s: float = 0.05
    calcium_tau_decay_s: float = 0.8
    calcium_amplitude: float = 0.05
    calcium_noise: float = 0.05
    recorded_fraction: float = 1.0
    n_stimulus: int = 2
    stimulus_fraction: float = 0.25
    stimulus_gain: float = 4.0
    stimulus_rate_hz: float = 0.1
    stimulus_duration_s: float = 1.5
    retinotopic_stimulus: bool = False
    n_trials: int = 1
    behaviour_names: tuple[str, ...] = ("forward", "turn")
    behaviour_instances_per_channel: int = 3
    behaviour_tau_s: float = 1.0
    behaviour_noise: float = 0.01
    behaviour_threshold: float = 0.75
    behaviour_stats_tau_s: float = 60.0

    def __post_init__(self):
        def bad(field, problem):
            raise V.ValidationError(_SRC, field, None, problem)

        if self.n_instances is not None and self.n_neurons is not None:
            bad("n_neurons", "give only one of n_instances and n_neurons")
        if self.n_instances is not None and self.n_instances < 1:
            bad("n_instances", f"must be >= 1, got {self.n_instances}")
        if self.n_neurons is not None and self.n_neurons < 1:
            bad("n_neurons", f"must be >= 1, got {self.n_neurons}")
        object.__setattr__(self, "motifs", tuple(self.motifs))
        object.__setattr__(self, "behaviour_names", tuple(self.behaviour_names))
        if not self.motifs:
            bad("motifs", "at least one motif type is needed")
        for k, name in enumerate(self.motifs):
            if name not in ALL_MOTIF_TYPES:
                raise V.ValidationError(_SRC, "motifs", k, f"unknown motif {name!r}; have {list(ALL_MOTIF_TYPES)}")
        V.check_unique(_SRC, "motifs", np.asarray(self.motifs))
        if self.motif_weights is not None:
            object.__setattr__(self, "motif_weights", _floats(self.motif_weights, "motif_weights"))
            if len(self.motif_weights) != len(self.motifs):
                bad("motif_weights", f"need one weight per motif type ({len(self.motifs)}), got "
                    f"{len(self.motif_weights)}")
            for k, w in enumerate(self.motif_weights):
                if not (math.isfinite(w) and w > 0):
                    raise V.ValidationError(_SRC, "motif_weights", k, f"must be finite and > 0, got {w}")
        object.__setattr__(self, "radius_range", _floats(self.radius_range, "radius_range"))
        if len(self.radius_range) != 2 or not 0 < self.radius_range[0] <= self.radius_range[1]:
            bad("radius_range", f"need 0 < low <= high, got {self.radius_range}")
        if not 0 < self.recorded_fraction <= 1:
            bad("recorded_fraction", f"must be in (0, 1], got {self.recorded_fraction}")
        positive = ("spacing_um", "instance_radius_um", "dt", "drive_tau_s", "rate_scale_hz",
                    "calcium_tau_rise_s", "calcium_tau_decay_s", "calcium_amplitude", "stimulus_duration_s",
                    "behaviour_tau_s", "behaviour_stats_tau_s")
        for name in positive:
            if not getattr(self, name) > 0:
                bad(name, f"must be > 0, got {getattr(self, name)}")
        nonneg = ("jitter_um", "synapse_jitter_um", "syn_intra_per_neuron", "syn_inter_per_neuron",
                  "syn_distractor_per_neuron", "inter_links_per_instance", "inter_weight", "burn_in_s",
                  "drive_scale", "calcium_noise", "stimulus_gain", "stimulus_rate_hz", "behaviour_noise",
                  "n_stimulus", "behaviour_instances_per_channel", "n_steps")
        for name in nonneg:
            if not getattr(self, name) >= 0:
                bad(name, f"must be >= 0, got {getattr(self, name)}")
        if self.n_substeps < 1:
            bad("n_substeps", f"must be >= 1, got {self.n_substeps}")
        if self.neighbours < 1:
            bad("neighbours", f"must be >= 1, got {self.neighbours}")
        if self.calcium_tau_rise_s >= self.calcium_tau_decay_s:
            bad("calcium_tau_rise_s", "rise time constant must be shorter than the decay time constant")
        if self.instance_height_um is not None and not self.instance_height_um > 0:
            bad("instance_height_um", f"must be > 0 or None, got {self.instance_height_um}")
        reach = self.instance_radius_um * self.radius_range[1] + math.sqrt(3.0) * self.jitter_um
        if not reach < self.spacing_um / 2:
            bad("radius_range" if self.radius_range[1] > 1 else "instance_radius_um",
                f"largest radius + sqrt(3)*jitter = {reach:.3g} µm must be < spacing/2 = "
                f"{self.spacing_um / 2:.3g} µm so that instances are spatially separated")
        for name in ("gain_range", "offset_range"):
            lo, hi = getattr(self, name)
            if not (0 <= lo <= hi) or (name == "gain_range" and lo <= 0):
                bad(name, f"need 0 {'<' if name == 'gain_range' else '<='} low <= high, got {(lo, hi)}")
        if self.behaviour_names and self.behaviour_instances_per_channel < 1:
            bad("behaviour_instances_per_channel", "must be >= 1 when behaviour channels are named")
        if not 0 <= self.stimulus_fraction <= 1:
            bad("stimulus_fraction", f"must be in [0, 1], got {self.stimulus_fraction}")
        if not 1 <= self.n_trials <= max(self.n_steps, 1):
            bad("n_trials", f"must be in [1, n_steps={self.n_steps}], got {self.n_trials}")

    def n_channels(self, n_instances: int) -> int:
        """Stimulus channels S: one per instance when retinotopic, else ``n_stimulus``."""
        return int(n_instances) if self.retinotopic_stimulus else int(self.n_stimulus)

    @property
    def mean_units(self) -> float:
        """Mean number of units (neurons) per instance over the configured motif types (and weights)."""
        lib = motif_library()
        return float(np.average([len(lib[m]["units"]) for m in self.motifs], weights=self.motif_weights))

    def resolved_instances(self) -> int:
        """The instance count: `n_instances`, or `n_neurons` divided by the mean motif size."""
        if self.n_instances is not None:
            return int(self.n_instances)
        if self.n_neurons is None:
            return _DEFAULT_INSTANCES
        return max(1, int(round(self.n_neurons / self.mean_units)))


_PRESETS: dict[str, dict[str, Any]] = {
    # ~195 neurons, 300 frames: for unit tests, builds and simulates in a fraction of a second.
    "tiny": dict(n_instances=52, n_steps=300),
    # ~1.5k neurons.
    "small": dict(n_instances=400, n_steps=1000, syn_intra_per_neuron=20.0, syn_distractor_per_neuron=5.0),
    # The README main job: ~600 neurons in 4 motif types, 3000 frames (12.5 min at 4 Hz).
    "default": dict(n_instances=160, n_steps=3000, syn_intra_per_neuron=20.0, syn_distractor_per_neuron=5.0),
    # Fly scale: 100k neurons, ~10M synapses (80 intra + 8 inter + 12 distractor per neuron).
    "fly": dict(n_instances=None, n_neurons=100_000, n_steps=10_000, syn_intra_per_neuron=80.0,
                syn_inter_per_neuron=8.0, syn_distractor_per_neuron=12.0, behaviour_instances_per_channel=20),
}
PRESETS = tuple(_PRESETS)


def preset(name: str, **overrides: Any) -> PhantomConfig:
    """A named configuration ("tiny", "small", "default", "fly") with optional field overrides.

    Giving ``n_neurons`` without ``n_instances`` switches the size to a neuron target.

    Example:
        >>> preset("tiny", seed=3).seed
        3
    """
    if name not in _PRESETS:
        raise V.ValidationError("preset", "name", None, f"unknown preset {name!r}; have {list(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(PhantomConfig)}
    for key in overrides:
        if key not in fields:
            raise V.ValidationError("preset", key, None, f"not a PhantomConfig field; have {sorted(fields)}")
    values = dict(_PRESETS[name])
    if "n_neurons" in overrides and "n_instances" not in overrides:
        values["n_instances"] = None
    if "n_instances" in overrides and "n_neurons" not in overrides:
        values["n_neurons"] = None
    values.update(overrides)
    return PhantomConfig(**values)


def _floats(values: Any, field: str) -> tuple[float, ...]:
    """A config sequence as a tuple of floats, or one ValidationError naming the field."""
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise V.ValidationError(_SRC, field, None, f"need a sequence of numbers, got {values!r}") from None


def _streams(seed: int | list[int]) -> dict[str, np.random.Generator]:
    children = np.random.SeedSequence(seed).spawn(len(_STREAMS))
    return {name: np.random.default_rng(child) for name, child in zip(_STREAMS, children)}


# ---------------------------------------------------------------------------------------------- circuit
@dataclasses.dataclass(frozen=True, eq=False)
class Circuit:
    """A phantom connectome with its planted structural truth.

    Attributes:
      connectome: the :class:`Connectome` (int64 ids, xyz, cell types, multigraph synapses with
        positions, a "size" strength feature and Dale signs).
      instance: ``[N]`` int32 instance of each neuron.
      motif: ``[N]`` int32 motif type of each neuron (index into `motif_names`).
      role: ``[N]`` int32 unit index of each neuron inside its motif.
      instance_center: ``[I, 3]`` float32 µm.
      instance_motif: ``[I]`` int32.
      instance_gain, instance_offset: ``[I]`` float32 output gain and offset.
      instance_radius: µm; every neuron is within it of its instance centre (across the axis, for
        columnar instances: see ``PhantomConfig.instance_height_um``).
      instance_neurons: ``[I, U]`` int32 neuron row of each unit of each instance (-1 padding).
      synapse_origin: ``[E]`` int8, 0 intra-motif / 1 inter-instance / 2 distractor.
      motif_names: the K motif type names.
      motif_params: ``{name: params}`` as in :func:`motif_library`.
      stimulus_instances: ``[Ns]`` int32 stimulated instances; stimulus_channel: ``[Ns]`` their channel.
      behaviour_instances: ``[Kc, nb]`` int32 instances read out by each behaviour channel.
      link_pre, link_post: ``[Lk]`` int32 instances joined by each functional inter-instance link.
      link_weight: ``[Lk]`` float32 signed coupling of each link.
      seed: the seed it was built from.
    """

    connectome: Connectome
    instance: np.ndarray
    motif: np.ndarray
    role: np.ndarray
    instance_center: np.ndarray
    instance_motif: np.ndarray
    instance_gain: np.ndarray
    instance_offset: np.ndarray
    instance_radius: float
    instance_neurons: np.ndarray
    synapse_origin: np.ndarray
    motif_names: tuple[str, ...]
    motif_params: dict[str, dict[str, Any]]
    stimulus_instances: np.ndarray
    stimulus_channel: np.ndarray
    behaviour_instances: np.ndarray
    link_pre: np.ndarray
    link_post: np.ndarray
    link_weight: np.ndarray
    seed: int

    @property
    def n_neurons(self) -> int:
        return self.connectome.n_neurons

    @property
    def n_instances(self) -> int:
        return len(self.instance_motif)

    def summary(self) -> str:
        """Sizes, motif types with instance counts, and synapse counts by origin."""
        c = self.connectome
        inst = np.bincount(self.instance_motif, minlength=len(self.motif_names))
        origin = np.bincount(self.synapse_origin, minlength=3)
        lines = [
            f"Phantom circuit (seed {self.seed}): {c.n_neurons} neurons in {self.n_instances} instances, "
            f"{c.n_synapses} synapses",
            "  motifs: " + ", ".join(
                f"{name} x{n} ({len(self.motif_params[name]['units'])} units)"
                for name, n in zip(self.motif_names, inst)),
            "  synapses: " + ", ".join(f"{o} {n}" for o, n in zip(ORIGIN_NAMES, origin))
            + f"; {len(self.link_pre)} inter-instance links",
            f"  stimulated instances: {len(self.stimulus_instances)}; behaviour readout instances: "
            f"{self.behaviour_instances.size}",
        ]
        return "\n".join(lines)


def _lattice_shape(n: int) -> tuple[int, int, int]:
    nx = max(1, math.ceil(n ** (1 / 3) - 1e-9))
    ny = max(1, math.ceil(math.sqrt(n / nx) - 1e-9))
    nz = max(1, math.ceil(n / (nx * ny)))
    return nx, ny, nz


def _segment_points(rng, xyz, pre, post, jitter):
    """Synapse positions: a uniform point on the segment pre->post plus Gaussian scatter (float32)."""
    out = np.empty((len(pre), 3), np.float32)
    step = 1 << 21  # bounded temporaries at fly scale
    for s in range(0, len(pre), step):
        a, b = xyz[pre[s:s + step]], xyz[post[s:s + step]]
        u = rng.random((len(a), 1), dtype=np.float32)
        b -= a
        b *= u
        b += a
        b += jitter * rng.standard_normal(b.shape, dtype=np.float32)
        out[s:s + step] = b
    return out


def _multiplicity(rng, lam: np.ndarray | float, size) -> np.ndarray:
    """Synapse rows per connection: ``1 + Poisson(max(λ - 1, 0))`` (at least one, mean λ for λ >= 1)."""
    return 1 + rng.poisson(np.maximum(np.asarray(lam, np.float64) - 1.0, 0.0), size=size).astype(np.int64)


def _weighted_counts(n: int, weights: tuple[float, ...]) -> np.ndarray:
    """``n`` split in proportion to `weights` by largest remainder, at least 1 each (when ``n >= len``)."""
    w = np.asarray(weights, np.float64)
    share = n * w / w.sum()
    counts = np.floor(share).astype(np.int64)
    counts[np.argsort(-(share - counts), kind="stable")[: n - counts.sum()]] += 1
    while n >= len(w) and (counts == 0).any():  # a rare type still gets an instance, from the largest
        counts[np.argmax(counts)] -= 1
        counts[np.argmin(counts)] += 1
    return counts


def make_circuit(config: PhantomConfig) -> Circuit:
    """Build the phantom connectome and its structural truth (vectorised numpy).

    Args:
      config: a :class:`PhantomConfig`.

    Returns:
      A :class:`Circuit` with ``N ≈ n_instances · mean_units`` neurons and
      ``E ≈ N · (syn_intra + syn_inter + syn_distractor per neuron)`` synapses.

    Example:
        >>> c = make_circuit(preset("tiny"))
        >>> bool(((c.connectome.xyz - c.instance_center[c.instance]) ** 2).sum(1).max() <= 9.0 ** 2)
        True
    """
    rng = _streams(config.seed)
    lib = motif_library()
    names = tuple(config.motifs)
    params = {m: lib[m] for m in names}
    k_types = len(names)
    units = np.array([len(params[m]["units"]) for m in names], np.int64)
    n_inst = config.resolved_instances()

    # ---- layout: jittered lattice of instances, neurons uniform in a ball around each centre
    columnar = config.instance_height_um is not None
    if columnar:  # one layer of upright columns: a square-ish lattice in x, y
        nx = max(1, math.ceil(math.sqrt(n_inst) - 1e-9))
        shape = (nx, max(1, math.ceil(n_inst / nx)), 1)
    else:
        shape = _lattice_shape(n_inst)
    grid = np.stack(np.unravel_index(np.arange(n_inst), shape), axis=1).astype(np.float32)
    center = grid * np.float32(config.spacing_um) + rng["layout"].uniform(
        -config.jitter_um, config.jitter_um, size=(n_inst, 3)).astype(np.float32)
    if config.motif_weights is None:
        inst_motif = rng["motif"].permutation(np.arange(n_inst) % k_types).astype(np.int32)
    else:
        inst_motif = rng["motif"].permutation(np.repeat(
            np.arange(k_types), _weighted_counts(n_inst, config.motif_weights))).astype(np.int32)
    size = units[inst_motif]
    start = np.concatenate([[0], np.cumsum(size)[:-1]])
    n = int(size.sum())
    # "im" = instance-major order (instance by instance, unit by unit); shuffled into rows below.
    im_instance = np.repeat(np.arange(n_inst, dtype=np.int32), size)
    im_role = (np.arange(n) - start[im_instance]).astype(np.int32)
    direction = rng["layout"].standard_normal((n, 3)).astype(np.float32)
    if columnar:  # uniform in a cylinder: a uniform disc across, uniform along z
        direction[:, 2] = 0.0
    direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-12)
    power = np.float32(1 / 2) if columnar else np.float32(1 / 3)
    radius = config.instance_radius_um * rng["layout"].random(n, dtype=np.float32) ** power
    max_radius = config.instance_radius_um
    if config.radius_range != (1.0, 1.0):  # its own stream: equal sizes leave every other draw as it was
        scale = rng["size"].uniform(*config.radius_range, size=n_inst).astype(np.float32)
        radius *= scale[im_instance]
        max_radius = config.instance_radius_um * config.radius_range[1]
    im_xyz = center[im_instance] + direction * radius[:, None]
    if columnar:
        height = np.float32(config.instance_height_um)
        im_xyz[:, 2] += (rng["layout"].random(n, dtype=np.float32) - np.float32(0.5)) * height

    order = rng["order"].permutation(n)  # row j holds instance-major neuron order[j]
    row_of = np.empty(n, np.int64)
    row_of[order] = np.arange(n)
    instance = im_instance[order]
    role = im_role[order]
    motif = inst_motif[instance]
    xyz = im_xyz[order]
    u_max = int(units.max())
    inst_neurons = np.full((n_inst, u_max), -1, np.int64)
    inst_neurons[im_instance, im_role] = row_of
    ids = ID_BASE + rng["order"].permutation(n).astype(np.int64)
    cell_type_table = np.array([list(params[m]["cell_types"]) + [""] * (u_max - u) for m, u in zip(names, units)])
    cell_type = cell_type_table[motif, role]
    sign_table = np.zeros((k_types, u_max), np.int8)
    for k, m in enumerate(names):
        sign_table[k, : units[k]] = params[m]["sign"]
    neuron_sign = sign_table[motif, role]

    # ---- intra-motif synapses: every off-diagonal nonzero W[post, pre] in every instance
    pres, posts, origins = [], [], []
    for k, m in enumerate(names):
        w = params[m]["W"]
        post_u, pre_u = np.nonzero(w * (1 - np.eye(len(w))))
        insts = np.flatnonzero(inst_motif == k)
        if len(post_u) == 0 or len(insts) == 0:
            continue
        strength = np.abs(w[post_u, pre_u])
        lam = strength * (config.syn_intra_per_neuron * units[k] / strength.sum())
        counts = _multiplicity(rng["intra"], lam[None, :], (len(insts), len(post_u)))
        pres.append(np.repeat(inst_neurons[insts][:, pre_u].ravel(), counts.ravel()).astype(np.int32))
        posts.append(np.repeat(inst_neurons[insts][:, post_u].ravel(), counts.ravel()).astype(np.int32))
        origins.append(np.full(int(counts.sum()), INTRA, np.int8))

    # ---- inter-instance links: output cell of an instance -> input cell of a lattice neighbour
    n_nb = min(config.neighbours, n_inst - 1)
    if n_nb > 0:
        _, neigh = scipy.spatial.cKDTree(center).query(center, k=n_nb + 1)
        neigh = np.asarray(neigh, np.int64).reshape(n_inst, n_nb + 1)
    else:
        neigh = np.arange(n_inst)[:, None]
    n_links = int(round(config.inter_links_per_instance * n_inst)) if n_nb > 0 else 0
    link_pre = rng["inter"].integers(0, n_inst, size=n_links)
    link_post = neigh[link_pre, 1 + rng["inter"].integers(0, max(n_nb, 1), size=n_links)]
    keep = np.unique(link_pre * n_inst + link_post)  # a repeated pair is one link
    link_pre, link_post = keep // n_inst, keep % n_inst
    out_unit = np.array([params[m]["output_unit"] for m in names])
    in_unit = np.array([params[m]["input_unit"] for m in names])
    link_pre_row = inst_neurons[link_pre, out_unit[inst_motif[link_pre]]]
    link_post_row = inst_neurons[link_post, in_unit[inst_motif[link_post]]]
    link_weight = np.zeros(len(link_pre), np.float32)
    if len(link_pre) and config.syn_inter_per_neuron > 0:
        lam = config.syn_inter_per_neuron * n / len(link_pre)
        counts = _multiplicity(rng["inter"], lam, len(link_pre))
        link_weight = (config.inter_weight * neuron_sign[link_pre_row] * counts / lam).astype(np.float32)
        pres.append(np.repeat(link_pre_row, counts).astype(np.int32))
        posts.append(np.repeat(link_post_row, counts).astype(np.int32))
        origins.append(np.full(int(counts.sum()), INTER, np.int8))
    elif len(link_pre):
        link_weight = (config.inter_weight * neuron_sign[link_pre_row]).astype(np.float32)

    # ---- distractors: random neuron -> random neuron of a nearby instance (own included), no function
    n_dis = int(round(config.syn_distractor_per_neuron * n))
    if n_dis and n > 1:
        r = rng["distractor"]
        pre = r.integers(0, n, size=n_dis)
        tgt = neigh[instance[pre], r.integers(0, neigh.shape[1], size=n_dis)]
        tgt_role = (r.random(n_dis) * size[tgt]).astype(np.int64)
        post = inst_neurons[tgt, tgt_role]
        clash = post == pre  # no autapses: move to the next unit of the same instance (every motif has >1)
        post[clash] = inst_neurons[tgt[clash], (tgt_role[clash] + 1) % size[tgt[clash]]]
        pres.append(pre.astype(np.int32))
        posts.append(post.astype(np.int32))
        origins.append(np.full(n_dis, DISTRACTOR, np.int8))

    pre = np.concatenate(pres) if pres else np.zeros(0, np.int32)
    del pres
    post = np.concatenate(posts) if posts else np.zeros(0, np.int32)
    del posts
    origin = np.concatenate(origins) if origins else np.zeros(0, np.int8)
    shuffle = rng["order"].permutation(len(pre))
    pre, post, origin = pre[shuffle], post[shuffle], origin[shuffle]
    del shuffle
    syn_xyz = _segment_points(rng["synapse_xyz"], xyz, pre, post, np.float32(config.synapse_jitter_um))
    syn_size = np.exp(np.float32(0.4) * rng["synapse_xyz"].standard_normal(len(pre), dtype=np.float32))

    # ---- per-instance gain/offset, stimulus and behaviour assignment
    gain = rng["instance"].uniform(*config.gain_range, size=n_inst).astype(np.float32)
    offset = rng["instance"].uniform(*config.offset_range, size=n_inst).astype(np.float32)
    n_stim = int(round(config.stimulus_fraction * n_inst)) if config.n_stimulus > 0 else 0
    stim_inst = np.sort(rng["stimulus_assign"].choice(n_inst, size=n_stim, replace=False)).astype(np.int32)
    stim_chan = (rng["stimulus_assign"].permutation(n_stim) % max(config.n_stimulus, 1)).astype(np.int32)
    if config.retinotopic_stimulus:  # channel i drives instance i (its column's pixel)
        stim_inst = stim_chan = np.arange(n_inst, dtype=np.int32)
    kc = len(config.behaviour_names)
    nb = min(config.behaviour_instances_per_channel, n_inst // max(kc, 1))
    if kc and nb == 0:
        raise V.ValidationError(_SRC, "behaviour_names", None,
                                f"{kc} behaviour channels need at least {kc} instances, have {n_inst}")
    beh_inst = rng["behaviour_assign"].choice(n_inst, size=kc * nb, replace=False).reshape(kc, nb)

    connectome = Connectome(
        ids=ids, xyz=xyz, cell_type=cell_type, pre=pre, post=post, syn_xyz=syn_xyz, strength=syn_size,
        strength_names=("size",), sign=neuron_sign[pre], kind=np.zeros(len(pre), np.int8),
        source=f"phantom(seed={config.seed})",
    )
    return Circuit(
        connectome=connectome, instance=instance, motif=motif.astype(np.int32), role=role,
        instance_center=center, instance_motif=inst_motif, instance_gain=gain, instance_offset=offset,
        instance_radius=float(max_radius), instance_neurons=inst_neurons.astype(np.int32),
        synapse_origin=origin, motif_names=names, motif_params=params, stimulus_instances=stim_inst,
        stimulus_channel=stim_chan, behaviour_instances=np.sort(beh_inst, axis=1).astype(np.int32),
        link_pre=link_pre.astype(np.int32), link_post=link_post.astype(np.int32), link_weight=link_weight,
        seed=config.seed,
    )


# ---------------------------------------------------------------------------------------------- dynamics
class SimChunk(NamedTuple):
    """Frames ``t0 <= t < t0 + t`` of a phantom simulation.

    Attributes:
      t0: index of the first frame.
      rates: ``[t, N]`` float32 latent firing rates (Hz), mean over the frame.
      spikes: ``[t, N]`` int16 spike counts per frame.
      calcium: ``[t, N]`` float32 observed ΔF/F (kernel-filtered spikes plus noise).
      calcium_clean: ``[t, N]`` float32 the same without noise.
      stimulus: ``[t, S]`` float32.
      behaviour: ``[t, Kc]`` float32 continuous behaviour (with observation noise).
      modes: ``[t]`` int32 discrete behaviour mode (0 = still, k+1 = channel k).
    """

    t0: int
    rates: np.ndarray
    spikes: np.ndarray
    calcium: np.ndarray
    calcium_clean: np.ndarray
    stimulus: np.ndarray
    behaviour: np.ndarray
    modes: np.ndarray


class _Group(NamedTuple):
    """Instances of one motif type, simulated together as ``[I_m, u]`` arrays."""

    params: dict
    inst: np.ndarray  # [I_m] instance index
    rows: np.ndarray  # [I_m, u] neuron rows
    stim: np.ndarray  # [I_m, S] stimulus gain per channel (0 for unstimulated)
    keep: np.ndarray  # [u] exp(-h / tau)
    scale: np.ndarray  # [I_m, 1] rate_scale_hz * gain
    shift: np.ndarray  # [I_m, 1] rate_scale_hz * offset


def _rates(p: dict, x: np.ndarray) -> np.ndarray:
    """Canonical rates ``r ∈ [0, 1)`` of a group's state ``x [I_m, u]``."""
    if p["rule"] == "divisive":
        # The pool is the last unit; competitors are all the others.
        n, sig = p["exponent"], p["sigma"] ** p["exponent"]
        y = np.maximum(x[:, :-1], 0.0) ** n
        pool = np.maximum(x[:, -1:], 0.0)
        return np.concatenate([y / (sig + np.maximum(pool, y)), pool / (sig + pool)], axis=1)
    return expit(p["slope"] * (x - p["threshold"]))


def _targets(p: dict, x: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Recurrent part of the fixed point ``Σ_v W[u, v] r_v + b_u`` (divisive pool sums ``y``)."""
    if p["rule"] == "divisive":
        y = np.maximum(x[:, :-1], 0.0) ** p["exponent"]
        out = np.zeros_like(x)
        out[:, :-1] = p["bias"][:-1]
        out[:, -1] = y @ p["W"][-1, :-1]
        return out
    return r @ p["W"].T + p["bias"]


def simulate(
    circuit: Circuit, config: PhantomConfig, n_steps: int | None = None, chunk_steps: int = 256, trial: int = 0
) -> Iterator[SimChunk]:
    """Simulate the phantom frame by frame, yielding chunks of ``chunk_steps`` frames.

    The dynamical state (unit states, OU drives, stimulus pulses, calcium kernel, behaviour filter and
    the random streams) is carried across chunks, so the concatenation of the chunks does not depend
    on `chunk_steps` and ``[T, N]`` is never held whole.

    Args:
      circuit: from :func:`make_circuit` with the same `config`.
      config: the dynamics/observation settings (``n_steps`` is the default length).
      n_steps: number of frames T (default ``config.n_steps``).
      chunk_steps: frames per yielded chunk.
      trial: which trial: trial 0 draws from the config's seed, trial k from independent streams
        (a fresh state, burn-in, stimulus and noise), so trials are unrelated stretches of the same circuit.

    Yields:
      :class:`SimChunk` objects covering frames ``0..T-1`` in order.

    Example:
        >>> cfg = preset("tiny"); c = make_circuit(cfg)
        >>> sum(ch.rates.shape[0] for ch in simulate(c, cfg, n_steps=50, chunk_steps=20))
        50
    """
    n_steps = config.n_steps if n_steps is None else int(n_steps)
    if chunk_steps < 1:
        raise V.ValidationError("simulate", "chunk_steps", None, f"must be >= 1, got {chunk_steps}")
    if n_steps < 0:
        raise V.ValidationError("simulate", "n_steps", None, f"must be >= 0, got {n_steps}")
    if tuple(circuit.motif_names) != tuple(config.motifs) or circuit.seed != config.seed:
        raise V.ValidationError("simulate", "config", None,
                                "circuit was built from a different config (motifs or seed differ)")
    rng = _streams(config.seed if trial == 0 else [config.seed, int(trial)])
    n = circuit.n_neurons
    n_inst = circuit.n_instances
    s_ch = config.n_channels(n_inst)
    dt, h = config.dt, config.dt / config.n_substeps
    stim_gain = np.zeros((n_inst, max(s_ch, 1)))
    stim_gain[circuit.stimulus_instances, circuit.stimulus_channel] = config.stimulus_gain
    groups = []
    for k, name in enumerate(circuit.motif_names):
        p = circuit.motif_params[name]
        inst = np.flatnonzero(circuit.instance_motif == k)
        u = len(p["units"])
        groups.append(_Group(
            params=p, inst=inst, rows=circuit.instance_neurons[inst, :u].astype(np.int64),
            stim=stim_gain[inst, :s_ch], keep=np.exp(-h / p["tau_s"]),
            scale=(config.rate_scale_hz * circuit.instance_gain[inst, None]).astype(np.float64),
            shift=(config.rate_scale_hz * circuit.instance_offset[inst, None]).astype(np.float64),
        ))
    coupling = scipy.sparse.csr_matrix(
        (circuit.link_weight.astype(np.float64), (circuit.link_post, circuit.link_pre)), shape=(n_inst, n_inst))
    ou_keep = math.exp(-h / config.drive_tau_s)
    ou_kick = math.sqrt(1.0 - ou_keep**2)

    # state
    x = [np.zeros((len(g.inst), len(g.params["units"]))) for g in groups]
    eta = [rng["dyn"].standard_normal(xi.shape) for xi in x]
    r = [_rates(g.params, xi) for g, xi in zip(groups, x)]
    out_r = np.zeros(n_inst)
    stim_left = np.zeros(s_ch, np.int64)
    stim_amp = np.zeros(s_ch)
    p_on = 1.0 - math.exp(-config.stimulus_rate_hz * dt)
    p_end = min(1.0, dt / config.stimulus_duration_s)
    d_keep, r_keep = math.exp(-dt / config.calcium_tau_decay_s), math.exp(-dt / config.calcium_tau_rise_s)
    td, tr = config.calcium_tau_decay_s, config.calcium_tau_rise_s
    t_peak = math.log(td / tr) * td * tr / (td - tr)
    ca_gain = config.calcium_amplitude / (math.exp(-t_peak / td) - math.exp(-t_peak / tr))
    ca_slow, ca_fast = np.zeros(n), np.zeros(n)
    kc = circuit.behaviour_instances.shape[0]
    beh = np.zeros(kc)
    beh_mu, beh_var = np.zeros(kc), np.full(kc, 1e-2)
    beh_alpha = 1.0 - math.exp(-dt / config.behaviour_tau_s)
    stats_alpha = 1.0 - math.exp(-dt / config.behaviour_stats_tau_s)

    def frame():
        """Advance one frame; returns (stimulus [S], mean canonical rates per group, out_r snapshot)."""
        nonlocal stim_left, stim_amp, out_r
        u = rng["stimulus"].random((3, s_ch))
        start = (stim_left == 0) & (u[0] < p_on)
        dur = np.ceil(np.log1p(-u[1]) / math.log1p(-p_end)).astype(np.int64) if p_end < 1 else np.ones(s_ch, int)
        stim_left = np.where(start, np.maximum(dur, 1), stim_left)
        stim_amp = np.where(start, 0.5 + u[2], stim_amp)
        stim = np.where(stim_left > 0, stim_amp, 0.0)
        stim_left = np.maximum(stim_left - 1, 0)
        r_mean = [np.zeros_like(xi) for xi in x]
        for _ in range(config.n_substeps):
            inter = coupling @ out_r
            for j, g in enumerate(groups):
                p = g.params
                eta[j] *= ou_keep
                eta[j] += ou_kick * rng["dyn"].standard_normal(eta[j].shape)
                drive = eta[j] * (config.drive_scale * p["drive_gain"])
                drive[:, p["input_unit"]] += g.stim @ stim + inter[g.inst]
                target = _targets(p, x[j], r[j]) + drive
                x[j] = target + g.keep * (x[j] - target)
                r[j] = _rates(p, x[j])
                r_mean[j] += r[j]
                out_r[g.inst] = r[j][:, p["output_unit"]]
        for j in range(len(groups)):
            r_mean[j] /= config.n_substeps
        return stim, r_mean

    def behaviour_step(r_mean):
        nonlocal beh, beh_mu, beh_var
        out_mean = np.zeros(n_inst)
        for j, g in enumerate(groups):
            out_mean[g.inst] = r_mean[j][:, g.params["output_unit"]]
        drive = out_mean[circuit.behaviour_instances].mean(axis=1) if kc else beh
        beh = beh + beh_alpha * (drive - beh)
        beh_mu = beh_mu + stats_alpha * (beh - beh_mu)
        beh_var = beh_var + stats_alpha * ((beh - beh_mu) ** 2 - beh_var)
        z = (beh - beh_mu) / np.sqrt(np.maximum(beh_var, 1e-12))
        mode = 0 if kc == 0 or z.max() < config.behaviour_threshold else 1 + int(np.argmax(z))
        observed = beh + config.behaviour_noise * rng["behaviour"].standard_normal(kc)
        return observed, mode

    for _ in range(int(round(config.burn_in_s / dt))):
        _, r_mean = frame()
        behaviour_step(r_mean)

    for t0 in range(0, n_steps, chunk_steps):
        t = min(chunk_steps, n_steps - t0)
        rates = np.empty((t, n), np.float32)
        stimulus = np.empty((t, s_ch), np.float32)
        behaviour = np.empty((t, kc), np.float32)
        modes = np.empty(t, np.int32)
        for i in range(t):
            stimulus[i], r_mean = frame()
            for j, g in enumerate(groups):
                rates[i, g.rows] = g.shift + g.scale * r_mean[j]
            behaviour[i], modes[i] = behaviour_step(r_mean)
        spikes = rng["spikes"].poisson(rates * dt).astype(np.int16)
        clean = np.empty((t, n), np.float32)
        # Spikes arrive mid-frame on average: the kernel is sampled half a frame after them.
        half_d, half_r = math.sqrt(d_keep), math.sqrt(r_keep)
        for i in range(t):
            ca_slow = d_keep * ca_slow + half_d * spikes[i]
            ca_fast = r_keep * ca_fast + half_r * spikes[i]
            clean[i] = ca_gain * (ca_slow - ca_fast)
        calcium = clean + np.float32(config.calcium_noise) * rng["calcium"].standard_normal((t, n), dtype=np.float32)
        yield SimChunk(t0=t0, rates=rates, spikes=spikes, calcium=calcium, calcium_clean=clean,
                       stimulus=stimulus, behaviour=behaviour, modes=modes)


# ---------------------------------------------------------------------------------------------- phantom
@dataclasses.dataclass(frozen=True, eq=False)
class GroundTruth:
    """The planted truth of a materialised phantom.

    Attributes:
      instance, motif, role: ``[N]`` int32 per neuron (as in :class:`Circuit`).
      rates: ``[T, N]`` float32 latent firing rates (Hz).
      spikes: ``[T, N]`` int16 spike counts.
      calcium_clean: ``[T, N]`` float32 noise-free calcium.
      motif_names, motif_params: the motif types and their parameters.
      instance_motif, instance_center, instance_gain, instance_offset: per instance.
      stimulus_instances, stimulus_channel, behaviour_instances: who is driven and who is read out.
    """

    instance: np.ndarray
    motif: np.ndarray
    role: np.ndarray
    rates: np.ndarray
    spikes: np.ndarray
    calcium_clean: np.ndarray
    motif_names: tuple[str, ...]
    motif_params: dict[str, dict[str, Any]]
    instance_motif: np.ndarray
    instance_center: np.ndarray
    instance_gain: np.ndarray
    instance_offset: np.ndarray
    stimulus_instances: np.ndarray
    stimulus_channel: np.ndarray
    behaviour_instances: np.ndarray

    def take(self, rows: np.ndarray) -> "GroundTruth":
        """The truth of the neurons ``rows [Nr]`` only (e.g. the recorded ones), in that order: per-neuron
        fields become ``[Nr]`` and ``[T, Nr]``; per-instance fields are kept whole.

        Example:
            >>> ph = make_phantom(preset("tiny", n_steps=10))
            >>> ph.truth.take(np.array([3, 1])).motif.tolist() == ph.truth.motif[[3, 1]].tolist()
            True
        """
        rows = np.asarray(rows, np.int64)
        return dataclasses.replace(
            self, instance=self.instance[rows], motif=self.motif[rows], role=self.role[rows],
            rates=self.rates[:, rows], spikes=self.spikes[:, rows], calcium_clean=self.calcium_clean[:, rows])


MODE_STILL = "still"
_MAX_ELEMENTS = 400_000_000  # [T, N] above this is not materialised: use simulate()


@dataclasses.dataclass(frozen=True, eq=False)
class Phantom:
    """A materialised phantom: the circuit, its recording and the ground truth.

    ``recorded`` ``[Nr]`` are the circuit rows of the recording's sources, in trace order (all neurons
    unless ``config.recorded_fraction < 1``); ``truth`` covers every neuron of the circuit.
    """

    circuit: Circuit
    recording: Recording
    truth: GroundTruth
    config: PhantomConfig
    recorded: np.ndarray

    def summary(self) -> str:
        """Readable multi-line summary: sizes, motifs, synapse origins, rate statistics, behaviour modes."""
        c, rec, truth = self.circuit, self.recording, self.truth
        lines = [c.summary(), rec.summary()]
        rates = truth.rates
        lines.append(
            f"  rates Hz: mean {rates.mean():.2f}, p99 {np.percentile(rates, 99):.2f}, max {rates.max():.2f}; "
            f"spikes/frame mean {truth.spikes.mean():.2f}")
        for k, name in enumerate(c.motif_names):
            sel = truth.motif == k
            if sel.any():
                r = rates[:, sel]
                lines.append(f"    {name:<14s} {int(sel.sum()):6d} neurons  rate mean {r.mean():6.2f} Hz  "
                             f"temporal sd {r.std(axis=0).mean():5.2f} Hz   "
                             f"{c.motif_params[name]['description']}")
        ca = rec.traces
        lines.append(f"  calcium ΔF/F: mean {ca.mean():.3f}, sd {ca.std():.3f}, noise sd {self.config.calcium_noise}")
        return "\n".join(lines)


def make_phantom(config: PhantomConfig) -> Phantom:
    """Build and simulate a phantom, materialising all ``[T, N]`` arrays (tiny/small/default sizes).

    Args:
      config: a :class:`PhantomConfig`; ``T = config.n_steps`` frames at ``1 / dt`` Hz.

    Returns:
      :class:`Phantom` whose recording holds calcium traces ``[T, N]``, timestamps ``t · dt``,
      positions and ids of the connectome neurons (same order), stimulus, behaviour and modes. With
      ``config.recorded_fraction < 1`` it holds only the recorded neurons ``[T, Nr]`` (``Phantom.recorded``,
      in connectome order).

    Raises:
      ValidationError: when ``T · N`` is too large to materialise (stream with :func:`simulate`).

    Example:
        >>> ph = make_phantom(preset("tiny", n_steps=20))
        >>> ph.truth.rates.shape == (20, ph.circuit.n_neurons)
        True
    """
    t_total = config.n_steps
    n_est = int(round(config.resolved_instances() * config.mean_units))
    if n_est * t_total > _MAX_ELEMENTS:  # checked before building: the fly circuit alone takes seconds
        raise V.ValidationError(
            _SRC, "n_steps", None,
            f"T*N = {t_total}*{n_est} is too large to materialise; stream it with simulate(circuit, config)")
    circuit = make_circuit(config)
    n = circuit.n_neurons
    edges = np.round(np.linspace(0, t_total, config.n_trials + 1)).astype(int)
    chunks = [ch for k in range(config.n_trials) if edges[k + 1] > edges[k] for ch in simulate(
        circuit, config, n_steps=int(edges[k + 1] - edges[k]), chunk_steps=max(t_total, 1), trial=k)]
    s_ch = config.n_channels(circuit.n_instances)
    cat = lambda f, shape: (np.concatenate([getattr(ch, f) for ch in chunks])  # noqa: E731
                            if chunks else np.zeros(shape, np.float32))
    kc = len(config.behaviour_names)
    rates, spikes = cat("rates", (0, n)), cat("spikes", (0, n)).astype(np.int16)
    calcium, clean = cat("calcium", (0, n)), cat("calcium_clean", (0, n))
    stimulus, behaviour = cat("stimulus", (0, s_ch)), cat("behaviour", (0, kc))
    modes = cat("modes", (0,)).astype(np.int32)
    starts = edges[:-1] if config.n_trials > 1 else None
    frame = np.arange(t_total) - (0 if starts is None else np.repeat(edges[:-1], np.diff(edges)))
    recorded = np.arange(n)
    if config.recorded_fraction < 1:
        n_rec = max(1, int(round(config.recorded_fraction * n)))
        # Its own stream: the fraction changes nothing else.
        recorded = np.sort(_streams(config.seed)["recorded"].choice(n, size=n_rec, replace=False))
        calcium = calcium[:, recorded]
    recording = Recording(
        traces=calcium, timestamps=frame * config.dt, rate_hz=1.0 / config.dt,
        positions=circuit.connectome.xyz[recorded], neuron_ids=circuit.connectome.ids[recorded],
        stimulus=stimulus if s_ch else None, trial_starts=starts,
        stimulus_positions=circuit.instance_center if config.retinotopic_stimulus and s_ch else None,
        behaviour=behaviour if kc else None, behaviour_names=config.behaviour_names,
        modes=modes if kc else None, mode_names=(MODE_STILL, *config.behaviour_names) if kc else (),
        source=f"phantom(seed={config.seed})",
    )
    truth = GroundTruth(
        instance=circuit.instance, motif=circuit.motif, role=circuit.role, rates=rates, spikes=spikes,
        calcium_clean=clean, motif_names=circuit.motif_names, motif_params=circuit.motif_params,
        instance_motif=circuit.instance_motif, instance_center=circuit.instance_center,
        instance_gain=circuit.instance_gain, instance_offset=circuit.instance_offset,
        stimulus_instances=circuit.stimulus_instances, stimulus_channel=circuit.stimulus_channel,
        behaviour_instances=circuit.behaviour_instances,
    )
    return Phantom(circuit=circuit, recording=recording, truth=truth, config=config, recorded=recorded)
