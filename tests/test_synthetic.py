"""Tests for mesojax.data.synthetic: sizes, determinism, planted truth, wiring, dynamics, observation."""

import math
import time

import numpy as np
import pytest

from mesojax.data import Connectome, Recording, ValidationError
from mesojax.data import synthetic as S


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny():
    return S.make_phantom(S.preset("tiny"))


@pytest.fixture(scope="module")
def long_tiny():
    """A tiny circuit simulated longer, for statistics of the dynamics."""
    return S.make_phantom(S.preset("tiny", n_steps=800))


@pytest.fixture(scope="module")
def small_circuit():
    return S.make_circuit(S.preset("small"))


def _unit_rows(circuit, motif_name, unit):
    """``[I_m]`` neuron rows of one unit of every instance of a motif type."""
    k = circuit.motif_names.index(motif_name)
    p = circuit.motif_params[motif_name]
    u = p["units"].index(unit) if isinstance(unit, str) else unit
    return circuit.instance_neurons[circuit.instance_motif == k, u]


# ---------------------------------------------------------------------------------------------- sizes
@pytest.mark.parametrize("name, lo, hi", [("tiny", 150, 250), ("small", 1000, 2000), ("default", 300, 1000)])
def test_preset_sizes(name, lo, hi):
    cfg = S.preset(name)
    c = S.make_circuit(cfg)
    assert lo <= c.n_neurons <= hi
    assert len(set(c.motif_names)) >= 3
    assert np.bincount(c.instance_motif).min() >= 1  # every motif type is planted
    expected_e = c.n_neurons * (cfg.syn_intra_per_neuron + cfg.syn_inter_per_neuron + cfg.syn_distractor_per_neuron)
    assert abs(c.connectome.n_synapses - expected_e) / expected_e < 0.05
    if name == "default":
        assert 2000 <= cfg.n_steps <= 5000
        assert 3 <= len(cfg.motifs) <= 4


def test_tiny_is_fast():
    times = []
    for seed in (11, 12):  # best of two: robust to a busy CI machine
        t = time.perf_counter()
        S.make_phantom(S.preset("tiny", seed=seed))
        times.append(time.perf_counter() - t)
    assert min(times) < 1.0


def test_config_defaults_and_sizing():
    assert S.PhantomConfig().resolved_instances() == S.preset("tiny").resolved_instances()
    assert S.PhantomConfig(n_instances=10).resolved_instances() == 10
    cfg = S.PhantomConfig(n_neurons=375, motifs=("relay",))
    assert cfg.mean_units == 3 and cfg.resolved_instances() == 125


@pytest.mark.parametrize("target", [500, 1237, 4000])
def test_neuron_target(target):
    c = S.make_circuit(S.preset("tiny", n_neurons=target))
    assert abs(c.n_neurons - target) <= 4  # at most one motif's units off
    assert np.all((c.instance_neurons >= 0).sum(1) >= 3)  # 3-8 units per instance
    assert c.instance_neurons.shape[1] <= 8


def test_fly_scale_build():
    """The fly preset builds 100k neurons and ~10M synapses in seconds (memory is reported, not tested)."""
    cfg = S.preset("fly")
    t = time.perf_counter()
    c = S.make_circuit(cfg)
    elapsed = time.perf_counter() - t
    assert abs(c.n_neurons - 100_000) <= 4
    assert abs(c.connectome.n_synapses - 10_000_000) < 0.03 * 10_000_000
    assert c.connectome.syn_xyz.shape == (c.connectome.n_synapses, 3)
    assert elapsed < 60.0
    # a few streamed frames with state carried across chunks
    frames = list(S.simulate(c, S.preset("fly", burn_in_s=1.0), n_steps=3, chunk_steps=2))
    assert [f.rates.shape for f in frames] == [(2, c.n_neurons), (1, c.n_neurons)]
    assert np.isfinite(frames[-1].calcium).all()


def test_fly_preset_refuses_to_materialise():
    with pytest.raises(ValidationError, match="simulate"):
        S.make_phantom(S.preset("fly"))


