"""Outputs of a fitted model, written into the workdir.

============================  ====================================================================
``partition.csv``             neuron id, x, y, z, location, filter, confidence (+ planted instance and
                              motif on phantoms): every neuron's functional domain
``motif_map.json``            per location: the filter claiming most of its members; per filter: usage,
                              architecture, equation and, on phantoms, the motif type it was matched to
``filters.txt``               each filter's discretised architecture, e.g. ``8 -> 12 divisive-norm -> 4``,
                              and its equation (:func:`mesojax.basis.equation`)
``metrics.json``              everything :func:`mesojax.evaluate.evaluate` returned
``timings.json``              seconds spent in every phase of the run (setup, compile, training, each
                              baseline, forecasts, report; :mod:`mesojax.progress`)
``per_neuron.csv``            every forecaster's test MSE and R² per neuron at the first and last horizon
``data_report.txt``           what loading excluded or repaired, per file (the loaders' ``LoadReport`` objects;
                              only for data sources that have them, e.g. C. elegans)
``evaluation.npz``            the per-neuron scores and behaviour series behind the figures
``report.html``               one self-contained page (opens offline): tables, filter descriptions, an
                              interactive 3D view of the neurons (plotly; hover: id, cell type, location,
                              filter, confidence, R²) and every figure
``figures/forecast.png``      R² per horizon, model vs baselines (band: per-neuron spread); MSE relative
                              to the best baseline
``figures/domains_3d.png``    neurons in 3D coloured by filter (legend: the filters in use) and by domain
``figures/filter_usage.png``  fraction of neurons claimed by each filter, with its architecture
``figures/filters.png``       each used filter's architecture as a diagram and its response curves
``figures/traces.png``        one-step predictions vs recorded traces: best, median and worst neuron
``figures/behaviour.png``     behaviour predicted (model, linear decoder) vs recorded
``figures/training.png``      every loss term against the training step
``figures/rsa.png``           representational similarity: recorded and predicted RDMs, similarity per
                              scope with noise ceiling and null (:mod:`mesojax.analysis`)
``figures/learning_curve.png``  one-shot learning: frozen basis, scratch and best baseline against the
                              held-out circuit's training frames (``transfer.curve``, or
                              :func:`mesojax.train.add_to_report`)
============================  ====================================================================

The figures are also returned by library functions (:func:`figures`, ``figure_*``) for notebooks.
Files are written to a temporary name and renamed into place, so a crash never leaves a half-written
output behind.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
import os
from typing import Any

import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")  # headless: figures go to files
# Math text (log-axis tick labels) makes the font manager warn, once per family, about every optional
# font this machine lacks (STIX, Computer Modern) before it falls back to DejaVu: noise in the run's log.
logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from matplotlib.figure import Figure  # noqa: E402

import jax  # noqa: E402

from mesojax import basis, evaluate, interactive, losses, model  # noqa: E402
from mesojax.experiment import Experiment, segment_stimulus, segment_traces  # noqa: E402


def _atomic_write(path: str, data: str | bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    os.replace(tmp, path)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def filter_descriptions(spec: model.ModelSpec, params: model.Params) -> list[str]:
    """Readable discretised architecture of every filter."""
    return basis.describe_bank(spec.basis, basis.discretize(params.arch))


def filter_equations(spec: model.ModelSpec, params: model.Params) -> list[str]:
    """Every filter's discretised computation written out (:func:`mesojax.basis.equation`)."""
    return [basis.equation(spec.basis, f) for f in basis.fix_bank(spec.basis, params.arch)]


