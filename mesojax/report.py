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
``data_report.txt``           what loading excluded or repaired, per file (the loaders' ``LoadReport`` objects;
                              only for data sources that have them, e.g. C. elegans)
``figures/domains_3d.png``    neurons in 3D coloured by filter
``figures/traces.png``        one-step predictions vs recorded traces on the test segment
``figures/filter_usage.png``  fraction of neurons claimed by each filter
``figures/forecast.png``      R² per forecast horizon, model vs baselines
============================  ====================================================================

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

from mesojax import basis, evaluate, model  # noqa: E402


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


def partition_rows(exp: Any, part: dict[str, np.ndarray]) -> list[dict[str, Any]]:
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


def motif_map(exp: Any, part: dict[str, np.ndarray], results: dict[str, Any]) -> dict[str, Any]:
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


def _figure_domains(exp: Any, part: dict[str, np.ndarray], path: str) -> None:
    placed = exp.connectome.placed  # unplaced neurons (position unknown) are not drawn
    xyz = exp.connectome.xyz[placed]
    fig = plt.figure(figsize=(6, 5))
    ax = fig.add_subplot(projection="3d")
    sc = ax.scatter(xyz[:, 0], xyz[:, 1], xyz[:, 2], c=np.asarray(part["filter"])[placed], cmap="tab10", s=6,
                    vmin=0, vmax=max(9, int(part["filter"].max())))
    ax.set(xlabel="x µm", ylabel="y µm", zlabel="z µm", title="functional domains (colour = filter)")
    fig.colorbar(sc, ax=ax, shrink=0.6, label="filter")
    _save_figure(fig, path)


def _figure_usage(part: dict[str, np.ndarray], descriptions: list[str], path: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(np.arange(len(part["usage"])), part["usage"])
    ax.set(xlabel="filter", ylabel="fraction of neurons", title="filter usage")
    ax.set_xticks(np.arange(len(descriptions)))
    _save_figure(fig, path)


def _figure_forecast(results: dict[str, Any], path: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, m in results["forecast"].items():
        ax.plot(m["horizons"], m["r2"], marker="o" if name == "model" else ".",
                lw=2.5 if name == "model" else 1, label=name)
    lowest = min(min(m["r2"]) for m in results["forecast"].values())
    ax.set_ylim(bottom=max(lowest, -1.0) - 0.05)  # a diverging forecaster would flatten all the others
    ax.set(xlabel="forecast horizon (frames)", ylabel="R² (test; clipped at -1)", title="held-out forecasts")
    ax.legend(fontsize=8)
    _save_figure(fig, path)


def _figure_traces(config: ml_collections.ConfigDict, exp: Any, params: model.Params, path: str,
                   n_show: int = 6, n_frames: int = 200) -> None:
    spec = exp.spec
    x = np.nan_to_num(evaluate.normalised_traces(exp, "test"))[: n_frames + spec.history]
    stim = evaluate.stimulus(exp, "test")[: x.shape[0]]
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
    _save_figure(fig, path)


def write(workdir: str, config: ml_collections.ConfigDict, exp: Any, params: model.Params,
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

    rows = partition_rows(exp, part)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    _atomic_write(paths["partition.csv"], buf.getvalue())
    _atomic_write(paths["motif_map.json"], json.dumps(motif_map(exp, part, results), indent=1))
    used = part["usage"]
    _atomic_write(paths["filters.txt"], "".join(
        f"filter {b} (usage {used[b]:.3f}): {d}\n" for b, d in enumerate(descriptions)))
    _atomic_write(paths["metrics.json"], json.dumps(
        dict(results, filters=descriptions), indent=1, default=float))
    if exp.reports:
        paths["data_report.txt"] = os.path.join(workdir, "data_report.txt")
        _atomic_write(paths["data_report.txt"], "\n\n".join(str(r) for r in exp.reports.values()) + "\n")

    figures = {name: os.path.join(workdir, "figures", name) for name in
               ("domains_3d.png", "filter_usage.png", "forecast.png", "traces.png")}
    _figure_domains(exp, part, figures["domains_3d.png"])
    _figure_usage(part, descriptions, figures["filter_usage.png"])
    _figure_forecast(results, figures["forecast.png"])
    _figure_traces(config, exp, params, figures["traces.png"])
    return [*paths.values(), *figures.values()]


def write_timings(workdir: str, timings: dict[str, float]) -> str:
    """Write ``timings.json`` (phase -> seconds, in the order the phases ended); returns its path."""
    path = os.path.join(workdir, "timings.json")
    _atomic_write(path, json.dumps({k: round(float(v), 3) for k, v in timings.items()}, indent=1))
    return path