# ---------------------------------------------------------------------------------------------- determinism
def test_same_seed_same_phantom(tiny):
    again = S.make_phantom(S.preset("tiny"))
    a, b = tiny.circuit.connectome, again.circuit.connectome
    for field in ("ids", "xyz", "cell_type", "pre", "post", "syn_xyz", "strength", "sign"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    np.testing.assert_array_equal(tiny.circuit.synapse_origin, again.circuit.synapse_origin)
    np.testing.assert_array_equal(tiny.recording.traces, again.recording.traces)
    np.testing.assert_array_equal(tiny.recording.modes, again.recording.modes)
    np.testing.assert_array_equal(tiny.truth.spikes, again.truth.spikes)


def test_other_seed_other_phantom(tiny):
    other = S.make_phantom(S.preset("tiny", seed=1))
    assert not np.array_equal(tiny.circuit.instance_motif, other.circuit.instance_motif)
    assert not np.allclose(tiny.circuit.instance_center, other.circuit.instance_center)


def test_time_settings_do_not_change_wiring(tiny):
    """Components draw from their own streams: T and noise levels leave the circuit alone."""
    cfg = S.preset("tiny", n_steps=120, calcium_noise=0.2, stimulus_rate_hz=0.3)
    c = S.make_circuit(cfg)
    np.testing.assert_array_equal(c.connectome.pre, tiny.circuit.connectome.pre)
    np.testing.assert_array_equal(c.connectome.syn_xyz, tiny.circuit.connectome.syn_xyz)
    np.testing.assert_array_equal(c.instance_gain, tiny.circuit.instance_gain)
    short = S.make_phantom(S.preset("tiny", n_steps=120))
    np.testing.assert_array_equal(short.truth.rates, tiny.truth.rates[:120])  # prefix property


@pytest.mark.parametrize("chunk_steps", [1, 7, 64])
def test_chunked_equals_one_shot(tiny, chunk_steps):
    cfg = S.preset("tiny")
    chunks = list(S.simulate(tiny.circuit, cfg, chunk_steps=chunk_steps))
    assert [ch.t0 for ch in chunks] == list(range(0, cfg.n_steps, chunk_steps))
    assert all(ch.rates.shape[0] <= chunk_steps for ch in chunks)
    for field, full in [("rates", tiny.truth.rates), ("spikes", tiny.truth.spikes),
                        ("calcium", tiny.recording.traces), ("calcium_clean", tiny.truth.calcium_clean),
                        ("stimulus", tiny.recording.stimulus), ("behaviour", tiny.recording.behaviour),
                        ("modes", tiny.recording.modes)]:
        np.testing.assert_array_equal(np.concatenate([getattr(ch, field) for ch in chunks]), full, err_msg=field)


# ---------------------------------------------------------------------------------------------- planted truth
def test_neurons_inside_their_instance(tiny):
    c = tiny.circuit
    xyz = c.connectome.xyz
    dist = np.linalg.norm(xyz - c.instance_center[c.instance], axis=1)
    assert dist.max() <= c.instance_radius + 1e-4
    # spatially coherent partition: the nearest centre of every neuron is its own instance's
    d_all = np.linalg.norm(xyz[:, None, :] - c.instance_center[None], axis=2)
    np.testing.assert_array_equal(d_all.argmin(1), c.instance)


def test_truth_tables_agree(tiny):
    c, truth = tiny.circuit, tiny.truth
    n = c.n_neurons
    assert c.instance.dtype == c.motif.dtype == c.role.dtype == np.int32
    np.testing.assert_array_equal(c.motif, c.instance_motif[c.instance])
    filled = c.instance_neurons >= 0
    rows = c.instance_neurons[filled]
    assert np.array_equal(np.sort(rows), np.arange(n))  # each neuron is one unit of one instance
    inst_idx, unit_idx = np.nonzero(filled)
    np.testing.assert_array_equal(c.instance[rows], inst_idx)
    np.testing.assert_array_equal(c.role[rows], unit_idx)
    sizes = filled.sum(1)
    expected = np.array([len(c.motif_params[c.motif_names[m]]["units"]) for m in c.instance_motif])
    np.testing.assert_array_equal(sizes, expected)
    for k, name in enumerate(c.motif_names):
        sel = c.motif == k
        types = np.array(c.motif_params[name]["cell_types"])[c.role[sel]]
        np.testing.assert_array_equal(c.connectome.cell_type[sel], types)
    assert c.connectome.ids.dtype == np.int64 and len(np.unique(c.connectome.ids)) == n
    np.testing.assert_array_equal(truth.instance, c.instance)
    assert truth.motif_names == c.motif_names and truth.motif_params is c.motif_params
    lo, hi = S.preset("tiny").gain_range
    assert np.all((c.instance_gain >= lo) & (c.instance_gain <= hi)) and c.instance_gain.std() > 0.05


def test_intra_synapses_follow_motif_wiring(small_circuit):
    c = small_circuit
    con = c.connectome
    intra = c.synapse_origin == S.INTRA
    pre, post = con.pre[intra], con.post[intra]
    np.testing.assert_array_equal(c.instance[pre], c.instance[post])
    assert np.all(pre != post)
    for k, name in enumerate(c.motif_names):
        w = c.motif_params[name]["W"]
        wired = (w != 0) & ~np.eye(len(w), dtype=bool)
        sel = c.motif[pre] == k
        rp, rq = c.role[post[sel]], c.role[pre[sel]]
        assert wired[rp, rq].all(), f"{name}: synapse on an unwired unit pair"
        # every wired connection exists in every instance of the motif
        n_inst = int((c.instance_motif == k).sum())
        pairs = np.unique(np.stack([c.instance[pre[sel]], rp, rq], 1), axis=0)
        assert len(pairs) == n_inst * wired.sum()
        # more synapses where |W| is larger (counts ∝ |W|)
        counts = np.zeros_like(w)
        np.add.at(counts, (rp, rq), 1)
        strong = np.unravel_index(np.argmax(np.abs(w) * wired), w.shape)
        weak = min(zip(*np.nonzero(wired)), key=lambda ij: abs(w[ij]))
        if abs(w[strong]) > 2 * abs(w[weak]):
            assert counts[strong] > counts[weak]
        sign = c.motif_params[name]["sign"]
        np.testing.assert_array_equal(con.sign[intra][sel], sign[rq])  # Dale's law


def test_inter_and_distractor_synapses(small_circuit):
    c = small_circuit
    con = c.connectome
    cfg = S.preset("small")
    inter = c.synapse_origin == S.INTER
    pre, post = con.pre[inter], con.post[inter]
    assert np.all(c.instance[pre] != c.instance[post])
    out_unit = np.array([c.motif_params[m]["output_unit"] for m in c.motif_names])
    in_unit = np.array([c.motif_params[m]["input_unit"] for m in c.motif_names])
    np.testing.assert_array_equal(c.role[pre], out_unit[c.motif[pre]])
    np.testing.assert_array_equal(c.role[post], in_unit[c.motif[post]])
    links = np.unique(np.stack([c.instance[pre], c.instance[post]], 1), axis=0)
    np.testing.assert_array_equal(links, np.unique(np.stack([c.link_pre, c.link_post], 1), axis=0))
    # links and distractors only reach lattice neighbours
    reach = cfg.spacing_um * math.sqrt(3) + 2 * math.sqrt(3) * cfg.jitter_um
    centre_d = np.linalg.norm(c.instance_center[c.link_pre] - c.instance_center[c.link_post], axis=1)
    assert centre_d.max() <= reach
    dis = c.synapse_origin == S.DISTRACTOR
    dpre, dpost = con.pre[dis], con.post[dis]
    assert np.all(dpre != dpost)
    d = np.linalg.norm(c.instance_center[c.instance[dpre]] - c.instance_center[c.instance[dpost]], axis=1)
    assert d.max() <= reach
    assert (c.instance[dpre] == c.instance[dpost]).mean() < 0.5  # mostly between instances
    # Dale's law everywhere; synapses lie near the segment joining their cells
    neuron_sign = np.zeros(c.n_neurons, np.int8)
    neuron_sign[con.pre] = con.sign
    np.testing.assert_array_equal(con.sign, neuron_sign[con.pre])
    a, b, p = con.xyz[con.pre], con.xyz[con.post], con.syn_xyz
    ab = b - a
    s = np.clip(((p - a) * ab).sum(1) / np.maximum((ab * ab).sum(1), 1e-9), 0, 1)
    off_segment = np.linalg.norm(p - (a + s[:, None] * ab), axis=1)
    assert off_segment.max() < 6 * cfg.synapse_jitter_um * math.sqrt(3)
    assert np.bincount(c.synapse_origin, minlength=3).min() > 0


def test_row_order_reveals_nothing(small_circuit):
    c = small_circuit
    # neuron rows are shuffled: consecutive rows rarely share an instance
    assert (c.instance[1:] == c.instance[:-1]).mean() < 0.1
    assert (c.synapse_origin[1:] == c.synapse_origin[:-1]).mean() < 0.75


# ---------------------------------------------------------------------------------------------- dynamics
def test_rates_bounded_and_positive(tiny):
    cfg = S.preset("tiny")
    r = tiny.truth.rates
    c = tiny.circuit
    hi = cfg.rate_scale_hz * (c.instance_gain + c.instance_offset)[c.instance]
    lo = cfg.rate_scale_hz * c.instance_offset[c.instance]
    assert r.dtype == np.float32 and np.isfinite(r).all()
    assert np.all(r <= hi + 1e-3) and np.all(r >= lo - 1e-3)
    assert r.std(0).min() > 0.1  # every neuron is driven: nothing dies out


def test_oscillator_oscillates_integrator_is_slow(long_tiny):
    c, r, dt = long_tiny.circuit, long_tiny.truth.rates, S.preset("tiny").dt

    def peak_hz(rows):
        x = r[:, rows] - r[:, rows].mean(0)
        power = (np.abs(np.fft.rfft(x, axis=0)) ** 2).mean(1)
        return np.fft.rfftfreq(len(x), dt)[1:][np.argmax(power[1:])]

    assert 0.15 < peak_hz(_unit_rows(c, "ei_oscillator", "exc_a")) < 0.6
    assert peak_hz(_unit_rows(c, "integrator", "d3")) < 0.06


def _mean_pair_corr(rates, rows_a, rows_b):
    return np.mean([np.corrcoef(rates[:, i], rates[:, j])[0, 1] for i, j in zip(rows_a, rows_b)])


def test_motif_signatures(long_tiny):
    c, r = long_tiny.circuit, long_tiny.truth.rates
    # divisive normalisation: competitors anticorrelated
    assert _mean_pair_corr(r, _unit_rows(c, "normalisation", "c0"), _unit_rows(c, "normalisation", "c1")) < -0.1
    # delay line: adjacent stages strongly correlated, the last stage lags the first
    assert _mean_pair_corr(r, _unit_rows(c, "integrator", "d1"), _unit_rows(c, "integrator", "d2")) > 0.7
    first, last = _unit_rows(c, "integrator", "in"), _unit_rows(c, "integrator", "d3")
    lag = 4
    assert _mean_pair_corr(r[:-lag], first, last) < np.mean(
        [np.corrcoef(r[:-lag, i], r[lag:, j])[0, 1] for i, j in zip(first, last)])
    # oscillator: E and I rhythmic, autocorrelation negative at half a period (~2 s = 8 frames)
    x = r[:, _unit_rows(c, "ei_oscillator", "exc_a")]
    x = x - x.mean(0)
    assert ((x[8:] * x[:-8]).mean(0) / (x * x).mean(0)).mean() < -0.1
    # relay: bursty (strong positive skew) unlike the integrator's output
    def skew(rows):
        y = r[:, rows] - r[:, rows].mean(0)
        return ((y**3).mean(0) / (y**2).mean(0) ** 1.5).mean()
    assert skew(_unit_rows(c, "relay", "relay")) > 1.0 > skew(_unit_rows(c, "integrator", "d3"))


def test_motif_types_identifiable_from_calcium(long_tiny):
    """Leave-one-out nearest-centroid on per-instance calcium statistics recovers the motif type."""
    c, x = long_tiny.circuit, long_tiny.recording.traces
    x = x - x.mean(0)
    var = (x * x).mean(0)
    acf = np.stack([(x[lag:] * x[:-lag]).mean(0) / var for lag in (1, 2, 3, 4, 6, 8, 10, 12, 16)], 1)
    cc = np.corrcoef(x.T)
    feats = []
    for i in range(c.n_instances):
        rows = c.instance_neurons[i][c.instance_neurons[i] >= 0]
        off = cc[np.ix_(rows, rows)][~np.eye(len(rows), dtype=bool)]
        feats.append(np.concatenate([acf[rows].mean(0), [off.mean(), off.min()]]))
    feats, y = np.asarray(feats), c.instance_motif
    correct = 0
    for i in range(len(y)):
        others = np.arange(len(y)) != i
        cent = np.stack([feats[others & (y == k)].mean(0) for k in range(len(c.motif_names))])
        correct += int(np.argmin(((cent - feats[i]) ** 2).sum(1)) == y[i])
    assert correct / len(y) >= 0.85


def test_instances_are_independent(long_tiny):
    """Neurons of one instance co-vary much more than neurons of different instances."""
    c, x = long_tiny.circuit, long_tiny.recording.traces
    cc = np.abs(np.corrcoef(x.T))
    same = c.instance[:, None] == c.instance[None, :]
    np.fill_diagonal(same, False)
    other = ~same
    np.fill_diagonal(other, False)
    assert cc[same].mean() > 3 * cc[other].mean()


def test_stimulus_drives_stimulated_instances(long_tiny):
    c, r, stim = long_tiny.circuit, long_tiny.truth.rates, long_tiny.recording.stimulus
    assert stim.shape[1] == S.preset("tiny").n_stimulus and (stim > 0).any(0).all()
    stimulated = set(c.stimulus_instances.tolist())
    inputs = np.array([c.instance_neurons[i, c.motif_params[c.motif_names[m]]["input_unit"]]
                       for i, m in enumerate(c.instance_motif)])
    on = stim > 0
    driven = [np.corrcoef(on[:, ch], r[:, inputs[i]])[0, 1] for i, ch in zip(c.stimulus_instances, c.stimulus_channel)]
    undriven = [np.corrcoef(on[:, 0], r[:, inputs[i]])[0, 1] for i in range(c.n_instances) if i not in stimulated]
    assert np.mean(driven) > 0.25 and abs(np.mean(undriven)) < 0.1


# ---------------------------------------------------------------------------------------------- observation
def test_spikes_and_calcium_kernel(tiny):
    cfg = S.preset("tiny")
    truth, rec = tiny.truth, tiny.recording
    assert truth.spikes.dtype == np.int16 and truth.spikes.min() >= 0
    expected = truth.rates.astype(np.float64) * cfg.dt
    assert abs(truth.spikes.mean() / expected.mean() - 1) < 0.02  # Poisson with the latent rate
    # calcium_clean = spikes convolved with the peak-normalised double exponential sampled mid-frame
    td, tr = cfg.calcium_tau_decay_s, cfg.calcium_tau_rise_s
    k = np.arange(cfg.n_steps)
    t_peak = math.log(td / tr) * td * tr / (td - tr)
    kernel = (np.exp(-(k + 0.5) * cfg.dt / td) - np.exp(-(k + 0.5) * cfg.dt / tr))
    kernel *= cfg.calcium_amplitude / (math.exp(-t_peak / td) - math.exp(-t_peak / tr))
    j = 5
    want = np.convolve(truth.spikes[:, j].astype(np.float64), kernel)[: cfg.n_steps]
    np.testing.assert_allclose(truth.calcium_clean[:, j], want, rtol=1e-4, atol=1e-5)
    noise = rec.traces - truth.calcium_clean
    assert abs(noise.std() / cfg.calcium_noise - 1) < 0.05 and abs(noise.mean()) < 0.01


def test_behaviour_is_a_readout_with_modes(long_tiny):
    cfg = S.preset("tiny")
    c, r, rec = long_tiny.circuit, long_tiny.truth.rates.astype(np.float64), long_tiny.recording
    alpha = 1 - math.exp(-cfg.dt / cfg.behaviour_tau_s)
    for ch, insts in enumerate(c.behaviour_instances):
        rows = [c.instance_neurons[i, c.motif_params[c.motif_names[c.instance_motif[i]]]["output_unit"]]
                for i in insts]
        canon = (r[:, rows] / cfg.rate_scale_hz - c.instance_offset[insts]) / c.instance_gain[insts]
        drive = canon.mean(1)
        filt = np.empty_like(drive)
        state = drive[0]
        for t, v in enumerate(drive):  # the same low-pass, started from the first frame
            state += alpha * (v - state)
            filt[t] = state
        burn = int(5 * cfg.behaviour_tau_s / cfg.dt)  # after the start-up difference has decayed
        assert np.corrcoef(filt[burn:], rec.behaviour[burn:, ch])[0, 1] > 0.98
    assert rec.mode_names == ("still", *cfg.behaviour_names)
    counts = np.bincount(rec.modes, minlength=len(rec.mode_names))
    assert np.all(counts > 0.05 * len(rec.modes))  # every mode visited
    # a channel's mode is on when that channel is high
    for ch in range(len(cfg.behaviour_names)):
        assert rec.behaviour[rec.modes == ch + 1, ch].mean() > rec.behaviour[rec.modes == 0, ch].mean()


def test_recording_matches_connectome(tiny):
    rec, con = tiny.recording, tiny.circuit.connectome
    cfg = S.preset("tiny")
    assert isinstance(rec, Recording) and isinstance(con, Connectome)
    assert rec.traces.shape == (cfg.n_steps, con.n_neurons)
    np.testing.assert_array_equal(rec.positions, con.xyz)
    np.testing.assert_array_equal(rec.neuron_ids, con.ids)
    np.testing.assert_allclose(rec.timestamps, np.arange(cfg.n_steps) * cfg.dt)
    assert rec.rate_hz == pytest.approx(1 / cfg.dt)
    assert rec.behaviour_names == cfg.behaviour_names
    assert np.isfinite(rec.traces).all()


def test_summary(tiny):
    text = tiny.summary()
    for word in ("195 neurons", "instances", "synapses", "intra", "inter", "distractor", "ei_oscillator",
                 "integrator", "normalisation", "relay", "rates Hz", "modes", "still"):
        assert word in text, word
    assert len(text.splitlines()) >= 8


def test_motif_subset():
    cfg = S.preset("tiny", motifs=("relay", "ei_oscillator"), n_stimulus=0, behaviour_names=())
    ph = S.make_phantom(cfg)
    assert ph.circuit.motif_names == ("relay", "ei_oscillator")
    assert set(np.unique(ph.circuit.motif).tolist()) == {0, 1}
    assert ph.recording.stimulus is None and ph.recording.modes is None
    assert np.isfinite(ph.recording.traces).all()


def test_all_eight_motif_types_identifiable_from_calcium():
    """The extra motif types make dynamics of their own: nearest-centroid on per-instance calcium
    statistics tells all eight apart (leave one out)."""
    ph = S.make_phantom(S.preset("tiny", motifs=S.ALL_MOTIF_TYPES, n_instances=80, n_steps=800))
    c, x = ph.circuit, ph.recording.traces
    x = x - x.mean(0)
    var = (x * x).mean(0)
    acf = np.stack([(x[lag:] * x[:-lag]).mean(0) / var for lag in (1, 2, 3, 4, 6, 8, 12)], 1)
    cc = np.corrcoef(x.T)
    feats = []
    for i in range(c.n_instances):
        rows = c.instance_neurons[i][c.instance_neurons[i] >= 0]
        off = cc[np.ix_(rows, rows)][~np.eye(len(rows), dtype=bool)]
        feats.append(np.concatenate([acf[rows].mean(0), acf[rows].min(0), [off.mean(), off.min(), len(rows)]]))
    feats, y = np.asarray(feats), c.instance_motif
    assert np.bincount(y).tolist() == [10] * 8
    correct = 0
    for i in range(len(y)):
        others = np.arange(len(y)) != i
        cent = np.stack([feats[others & (y == k)].mean(0) for k in range(8)])
        correct += int(np.argmin(((cent - feats[i]) ** 2).sum(1)) == y[i])
    assert correct / len(y) >= 0.8  # measured 0.89 (chance 0.125)


@pytest.mark.parametrize("weights, expected", [((4, 2, 1, 1), [26, 13, 7, 6]), ((100, 1, 1, 1), [49, 1, 1, 1])])
def test_motif_weights_set_instance_counts(weights, expected):
    c = S.make_circuit(S.preset("tiny", motif_weights=weights))
    assert np.bincount(c.instance_motif, minlength=4).tolist() == expected  # a rare type keeps one instance
    assert S.make_circuit(S.preset("tiny")).instance_motif.tolist() != c.instance_motif.tolist()


def test_unequal_instance_radii():
    cfg = S.preset("tiny", radius_range=(0.4, 1.0))
    c, equal = S.make_circuit(cfg), S.make_circuit(S.preset("tiny"))
    offset, equal_offset = (x.connectome.xyz - x.instance_center[x.instance] for x in (c, equal))
    dist, equal_dist = np.linalg.norm(offset, axis=1), np.linalg.norm(equal_offset, axis=1)
    assert dist.max() <= c.instance_radius + 1e-4 == cfg.instance_radius_um + 1e-4
    # Only the sizes changed: the same centres and directions, each instance scaled by one factor in range.
    np.testing.assert_array_equal(c.instance_center, equal.instance_center)
    np.testing.assert_allclose(offset / dist[:, None], equal_offset / equal_dist[:, None], atol=1e-4)
    scale = dist / equal_dist
    per_instance = np.array([scale[c.instance == i] for i in range(c.n_instances)], dtype=object)
    assert all(np.ptp(s) < 1e-4 for s in per_instance)
    factors = np.array([s[0] for s in per_instance])
    assert 0.4 - 1e-4 <= factors.min() < 0.55 and 0.85 < factors.max() <= 1.0 + 1e-4


def test_the_default_phantom_is_unchanged():
    """New options draw from their own streams: the default phantom is the one they were added to (its
    wiring exactly, by digest; positions and recording to float tolerance, which survives other CPUs)."""
    import hashlib

    ph = S.make_phantom(S.preset("tiny"))
    c, rec = ph.circuit.connectome, ph.recording
    digest = hashlib.sha256()
    for a in (c.ids, c.pre, c.post, ph.circuit.instance_motif, ph.circuit.instance):
        digest.update(np.ascontiguousarray(a).tobytes())
    assert digest.hexdigest()[:16] == "371f5efba948d12c"
    sums = [c.xyz.astype(np.float64).sum(), rec.traces.astype(np.float64).sum(), rec.traces[123, 45],
            rec.behaviour.astype(np.float64).sum(), rec.stimulus.astype(np.float64).sum()]
    np.testing.assert_allclose(sums, [23938.412082, 27842.822505, 0.341607273, 150.684643, 101.552022], rtol=1e-5)


def test_recorded_fraction_images_a_random_half(tiny):
    from mesojax import config as config_lib
    from mesojax.data import sources

    half = S.make_phantom(S.preset("tiny", recorded_fraction=0.5))
    n = tiny.circuit.n_neurons
    assert len(half.recorded) == half.recording.n_sources == round(0.5 * n)
    assert (np.diff(half.recorded) > 0).all()
    # The same circuit and activity: the recording is the full one's columns, with their ids and positions.
    np.testing.assert_array_equal(half.recording.traces, tiny.recording.traces[:, half.recorded])
    np.testing.assert_array_equal(half.recording.neuron_ids, tiny.circuit.connectome.ids[half.recorded])
    np.testing.assert_array_equal(half.recording.positions, tiny.circuit.connectome.xyz[half.recorded])
    cfg = config_lib.base_config().data
    cfg.overrides.recorded_fraction = 0.5
    data = sources.load(cfg)  # the model sees the recorded neurons and the synapses among them only
    assert data.connectome.n_neurons == data.recording.n_sources == len(half.recorded)
    np.testing.assert_array_equal(data.connectome.ids, tiny.circuit.connectome.ids[half.recorded])  # int64 ids
    assert "neurons imaged" in data.reports["registration"].notes[0]
    np.testing.assert_array_equal(data.truth.motif, tiny.truth.motif[half.recorded])
    np.testing.assert_array_equal(data.truth.rates, tiny.truth.rates[:, half.recorded])
    rec = np.zeros(n, bool)
    rec[half.recorded] = True
    full = tiny.circuit.connectome
    assert data.connectome.n_synapses == int((rec[full.pre] & rec[full.post]).sum())


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("overrides, field", [
    (dict(instance_radius_um=16.0), "instance_radius_um"),
    (dict(motifs=("ei_oscillator", "blob")), "motifs"),
    (dict(motifs=("relay", "relay")), "motifs"),
    (dict(dt=0.0), "dt"),
    (dict(n_substeps=0), "n_substeps"),
    (dict(gain_range=(1.2, 0.8)), "gain_range"),
    (dict(calcium_tau_rise_s=2.0), "calcium_tau_rise_s"),
    (dict(n_instances=5, n_neurons=100), "n_neurons"),
    (dict(stimulus_fraction=1.5), "stimulus_fraction"),
    (dict(behaviour_instances_per_channel=0), "behaviour_instances_per_channel"),
    (dict(nonsense=1), "nonsense"),
    (dict(motif_weights=(1.0, 2.0)), "motif_weights"),
    (dict(motif_weights=(1.0, 2.0, 0.0, 1.0)), "motif_weights"),
    (dict(radius_range=(0.5, 2.0)), "radius_range"),
    (dict(radius_range=("small", "large")), "radius_range"),
    (dict(motif_weights=3.0), "motif_weights"),
    (dict(radius_range=(0.0, 1.0)), "radius_range"),
    (dict(recorded_fraction=0.0), "recorded_fraction"),
])
def test_bad_config(overrides, field):
    with pytest.raises(ValidationError) as err:
        S.preset("tiny", **overrides)
    assert err.value.field == field


def test_unknown_preset_and_mismatched_config(tiny):
    with pytest.raises(ValidationError, match="unknown preset"):
        S.preset("mouse")
    with pytest.raises(ValidationError, match="different config"):
        next(S.simulate(tiny.circuit, S.preset("tiny", seed=4)))


def test_columnar_instances_stand_side_by_side_in_one_layer():
    cfg = S.preset("tiny", seed=1, instance_height_um=80.0)
    c = S.make_circuit(cfg)
    d = c.connectome.xyz - c.instance_center[c.instance]
    assert (np.sqrt((d[:, :2] ** 2).sum(1)) <= cfg.instance_radius_um + 1e-4).all()
    assert (np.abs(d[:, 2]) <= 40.0 + 1e-4).all() and np.abs(d[:, 2]).max() > 30.0  # tall: up to 40 µm
    assert np.ptp(c.instance_center[:, 2]) <= 2 * cfg.jitter_um  # one layer
    with pytest.raises(ValidationError, match="instance_height_um"):
        S.preset("tiny", instance_height_um=-1.0)