def partition_rows(exp: Experiment, part: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """One dict per neuron: id, position, location, filter, confidence (+ truth on phantoms).

    x, y, z are "" (an empty CSV field) for unplaced neurons (position unknown).
    """
    c = exp.connectome
    placed = c.placed
    rows = []
    for i in range(c.n_neurons):
        x, y, z = (float(v) for v in c.xyz[i]) if placed[i] else ("", "", "")
        row = {
            "neuron_id": c.ids[i].item(), "x": x, "y": y, "z": z,
            "cell_type": str(c.cell_type[i]), "location": int(part["location"][i]),
            "filter": int(part["filter"][i]), "confidence": round(float(part["confidence"][i]), 4),
        }
        if exp.truth is not None:
            row["true_instance"] = int(exp.truth.instance[i])
            row["true_motif"] = str(exp.truth.motif_names[int(exp.truth.motif[i])])
        rows.append(row)
    return rows


def motif_map(exp: Experiment, part: dict[str, np.ndarray], results: dict[str, Any]) -> dict[str, Any]:
    """Per-location dominant filter and per-filter usage / matched motif."""
    locs = {}
    for loc in np.unique(part["location"][part["location"] >= 0]):
        sel = part["location"] == loc
        filt, counts = np.unique(part["filter"][sel], return_counts=True)
        locs[str(int(loc))] = {
            "center_um": [float(v) for v in exp.tables.centers[loc]],
            "filter": int(filt[np.argmax(counts)]), "n_neurons": int(sel.sum()),
        }
    matched = {}
    if "truth" in results:
        matched = {f: m for m, f in results["truth"]["motif_assignment"].items()}
    filters = {
        str(b): {"usage": float(part["usage"][b]), "motif": matched.get(b)} for b in range(len(part["usage"]))
    }
    return {"locations": locs, "filters": filters}


def _filter_colour(n_filters: int, b: int) -> str:
    colours = interactive.filter_colours(n_filters)
    return colours[int(b) % len(colours)]


def figure_domains(exp: Experiment, part: dict[str, np.ndarray]) -> Figure:
    """Neurons in 3D: left, coloured by the filter claiming them (a legend of the filters in use only);
    right, one colour per domain (a (location, filter) pair; neighbouring domains differ).

    Unplaced neurons (position unknown) and unclaimed ones are not drawn.
    """
    placed = exp.connectome.placed & (np.asarray(part["filter"]) >= 0)
    xyz = exp.connectome.xyz[placed]
    filt = np.asarray(part["filter"])[placed]
    domain = np.asarray(part["location"])[placed].astype(np.int64) * exp.spec.n_filters + filt
    fig = plt.figure(figsize=(12, 5))
    ax = fig.add_subplot(1, 2, 1, projection="3d")
    for b in np.unique(filt):
        sel = filt == b
        ax.scatter(xyz[sel, 0], xyz[sel, 1], xyz[sel, 2], s=6, color=_filter_colour(exp.spec.n_filters, b),
                   label=f"filter {int(b)} ({int(sel.sum())} neurons)")
    ax.set(xlabel="x µm", ylabel="y µm", title="colour = filter")
    ax.set_zlabel("z µm", labelpad=10)
    ax.set_box_aspect(None, zoom=0.88)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.02), ncol=3, markerscale=2, frameon=False)
    dx = fig.add_subplot(1, 2, 2, projection="3d")
    _, rank = np.unique(domain, return_inverse=True)
    palette = plt.get_cmap("tab20")
    dx.scatter(xyz[:, 0], xyz[:, 1], xyz[:, 2], s=6, color=palette(rank % 20))
    dx.set(xlabel="x µm", ylabel="y µm", title=f"colour = domain ({len(np.unique(domain))} domains)")
    dx.set_zlabel("z µm", labelpad=10)
    dx.set_box_aspect(None, zoom=0.88)
    fig.suptitle("functional domains")
    return fig


def figure_usage(part: dict[str, np.ndarray], descriptions: list[str]) -> Figure:
    """Fraction of the neurons claimed by each filter, labelled with its architecture."""
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(descriptions) + 1.2))
    order = np.arange(len(part["usage"]))
    ax.barh(order, part["usage"], color=[_filter_colour(len(descriptions), b) for b in order])
    ax.set_yticks(order, [f"{b}: {d}" for b, d in enumerate(descriptions)], fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="fraction of neurons", title="filter usage", xlim=(0, max(1e-3, float(np.max(part["usage"]))) * 1.1))
    return fig


def figure_forecast(results: dict[str, Any], part: dict[str, Any] | None = None) -> Figure:
    """Forecast skill per horizon: R² of the model and every baseline (the band: the model's per-neuron
    R² between the 25th and 75th percentile), and each model's MSE relative to the best baseline at
    each horizon (below 1: the model wins)."""
    fc = results["forecast"]
    fig, (ax, rel) = plt.subplots(1, 2, figsize=(11, 4))
    for name, m in fc.items():
        ax.plot(m["horizons"], m["r2"], marker="o" if name == "model" else ".",
                lw=2.5 if name == "model" else 1, label=name)
    values = np.concatenate([np.asarray(m["r2"], float) for m in fc.values()])
    values = values[np.isfinite(values)]
    if part is not None and "per_neuron" in part:
        r2 = np.asarray(part["per_neuron"]["model"]["r2"], float)
        if np.isfinite(r2).any():
            with np.errstate(all="ignore"):
                lo, hi = np.nanpercentile(r2, 25, axis=1), np.nanpercentile(r2, 75, axis=1)
            ax.fill_between(part["horizons"], lo, hi, color="tab:blue", alpha=0.15, lw=0,
                            label="model, per-neuron R² 25–75 %")
            values = np.concatenate([values, lo[np.isfinite(lo)]])
    # R² ≤ 1; a diverging forecaster would flatten all the others, so the axis stops at -1.
    ax.set_ylim(max(float(values.min()) if values.size else 0.0, -1.0) - 0.05, 1.0)
    ax.set(xlabel="forecast horizon (frames)", ylabel="R² (test; axis clipped at -1)", title="held-out forecasts")
    ax.legend(fontsize=7)
    others = [n for n in fc if n not in evaluate.MODEL_KEYS]
    horizons = np.asarray(fc["model"]["horizons"])
    if others:
        best = np.min([np.asarray(fc[n]["mse"], float) for n in others], axis=0)
        for name in evaluate.MODEL_KEYS:
            if name in fc:
                rel.plot(horizons, np.asarray(fc[name]["mse"], float) / best, marker="o", label=name)
        rel.axhline(1.0, color="k", lw=0.8, ls="--", label="best baseline")
        ratio = np.asarray(fc["model"]["mse"], float) / best
        rel.set_ylim(min(0.8, float(ratio.min()) - 0.05), max(1.2, min(float(ratio.max()) + 0.05, 3.0)))
        rel.legend(fontsize=7)
    rel.set(xlabel="forecast horizon (frames)", ylabel="MSE / best baseline's MSE",
            title="relative to the best baseline (< 1: better)")
    fig.tight_layout()
    return fig


