"""Interactive figures for the HTML report: the one module that talks to plotly.

Plotly renders in the browser from JSON and its own bundled JavaScript, which :func:`to_html` inlines,
so a page built from these pieces opens offline with no server and no network.

Example::

    fig = interactive.domains_3d(xyz, filt, domain, hover, n_filters=6)
    html = interactive.to_html(fig, include_js=True)   # a <div> with plotly.js inlined once
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

# Colours of the filters (the matplotlib figures' tab10 / tab20, so both views agree).
_TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf")
_TAB20 = ("#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896", "#9467bd",
          "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d",
          "#17becf", "#9edae5")


def filter_colours(n_filters: int) -> tuple[str, ...]:
    """One colour per filter: tab10 up to 10 filters, tab20 beyond (cycled past 20)."""
    return _TAB10 if n_filters <= 10 else _TAB20


def domains_3d(xyz: np.ndarray, filt: np.ndarray, domain: np.ndarray, hover: Sequence[str], *,
               n_filters: int, title: str = "functional domains") -> go.Figure:
    """Neurons in 3D, coloured by filter (one legend entry per filter in use) or by domain (a menu).

    Args:
      xyz: ``[n, 3]`` µm positions of the drawn neurons.
      filt: ``[n]`` filter of each neuron.
      domain: ``[n]`` domain (location, filter pair) index of each neuron.
      hover: ``n`` hover texts (HTML allowed: ``<br>`` breaks lines).
      n_filters: B (fixes each filter's colour).
      title: the figure title.

    Returns:
      A plotly figure: one ``Scatter3d`` trace per used filter, then one coloured by domain (hidden until
      "colour by domain" is chosen).
    """
    colours = filter_colours(n_filters)
    hover = np.asarray(hover, dtype=object)
    traces = []
    for b in np.unique(filt):
        sel = filt == b
        traces.append(go.Scatter3d(
            x=xyz[sel, 0], y=xyz[sel, 1], z=xyz[sel, 2], mode="markers", name=f"filter {int(b)} ({int(sel.sum())})",
            marker=dict(size=3, color=colours[int(b) % len(colours)]), text=hover[sel].tolist(),
            hovertemplate="%{text}<extra></extra>"))
    # Domains: neighbouring domains get distinct colours by cycling a 20-colour palette over their ranks.
    _, rank = np.unique(domain, return_inverse=True)
    traces.append(go.Scatter3d(
        x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], mode="markers", name="domains", visible=False, showlegend=False,
        marker=dict(size=3, color=[_TAB20[k % len(_TAB20)] for k in rank]), text=hover.tolist(),
        hovertemplate="%{text}<extra></extra>"))
    n = len(traces)
    menu = dict(type="buttons", direction="right", x=1.0, y=1.12, xanchor="right", yanchor="top", buttons=[
        dict(label="colour by filter", method="update", args=[{"visible": [True] * (n - 1) + [False]}]),
        dict(label="colour by domain", method="update", args=[{"visible": [False] * (n - 1) + [True]}]),
    ])
    fig = go.Figure(traces)
    fig.update_layout(
        title=dict(text=title, x=0.01, xanchor="left"), height=620, margin=dict(l=0, r=0, t=80, b=0), updatemenus=[menu], legend=dict(itemsizing="constant"),
        scene=dict(xaxis_title="x µm", yaxis_title="y µm", zaxis_title="z µm", aspectmode="data"))
    return fig


def to_html(fig: go.Figure, *, include_js: bool, div_id: str | None = None) -> str:
    """A ``<div>`` rendering `fig`; with `include_js` plotly.js itself is inlined (do it once per page)."""
    return pio.to_html(fig, include_plotlyjs=bool(include_js), full_html=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})
