"""Outputs of a fitted model, written into the workdir.

============================  ====================================================================
``partition.csv``             neuron id, x, y, z, location, filter, confidence (+ planted instance and
                              motif on phantoms): every neuron's functional domain
``motif_map.json``            per location: the filter claiming most of its members; per filter: usage
                              and, on phantoms, the motif type it was matched to
``filters.txt``               each filter's discretised architecture, e.g. ``8 -> 12 divisive-norm -> 4``
``metrics.json``              everything :func:`mesojax.evaluate.evaluate` returned
``timings.json``              seconds spent in every phase of the run (setup, compile, training, each
                              baseline, forecasts, report; :mod:`mesojax.progress`)
``per_neuron.csv``            every forecaster's test MSE and R² per neuron at the first and last horizon
``data_report.txt``           what loading excluded or repaired, per file (the loaders' ``LoadReport`` objects;
                              only for data sources that have them, e.g. C. elegans)
``figures/domains_3d.png``    neurons in 3D coloured by filter (legend: the filters in use)
``figures/traces.png``        one-step predictions vs recorded traces on the test segment
``figures/filter_usage.png``  fraction of neurons claimed by each filter, with its architecture
``figures/forecast.png``      R² per forecast horizon, model vs baselines; MSE relative to the best baseline
============================  ====================================================================

The figures are also returned by library functions (:func:`figures`, ``figure_*``) for notebooks.
Files are written to a temporary name and renamed into place, so a crash never leaves a half-written
output behind.
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any

import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")  # headless: figures go to files
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from matplotlib.figure import Figure  # noqa: E402

from mesojax import basis, evaluate, model  # noqa: E402
from mesojax.experiment import Experiment, segment_stimulus, segment_traces  # noqa: E402


def _atomic_write(path: str, data: str | bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    os.replace(tmp, path)


def _save_figure(fig: Any, path: str) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    _atomic_write(path, buf.getvalue())


def filter_descriptions(spec: model.ModelSpec, params: model.Params) -> list[str]:
    """Readable discretised architecture of every filter."""
    return basis.describe_bank(spec.basis, basis.discretize(params.arch))


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


def figure_domains(exp: Experiment, part: dict[str, np.ndarray]) -> Figure:
    """Neurons in 3D coloured by the filter claiming them, with a legend of the filters in use only.

    Unplaced neurons (position unknown) and unclaimed ones are not drawn.
    """
    placed = exp.connectome.placed & (np.asarray(part["filter"]) >= 0)
    xyz = exp.connectome.xyz[placed]
    filt = np.asarray(part["filter"])[placed]
    fig = plt.figure(figsize=(6.5, 5))
    ax = fig.add_subplot(projection="3d")
    colours = plt.get_cmap("tab10" if exp.spec.n_filters <= 10 else "tab20")
    for b in np.unique(filt):
        sel = filt == b
        ax.scatter(xyz[sel, 0], xyz[sel, 1], xyz[sel, 2], s=6, color=colours(int(b) % colours.N),
                   label=f"filter {int(b)} ({int(sel.sum())} neurons)")
    ax.set(xlabel="x µm", ylabel="y µm", title="functional domains (colour = filter)")
    ax.set_zlabel("z µm", labelpad=2)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), markerscale=2, frameon=False)
    return fig


def figure_usage(part: dict[str, np.ndarray], descriptions: list[str]) -> Figure:
    """Fraction of the neurons claimed by each filter, labelled with its architecture."""
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(descriptions) + 1.2))
    order = np.arange(len(part["usage"]))
    ax.barh(order, part["usage"], color="tab:blue")
    ax.set_yticks(order, [f"{b}: {d}" for b, d in enumerate(descriptions)], fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="fraction of neurons", title="filter usage", xlim=(0, max(1e-3, float(np.max(part["usage"]))) * 1.1))
    return fig


def figure_forecast(results: dict[str, Any]) -> Figure:
    """Forecast skill per horizon: R² of the model and every baseline, and the model's MSE relative to
    the best baseline at each horizon (below 1: the model wins)."""
    fc = results["forecast"]
    fig, (ax, rel) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, m in fc.items():
        ax.plot(m["horizons"], m["r2"], marker="o" if name == "model" else ".",
                lw=2.5 if name == "model" else 1, label=name)
    values = np.concatenate([np.asarray(m["r2"], float) for m in fc.values()])
    values = values[np.isfinite(values)]
    # R² ≤ 1; a diverging forecaster would flatten all the others, so the axis stops at -1.
    ax.set_ylim(max(float(values.min()) if values.size else 0.0, -1.0) - 0.05, 1.0)
    ax.set(xlabel="forecast horizon (frames)", ylabel="R² (test; axis clipped at -1)", title="held-out forecasts")
    ax.legend(fontsize=7)
    others = [n for n in fc if n not in evaluate.MODEL_KEYS]
    horizons = np.asarray(fc["model"]["horizons"])
    best = np.min([np.asarray(fc[n]["mse"], float) for n in others], axis=0) if others else None
    if best is not None:
        for name in evaluate.MODEL_KEYS:
            if name in fc:
                rel.plot(horizons, np.asarray(fc[name]["mse"], float) / best, marker="o", label=name)
        rel.axhline(1.0, color="k", lw=0.8, ls="--")
        ratio = np.asarray(fc["model"]["mse"], float) / best
        rel.set_ylim(min(0.8, float(ratio.min()) - 0.05), max(1.2, min(float(ratio.max()) + 0.05, 3.0)))
        rel.legend(fontsize=7)
    rel.set(xlabel="forecast horizon (frames)", ylabel="MSE / best baseline's MSE",
            title="relative to the best baseline (< 1: better)")
    fig.tight_layout()
    return fig


def figure_traces(config: ml_collections.ConfigDict, exp: Experiment, params: model.Params,
                  n_show: int = 6, n_frames: int = 200) -> Figure:
    """One-step predictions against the recorded traces on the test segment's first piece (trial)."""
    spec = exp.spec
    x = np.nan_to_num(segment_traces(exp, "test")[0])[: n_frames + spec.history]
    stim = segment_stimulus(exp, "test")[0][: x.shape[0]]
    pred = np.asarray(evaluate.one_step_predictions(
        spec, params, exp.inputs, evaluate.final_temperatures(config), jnp.asarray(x), jnp.asarray(stim)).x_next)
    show = np.linspace(0, spec.n_neurons - 1, n_show).astype(int)
    fig, axes = plt.subplots(n_show, 1, figsize=(8, 1.3 * n_show), sharex=True)
    for ax, i in zip(np.atleast_1d(axes), show):
        ax.plot(x[spec.history:, i], color="k", lw=1, label="recorded")
        ax.plot(pred[:, i], color="tab:red", lw=1, label="one-step prediction")
        ax.set_ylabel(f"#{i}", fontsize=8)
    np.atleast_1d(axes)[0].legend(fontsize=7, loc="upper right")
    np.atleast_1d(axes)[-1].set_xlabel("test frame")
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
            part: dict[str, np.ndarray]) -> dict[str, Figure]:
    """Every figure of the report, by file name (shown by the colabs, saved by :func:`write`)."""
    descriptions = filter_descriptions(exp.spec, params)
    return {
        "domains_3d.png": figure_domains(exp, part),
        "filter_usage.png": figure_usage(part, descriptions),
        "forecast.png": figure_forecast(results),
        "traces.png": figure_traces(config, exp, params),
    }


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
    _atomic_write(paths["motif_map.json"], json.dumps(motif_map(exp, part, results), indent=1))
    used = part["usage"]
    _atomic_write(paths["filters.txt"], "".join(
        f"filter {b} (usage {used[b]:.3f}): {d}\n" for b, d in enumerate(descriptions)))
    _atomic_write(paths["metrics.json"], json.dumps(
        dict(results, filters=descriptions), indent=1, default=float))
    if exp.reports:
        paths["data_report.txt"] = os.path.join(workdir, "data_report.txt")
        _atomic_write(paths["data_report.txt"], "\n\n".join(str(r) for r in exp.reports.values()) + "\n")

    written = []
    for name, fig in figures(config, exp, params, results, part).items():
        written.append(os.path.join(workdir, "figures", name))
        _save_figure(fig, written[-1])
    return [*paths.values(), *written]


def write_timings(workdir: str, timings: dict[str, float]) -> str:
    """Write ``timings.json`` (phase -> seconds, in the order the phases ended); returns its path."""
    path = os.path.join(workdir, "timings.json")
    _atomic_write(path, json.dumps({k: round(float(v), 3) for k, v in timings.items()}, indent=1))
    return path