def _response_curves(spec: model.ModelSpec, params: model.Params, temperature: float, b: int,
                     sweep: np.ndarray) -> np.ndarray:
    """Filter b's outputs ``[len(sweep), n_out]`` for inputs whose every port channel equals s (no stimulus)."""
    bank = basis.make_bank(spec.basis)
    n_port = spec.n_ports * spec.n_channels
    u = np.zeros((len(sweep), spec.basis.n_in), np.float32)
    u[:, :n_port] = sweep[:, None]
    one = jax.tree.map(lambda x: x[b], (params.basis, basis.discretize(params.arch)))
    v, _ = jax.vmap(lambda x: bank.apply(*one, jnp.asarray(x), None, temperature=temperature))(u)
    return np.asarray(v)


def _draw_architecture(ax: Any, spec: basis.BasisSpec, arch: basis.Arch, colour: str) -> None:
    """One filter's discretised architecture as boxes (input, active layers, output) joined by arrows;
    skip edges curve over the boxes, a recurrent edge loops back to the input."""
    hard = jax.tree.map(np.asarray, basis.discretize(arch))
    boxes = [f"in\n{spec.n_in}"]
    source = []  # the box a skip edge j leaves from: the last active layer at or before stream j
    for layer in range(spec.n_layers):
        source.append(len(boxes) - 1)
        if hard.layer[layer] > 0:
            width = int((hard.units[layer] > 0).sum()) * spec.width_step
            name = basis.DISPLAY_NAMES[spec.layer_types[int(np.argmax(hard.types[layer]))]]
            boxes.append(f"{name}\n{width}")
    boxes.append(f"out\n{spec.n_out}")
    xs = np.linspace(0.1, 0.9, len(boxes))
    for x, text in zip(xs, boxes):
        ax.text(x, 0.45, text, ha="center", va="center", fontsize=7,
                bbox=dict(boxstyle="round", fc="white", ec=colour, lw=1.5))
    for x0, x1 in zip(xs[:-1], xs[1:]):
        ax.annotate("", xy=(x1 - 0.06, 0.45), xytext=(x0 + 0.06, 0.45), arrowprops=dict(arrowstyle="->", lw=1))
    last = len(boxes) - 2
    for j in range(spec.n_layers):
        if hard.skip[j] > 0 and source[j] < last:
            ax.annotate("", xy=(xs[-1], 0.6), xytext=(xs[source[j]], 0.6),
                        arrowprops=dict(arrowstyle="->", lw=0.8, ls="--", connectionstyle="arc3,rad=-0.35"))
    if hard.recurrent is not None and hard.recurrent > 0:
        ax.annotate("", xy=(xs[0], 0.3), xytext=(xs[-2], 0.3),
                    arrowprops=dict(arrowstyle="->", lw=0.8, color="tab:red", connectionstyle="arc3,rad=-0.35"))
    ax.set(xlim=(0, 1), ylim=(0, 1))
    ax.axis("off")


