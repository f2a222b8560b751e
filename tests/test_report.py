"""The report: figures (their data: axes, legends, rows), report.html (self-contained, every neuron), and
the page as a browser renders it (headless Chromium, where installed)."""

import csv
import html.parser
import pathlib
import re
import shutil
import subprocess

import numpy as np
import pytest

from mesojax import config, evaluate, experiment, report, train

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("report")
    cfg = config.load_config_file(REPO / "configs" / "phantom_tiny.py", **{"train.steps": 4, "train.log_every": 1})
    exp, state = train.train(cfg, str(workdir))
    results, part = evaluate.evaluate(cfg, exp, state.params)
    report.write(str(workdir), cfg, exp, state.params, results, part)
    return cfg, exp, state.params, results, part, workdir


def test_forecast_figure_keeps_r2_on_a_readable_scale_and_marks_the_best_baseline(run):
    _, _, _, results, part, _ = run
    fig = report.figure_forecast(results, part)
    r2_ax, rel_ax = fig.axes
    bottom, top = r2_ax.get_ylim()
    assert top == 1.0 and -1.05 <= bottom < 1.0
    assert any(np.allclose(line.get_ydata(), 1.0) for line in rel_ax.get_lines())  # the best baseline
    labels = [t.get_text() for t in r2_ax.get_legend().get_texts()]
    assert labels[:2] == ["model", "model_hard"] and "model, per-neuron R² 25–75 %" in labels


def test_domain_legend_lists_exactly_the_filters_in_use(run):
    _, exp, _, _, part, _ = run
    used = np.unique(part["filter"][part["filter"] >= 0])
    fig = report.figure_domains(exp, part)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert [int(label.split()[1]) for label in labels] == used.tolist()
    assert f"({len(np.unique(part['location'] * exp.spec.n_filters + part['filter']))} domains)" in fig.axes[1].get_title()


def test_filter_figure_has_a_diagram_and_a_response_row_per_used_filter(run):
    cfg, exp, params, _, part, _ = run
    used = np.unique(part["filter"][part["filter"] >= 0])
    fig = report.figure_filters(cfg, exp, params, part)
    assert len(fig.axes) == 2 * len(used)
    for k, b in enumerate(used):
        assert fig.axes[2 * k].get_title(loc="left").startswith(f"filter {b} (")
        assert len(fig.axes[2 * k + 1].get_lines()) == exp.spec.n_ports  # one curve per output port


def test_traces_show_the_best_median_and_worst_neuron(run):
    cfg, exp, params, _, part, _ = run
    fig = report.figure_traces(cfg, exp, params, part)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert [t.split()[0] for t in titles] == ["best", "median", "worst"]
    r2 = part["per_neuron"]["model"]["r2"][0]
    assert f"R² h1 {np.nanmax(r2):.2f}" in titles[0] and f"R² h1 {np.nanmin(r2):.2f}" in titles[2]


def test_every_figure_is_written_including_behaviour_and_training_curves(run):
    *_, workdir = run
    for name in ("forecast", "domains_3d", "filter_usage", "filters", "traces", "behaviour", "training", "rsa"):
        assert (workdir / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
    assert set(report.load_arrays(str(workdir / "evaluation.npz"))) == {"per_neuron", "horizons", "behaviour"}


class _Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.links = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.links += [v for k, v in attrs if k in ("src", "href") and v]


def test_report_html_is_self_contained_and_names_every_neuron(run):
    *_, workdir = run
    page = (workdir / "report.html").read_text()
    tags = _Tags()
    tags.feed(page)
    tags.close()
    assert tags.tags.count("img") >= 7 and "table" in tags.tags
    assert all(link.startswith(("data:", "#")) for link in tags.links), [x[:60] for x in tags.links]
    assert "Plotly.newPlot" in page  # the interactive view, with plotly.js inlined
    text = unescape_json(page)
    note = text.split("not drawn:", 1)[1].split("</p>", 1)[0] if "not drawn:" in text else ""
    for row in csv.DictReader(open(workdir / "partition.csv")):
        hover = f"neuron {row['neuron_id']}<br>cell type {row['cell_type']}<br>location {row['location']}, " \
                f"filter {row['filter']}<br>confidence "
        assert hover in text or row["neuron_id"] in note.split(", "), row["neuron_id"]
    assert "<br>R² h1 " in text


def unescape_json(page: str) -> str:
    """The page with the \\uXXXX escapes of the embedded figure JSON decoded (plotly escapes <, > and non-ASCII)."""
    return re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), page)


def test_the_page_renders_in_a_browser_without_script_errors(run, tmp_path):
    """Headless Chromium (Debian's ``chromium``; .ci/run installs it where it can) loads the page: no script
    error, plotly drew the 3D view, and a screenshot of the top of the page (the 3D view) is taken."""
    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no headless Chromium here (apt-get install chromium): the page was not rendered")
    *_, workdir = run
    flags = [browser, "--headless", "--no-sandbox", "--enable-unsafe-swiftshader", "--use-angle=swiftshader",
             "--hide-scrollbars", "--virtual-time-budget=20000"]
    url = (workdir / "report.html").as_uri()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
    assert 'data-errors="0"' in dom, dom[:500]
    assert "plot-container" in dom and "gl-container" in dom  # plotly built the WebGL scene
    shot = tmp_path / "report_3d.png"
    subprocess.run([*flags, "--window-size=1200,1100", f"--screenshot={shot}", url], capture_output=True,
                   timeout=180)
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 20_000  # not a blank page


def test_representational_similarity_is_in_the_metrics_and_the_page(run):
    _, exp, _, results, part, workdir = run
    rsa = results["rsa"]
    # The tiny phantom: 2 stimulus channels crossed with 3 behavioural modes.
    assert len(rsa["conditions"]) == 9 and rsa["conditions"][0] == "no stimulus / still"
    whole = rsa["whole"]["predicted"]
    assert -1 <= whole["similarity"] <= 1 and 0 < whole["p_value"] <= 1
    used = np.unique(part["filter"][part["filter"] >= 0])
    assert sorted(int(b) for b in rsa["filters"]) == used.tolist()
    assert "Representational similarity" in (workdir / "report.html").read_text()