def figure_filters(config: ml_collections.ConfigDict, exp: Experiment, params: model.Params,
                   part: dict[str, np.ndarray]) -> Figure:
    """For every filter in use: its discretised architecture as a diagram and its input-output response
    (each output port as every input port channel sweeps from -3 to 3, zero state, no stimulus)."""
    spec = exp.spec
    filt = np.asarray(part["filter"])
    used = [int(b) for b in np.unique(filt[filt >= 0])]
    descriptions = filter_descriptions(spec, params)
    sweep = np.linspace(-3.0, 3.0, 61, dtype=np.float32)
    temperature = float(evaluate.final_temperatures(config).arch)
    fig, axes = plt.subplots(max(len(used), 1), 2, figsize=(10, 1.9 * max(len(used), 1)), squeeze=False,
                             gridspec_kw=dict(width_ratios=(1.6, 1.0)))
    for row, b in zip(axes, used):
        colour = _filter_colour(spec.n_filters, b)
        _draw_architecture(row[0], spec.basis, jax.tree.map(lambda x: x[b], params.arch), colour)
        row[0].set_title(f"filter {b} ({int((filt == b).sum())} neurons): {descriptions[b]}", fontsize=8, loc="left")
        v = _response_curves(spec, params, temperature, b, sweep)
        for m in range(v.shape[1]):
            row[1].plot(sweep, v[:, m], lw=1.2, label=f"port {m}")
        row[1].set_xlabel("input (every port channel)", fontsize=7)
        row[1].set_ylabel("output", fontsize=7)
        row[1].tick_params(labelsize=7)
    if used:
        axes[0][1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def _pick_neurons(part: dict[str, Any] | None, n: int) -> list[tuple[str, int]]:
    """The best, median and worst neurons by the model's per-neuron R² at h1 (evenly spaced without it)."""
    if part is not None and "per_neuron" in part:
        r2 = np.asarray(part["per_neuron"]["model"]["r2"][0], float)
        scored = np.flatnonzero(np.isfinite(r2))
        if scored.size >= 3:
            order = scored[np.argsort(r2[scored])]
            return [("best", int(order[-1])), ("median", int(order[len(order) // 2])), ("worst", int(order[0]))]
    return [("", int(i)) for i in np.linspace(0, n - 1, min(n, 3)).astype(int)]


def figure_traces(config: ml_collections.ConfigDict, exp: Experiment, params: model.Params,
                  part: dict[str, Any] | None = None, n_frames: int = 200) -> Figure:
    """One-step predictions against the recorded traces on the test segment's longest piece (trial), for
    the best, median and worst neurons by the model's per-neuron R² at h1."""
    spec = exp.spec
    pieces = segment_traces(exp, "test")
    longest = int(np.argmax([len(p) for p in pieces]))
    x = np.nan_to_num(pieces[longest])[: n_frames + spec.history]
    stim = segment_stimulus(exp, "test")[longest][: x.shape[0]]
    pred = np.asarray(evaluate.one_step_predictions(
        spec, params, exp.inputs, evaluate.final_temperatures(config), jnp.asarray(x), jnp.asarray(stim)).x_next)
    show = _pick_neurons(part, spec.n_neurons)
    fig, axes = plt.subplots(len(show), 1, figsize=(9, 1.5 * len(show)), sharex=True, squeeze=False)
    for ax, (label, i) in zip(axes[:, 0], show):
        ax.plot(x[spec.history:, i], color="k", lw=1, label="recorded")
        ax.plot(pred[:, i], color="tab:red", lw=1, label="one-step prediction")
        r2 = ""
        if part is not None and "per_neuron" in part:
            r2 = f", R² h1 {float(part['per_neuron']['model']['r2'][0][i]):.2f}"
        ax.set_title(f"{label} neuron {exp.connectome.ids[i]} ({exp.connectome.cell_type[i]}){r2}".strip(),
                     fontsize=8, loc="left")
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("test frame")
    fig.tight_layout()
    return fig


def figure_behaviour(part: dict[str, Any]) -> Figure | None:
    """Behaviour predicted (model readout and the linear decoder) against recorded, per continuous target,
    on the test frames (normalised units); None without continuous behaviour."""
    series = part.get("behaviour")
    if not series:
        return None
    names = list(series["names"])
    fig, axes = plt.subplots(len(names), 1, figsize=(9, 1.6 * len(names)), sharex=True, squeeze=False)
    for k, (ax, name) in enumerate(zip(axes[:, 0], names)):
        ax.plot(series["truth"][:, k], color="k", lw=1, label="recorded")
        ax.plot(series["model"][:, k], color="tab:red", lw=1, label="model")
        ax.plot(series["linear_decoder"][:, k], color="tab:gray", lw=0.8, alpha=0.8, label="linear decoder")
        ax.set_ylabel(name, fontsize=8)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("test frame (trials joined)")
    fig.suptitle("behaviour, one frame ahead")
    fig.tight_layout()
    return fig


def _rsa_rows(rsa: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(scope, rsa summary)`` rows: whole circuit (predicted neurons, filter outputs) and every filter,
    per animal for a union."""
    circuits = rsa["animals"] if "animals" in rsa else {"": rsa}
    rows = []
    for animal, r in circuits.items():
        tag = f"{animal}: " if animal else ""
        rows += [(f"{tag}whole, predicted neurons", r["whole"]["predicted"]),
                 (f"{tag}whole, filter outputs", r["whole"]["filters"])]
        rows += [(f"{tag}filter {b}", v) for b, v in r["filters"].items()]
    return rows


def figure_rsa(results: dict[str, Any]) -> Figure | None:
    """Representational similarity (:mod:`mesojax.analysis`): the recorded and predicted RDMs of the
    (first) circuit, and the similarity of every scope with its noise ceiling and the 95th percentile of
    the shuffled-condition null; None when it was not computed."""
    rsa = results.get("rsa")
    if not rsa:
        return None
    first = next(iter(rsa["animals"].values())) if "animals" in rsa else rsa
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), gridspec_kw=dict(width_ratios=(1, 1, 1.4)))
    names = first["rdms"]["conditions"]
    for ax, key, title in zip(axes[:2], ("data", "predicted"), ("RDM: recorded", "RDM: model (predicted)")):
        m = np.asarray(first["rdms"][key], float)
        im = ax.imshow(np.where(m < 0, np.nan, m), cmap="viridis", vmin=0)
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
        ax.set_yticks(range(len(names)), names, fontsize=6)
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.7, label="1 - correlation")
    rows = _rsa_rows(rsa)
    y = np.arange(len(rows))
    bar = axes[2]
    bar.barh(y, [r["similarity"] for _, r in rows], color="tab:blue", label="model vs data (Spearman)")
    bar.scatter([r["ceiling"] for _, r in rows], y, marker="|", s=200, color="k", label="noise ceiling")
    bar.scatter([r["null_p95"] for _, r in rows], y, marker="|", s=200, color="tab:gray", label="null, 95th pct")
    bar.set_yticks(y, [name for name, _ in rows], fontsize=7)
    bar.invert_yaxis()
    bar.set(xlim=(-1, 1.05), xlabel="RDM rank correlation", title="representational similarity")
    bar.axvline(0, color="k", lw=0.5)
    bar.legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    return fig


def figure_learning_curve(curve: dict[str, Any], horizons: tuple[int, ...] = (1, 5)) -> Figure | None:
    """A learning curve (:func:`mesojax.analysis.learning_curve`, or a pool of several): test MSE relative
    to persistence against the new circuit's training frames, for the frozen basis (transfer), the model
    trained from scratch and the best baseline, one panel per horizon (< 1: better than no change).

    Returns None for a curve without the persistence baseline (nothing to compare sizes through)."""
    rel = curve.get("relative_to_persistence")
    if not rel:
        return None
    frames = np.asarray(curve["train_frames"], float)
    frames = frames.mean(0) if frames.ndim > 1 else frames  # pooled folds: their mean size
    baselines = [k for k in rel if k not in ("transfer", "scratch")]
    available = [h for h in horizons if h <= len(rel["transfer"][0])]
    fig, axes = plt.subplots(1, len(available), figsize=(5 * len(available), 3.8), squeeze=False)
    for ax, h in zip(axes[0], available):
        for name, style in (("transfer", dict(color="tab:blue", marker="o", lw=2.5)),
                            ("scratch", dict(color="tab:orange", marker="s", lw=1.5))):
            ax.plot(frames, [r[h - 1] for r in rel[name]], label=name, **style)
        if baselines:
            best = np.min([[r[h - 1] for r in rel[b]] for b in baselines], axis=0)
            ax.plot(frames, best, color="tab:gray", marker=".", ls="--", label="best baseline")
        ax.axhline(1.0, color="k", lw=0.8, ls=":", label="persistence")
        ax.set_xscale("log")
        ax.set_xticks(frames, [f"{int(round(f))}" for f in frames])
        ax.minorticks_off()
        ax.set(xlabel="training frames of the new circuit", ylabel="test MSE / persistence's",
               title=f"horizon {h}")
        ax.legend(fontsize=7)
    fig.suptitle("one-shot learning: frozen basis vs scratch")
    fig.tight_layout()
    return fig


def read_training_log(workdir: str) -> list[dict[str, float]]:
    """The logged training steps of ``metrics.jsonl`` (validation lines included); [] without one."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def figure_training(rows: list[dict[str, float]]) -> Figure | None:
    """Every loss term (and the total) against the training step, log scale; None without a log."""
    rows = [r for r in rows if "loss" in r]
    if not rows:
        return None
    steps = np.asarray([r["step"] for r in rows])
    terms = ["loss", *[k for k in losses.TERMS if any(k in r for r in rows)]]
    fig, ax = plt.subplots(figsize=(9, 4))
    for k in terms:
        values = np.asarray([abs(r.get(k, np.nan)) for r in rows], float)
        if np.isfinite(values).any() and np.nanmax(values) > 0:
            ax.plot(steps, values, lw=2.5 if k == "loss" else 1, label=k)
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="value (log; weighted sum = loss)", title="training curves")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    return fig


def per_neuron_rows(exp: Experiment, part: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per neuron: id, then every forecaster's test MSE and R² at the first and last horizon."""
    scores = part.get("per_neuron", {})
    horizons = np.asarray(part.get("horizons", []))
    picks = sorted({0, len(horizons) - 1}) if len(horizons) else []
    rows = []
    for i in range(exp.connectome.n_neurons):
        row: dict[str, Any] = {"neuron_id": exp.connectome.ids[i].item()}
        for name, m in scores.items():
            for k in picks:
                for what in ("mse", "r2"):
                    v = float(m[what][k, i])
                    row[f"{name}_{what}_h{int(horizons[k])}"] = round(v, 5) if np.isfinite(v) else ""
        rows.append(row)
    return rows


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def figures(config: ml_collections.ConfigDict, exp: Experiment, params: model.Params, results: dict[str, Any],
            part: dict[str, Any], training: list[dict[str, float]] | None = None) -> dict[str, Figure]:
    """Every figure of the report, by file name (shown by the colabs, saved by :func:`write`).

    Args:
      results, part: what :func:`mesojax.evaluate.evaluate` returned.
      training: the logged steps (:func:`read_training_log`) for ``training.png``.
    """
    descriptions = filter_descriptions(exp.spec, params)
    out = {
        "forecast.png": figure_forecast(results, part),
        "domains_3d.png": figure_domains(exp, part),
        "filter_usage.png": figure_usage(part, descriptions),
        "filters.png": figure_filters(config, exp, params, part),
        "traces.png": figure_traces(config, exp, params, part),
        "behaviour.png": figure_behaviour(part),
        "rsa.png": figure_rsa(results),
        "learning_curve.png": (figure_learning_curve(results["learning_curve"])
                               if results.get("learning_curve") else None),
        "training.png": figure_training(training or []),
    }
    return {name: fig for name, fig in out.items() if fig is not None}


def write(workdir: str, config: ml_collections.ConfigDict, exp: Experiment, params: model.Params,
          results: dict[str, Any], part: dict[str, np.ndarray]) -> list[str]:
    """Write every output listed in the module docstring; returns the paths written.

    Args:
      results, part: what :func:`mesojax.evaluate.evaluate` returned.
    """
    os.makedirs(os.path.join(workdir, "figures"), exist_ok=True)
    spec = exp.spec
    descriptions = filter_descriptions(spec, params)
    paths = {name: os.path.join(workdir, name) for name in
             ("partition.csv", "motif_map.json", "filters.txt", "metrics.json")}

    _atomic_write(paths["partition.csv"], _csv(partition_rows(exp, part)))
    if "per_neuron" in part:
        paths["per_neuron.csv"] = os.path.join(workdir, "per_neuron.csv")
        _atomic_write(paths["per_neuron.csv"], _csv(per_neuron_rows(exp, part)))
    mm = motif_map(exp, part, results)
    for b, (d, e) in enumerate(zip(descriptions, filter_equations(spec, params))):
        mm["filters"][str(b)].update(architecture=d, equation=e)
    _atomic_write(paths["motif_map.json"], json.dumps(mm, indent=1))
    used = part["usage"]
    hard = basis.is_hard(params.arch)
    _atomic_write(paths["filters.txt"], (
        "The discretised architectures: the evaluated model itself (the architectures were fixed in training).\n"
        if hard else "The discretised architectures; the evaluated model mixes them softly (model vs model_hard in "
        "metrics.json).\n") + "".join(
        f"filter {b} (usage {used[b]:.3f}): {d}\n    {e}\n"
        for b, (d, e) in enumerate(zip(descriptions, filter_equations(spec, params)))))
    _atomic_write(paths["metrics.json"], json.dumps(
        dict(results, filters=descriptions), indent=1, default=float))
    if exp.reports:
        paths["data_report.txt"] = os.path.join(workdir, "data_report.txt")
        _atomic_write(paths["data_report.txt"], "\n\n".join(str(r) for r in exp.reports.values()) + "\n")

    paths["evaluation.npz"] = os.path.join(workdir, "evaluation.npz")
    save_arrays(paths["evaluation.npz"], part)
    written, pngs = [], {}
    for name, fig in figures(config, exp, params, results, part, read_training_log(workdir)).items():
        written.append(os.path.join(workdir, "figures", name))
        pngs[name] = _png(fig)
        _atomic_write(written[-1], pngs[name])
    paths["report.html"] = os.path.join(workdir, "report.html")
    _atomic_write(paths["report.html"], html_report(exp, params, results, part, pngs))
    return [*paths.values(), *written]


def save_arrays(path: str, part: dict[str, Any]) -> None:
    """The per-neuron forecast scores and behaviour series of an evaluation, as ``.npz`` (for
    :func:`load_arrays` when the report is written again without re-evaluating)."""
    arrays = {}
    for name, m in part.get("per_neuron", {}).items():
        for what, v in m.items():
            arrays[f"per_neuron/{name}/{what}"] = np.asarray(v)
    if "horizons" in part:
        arrays["horizons"] = np.asarray(part["horizons"])
    for key, v in part.get("behaviour", {}).items():
        arrays[f"behaviour/{key}"] = np.asarray(v)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    _atomic_write(path, buf.getvalue())


def load_arrays(path: str) -> dict[str, Any]:
    """What :func:`save_arrays` wrote, as the ``per_neuron`` / ``horizons`` / ``behaviour`` entries of a
    partition dict; {} when `path` does not exist."""
    if not os.path.exists(path):
        return {}
    out: dict[str, Any] = {}
    with np.load(path) as f:
        for key in f.files:
            parts = key.split("/")
            if parts[0] == "per_neuron":
                out.setdefault("per_neuron", {}).setdefault(parts[1], {})[parts[2]] = f[key]
            elif parts[0] == "behaviour":
                value = f[key]
                out.setdefault("behaviour", {})[parts[1]] = value.tolist() if parts[1] == "names" else value
            else:
                out[key] = f[key]
    return out


def write_timings(workdir: str, timings: dict[str, float]) -> str:
    """Write ``timings.json`` (phase -> seconds, in the order the phases ended); returns its path."""
    path = os.path.join(workdir, "timings.json")
    _atomic_write(path, json.dumps({k: round(float(v), 3) for k, v in timings.items()}, indent=1))
    return path


# Records script errors on the page itself, so a headless browser's DOM says whether it rendered cleanly.
_ERROR_PROBE = ("<script>document.documentElement.setAttribute('data-errors','0');"
                "window.addEventListener('error',function(e){var n=document.documentElement;"
                "n.setAttribute('data-errors',String(Number(n.getAttribute('data-errors'))+1));"
                "n.setAttribute('data-last-error',String(e.message));});</script>")

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em auto;max-width:1150px;
color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}.best{font-weight:bold;background:#e8f4e8}
pre{background:#f7f7f7;padding:.6em;font-size:.8em;overflow-x:auto}img{max-width:100%}
.note{color:#666;font-size:.85em}
"""


def _table(header: list[str], rows: list[list[Any]], bold: list[set[int]] | None = None) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if not np.isfinite(v) else f"{v:.4g}"
        return html.escape(str(v))

    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for r, row in enumerate(rows):
        marks = bold[r] if bold else set()
        out.append("<tr>" + "".join(f"<td class='best'>{cell(v)}</td>" if c in marks else f"<td>{cell(v)}</td>"
                                     for c, v in enumerate(row)) + "</tr>")
    return "".join(out) + "</table>"


def _forecast_html(results: dict[str, Any]) -> str:
    fc = results["forecast"]
    names = list(fc)
    horizons = fc["model"]["horizons"]
    tables = []
    for what, pick in (("MSE", np.argmin), ("R²", np.argmax)):
        rows, bold = [], []
        for k, h in enumerate(horizons):
            values = [float(fc[n]["mse" if what == "MSE" else "r2"][k]) for n in names]
            rows.append([int(h), *values])
            finite = np.isfinite(values)
            bold.append({1 + int(pick(np.where(finite, values, np.inf if what == "MSE" else -np.inf)))}
                        if finite.any() else set())
        tables.append(f"<p class='note'>{what}</p>" + _table(["h", *names], rows, bold))
    return "".join(tables)


def _learning_curve_html(curve: dict[str, Any]) -> str:
    """The one-shot learning table: per training share, test MSE over persistence's of the frozen basis,
    scratch and the best baseline at the first and fifth horizon (the lowest of each row in bold)."""
    rel = curve.get("relative_to_persistence")
    if not rel:
        return "<h2>One-shot learning</h2><p class='note'>Not shown: the curve has no persistence baseline.</p>"
    frames = np.asarray(curve["train_frames"], float)
    frames = frames.mean(0) if frames.ndim > 1 else frames
    baselines = [k for k in rel if k not in ("transfer", "scratch")]
    horizons = [h for h in (1, 5) if h <= len(rel["transfer"][0])]
    rows, bold = [], []
    for k, f in enumerate(curve["fractions"]):
        row: list[Any] = [f"{f:g}", int(round(frames[k]))]
        marks = set()
        for h in horizons:
            values = [rel["transfer"][k][h - 1], rel["scratch"][k][h - 1],
                      min(rel[b][k][h - 1] for b in baselines) if baselines else float("nan")]
            marks.add(len(row) + int(np.nanargmin(values)))
            row += values
        rows.append(row)
        bold.append(marks)
    header = ["share", "frames"] + [f"{arm} h{h}" for h in horizons for arm in ("transfer", "scratch", "best baseline")]
    return ("<h2>One-shot learning</h2><p class='note'>The held-out circuit refit on a share of its frames with "
            "the basis frozen (transfer), trained from scratch, and every baseline; test MSE divided by "
            "persistence's (below 1 beats &quot;nothing changes&quot;), the best of each horizon in bold.</p>"
            + _table(header, rows, bold))


def _neuron_hover(exp: Experiment, part: dict[str, Any]) -> list[str]:
    c = exp.connectome
    r2 = None
    if "per_neuron" in part:
        r2 = np.asarray(part["per_neuron"]["model"]["r2"][0], float)
    out = []
    for i in range(c.n_neurons):
        # Plotly renders hover text as HTML but decodes only a few entities: escape <, >, & and no quotes.
        text = (f"neuron {html.escape(str(c.ids[i]), quote=False)}<br>cell type "
                f"{html.escape(str(c.cell_type[i]), quote=False)}"
                f"<br>location {int(part['location'][i])}, filter {int(part['filter'][i])}"
                f"<br>confidence {float(part['confidence'][i]):.3f}")
        if r2 is not None:
            text += f"<br>R² h1 {r2[i]:.3f}" if np.isfinite(r2[i]) else "<br>R² h1 n/a"
        out.append(text)
    return out


def html_report(exp: Experiment, params: model.Params, results: dict[str, Any], part: dict[str, Any],
                pngs: dict[str, bytes]) -> str:
    """``report.html``: one self-contained page (no server, no network) with the run's tables, the filter
    descriptions, an interactive 3D view of the neurons (rotate, zoom; hover names the neuron, its cell
    type, location, filter, confidence and R²) and every figure, inlined.

    Args:
      results, part: what :func:`mesojax.evaluate.evaluate` returned.
      pngs: figure file name -> PNG bytes.
    """
    c, spec = exp.connectome, exp.spec
    descriptions = filter_descriptions(spec, params)
    filt = np.asarray(part["filter"])
    hover = np.asarray(_neuron_hover(exp, part), dtype=object)
    drawn = c.placed & (filt >= 0)
    domain = np.asarray(part["location"]).astype(np.int64) * spec.n_filters + filt
    view = interactive.to_html(interactive.domains_3d(
        c.xyz[drawn], filt[drawn], domain[drawn], hover[drawn].tolist(), n_filters=spec.n_filters,
        title="neurons by filter or domain (drag to rotate, hover for details)"), include_js=True, div_id="domains3d")
    missing = ""
    if (~drawn).any():
        missing = (f"<p class='note'>{int((~drawn).sum())} neurons without a position or a domain are not drawn: "
                   + html.escape(", ".join(str(c.ids[i]) for i in np.flatnonzero(~drawn)[:50]))
                   + (" ..." if (~drawn).sum() > 50 else "") + "</p>")
    rec = exp.recording
    sections = [
        f"<h1>mesojax report</h1><p>{c.n_neurons} neurons, {len(c.pre)} synapses, {rec.n_timesteps} frames at "
        f"{rec.rate_hz:.3g} Hz in {len(rec.trials)} trial(s); {spec.n_locations} receptive fields, "
        f"{spec.n_filters} filters. Source: {html.escape(c.source)}.</p>",
        f"<h2>Summary</h2><pre>{html.escape(evaluate.summary(results))}</pre>",
        "<h2>Neurons in 3D</h2>" + view + missing,
        "<h2>Held-out forecasts</h2><p class='note'>Test MSE and R² per horizon (normalised units); the best "
        "forecaster of each horizon is marked.</p>" + _forecast_html(results),
    ]
    if "truth" in results:
        t = results["truth"]
        rows = [["fitted", t["domain_ari"], t["motif_accuracy"], t["filters_used"], t["planted_k"],
                 t["n_domains"], t["n_instances"]]]
        if "at_init" in t:  # older runs have no initial scores
            i = t["at_init"]
            rows.append(["at initialisation", i["domain_ari"], i["motif_accuracy"], i["filters_used"], "", "", ""])
        sections.append("<h2>Planted truth</h2>" + _table(
            ["model", "domain ARI", "motif accuracy", "filters used", "planted motifs", "domains", "instances"],
            rows))
    if results.get("labels"):
        sections.append("<h2>Known partitions</h2><p class='note'>Adjusted Rand index of the fitted domains "
                        "and filters against every labelling the data has, and of an unsupervised clustering "
                        "of the neurons (k-means, k = the number of labels, on each neuron's assignment weight "
                        "per filter and its correlation with its filter's output ports).</p>" + _table(
                            ["labels", "domain ARI", "filter ARI", "cluster ARI", "distinct labels", "neurons scored"],
                            [[k, v.get("domain_ari", float("nan")), v.get("filter_ari", float("nan")),
                              v.get("cluster_ari", float("nan")), v.get("n_labels", v.get("k", "")),
                              v.get("n_scored", "")] for k, v in results["labels"].items()]))
    beh = results.get("behaviour") or {}
    if beh.get("targets"):
        sections.append("<h2>Behaviour</h2>" + _table(
            ["target", "model R²", "linear decoder R²"],
            [[k, v.get("model_r2", float("nan")), v.get("linear_decoder_r2", float("nan"))]
             for k, v in beh["targets"].items()]))
    if results.get("rsa"):
        sections.append("<h2>Representational similarity</h2><p class='note'>Spearman correlation of the "
                        "model's and the recording's dissimilarity matrices over conditions (test segment), "
                        "with the data's split-half noise ceiling and a shuffled-condition null.</p>" + _table(
                            ["scope", "similarity", "noise ceiling", "null mean", "null 95 %", "p",
                             "cross-half similarity", "split-half reliability", "conditions"],
                            [[name, r["similarity"], r["ceiling"], r["null_mean"], r["null_p95"], r["p_value"],
                              r.get("similarity_cross_half", float("nan")), r["ceiling_split_half"],
                              r["n_conditions"]] for name, r in _rsa_rows(results["rsa"])]))
        across = results["rsa"].get("across_animals")
        if across:
            sections.append("<p class='note'>Each filter's output RDMs compared between animals:</p>" + _table(
                ["filter", "mean similarity", "animal pairs"],
                [[b, v["mean_similarity"], v["n_pairs"]] for b, v in across.items()]))
    if results.get("learning_curve"):
        sections.append(_learning_curve_html(results["learning_curve"]))
    used = np.bincount(filt[filt >= 0], minlength=spec.n_filters)
    sections.append("<h2>Filters</h2>" + _table(
        ["filter", "neurons", "usage", "architecture (discretised)"],
        [[b, int(used[b]), float(part["usage"][b]), d] for b, d in enumerate(descriptions)]))
    for name, data in pngs.items():
        title = name.rsplit(".", 1)[0].replace("_", " ")
        sections.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' "
                        f"src='data:image/png;base64,{base64.b64encode(data).decode()}'>")
    if exp.reports:
        sections.append("<h2>Data report</h2><pre>"
                        + html.escape("\n\n".join(str(r) for r in exp.reports.values())) + "</pre>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>mesojax report</title>"
            + _ERROR_PROBE + f"<style>{_STYLE}</style></head><body>" + "\n".join(sections) + "</body></html>\n")
