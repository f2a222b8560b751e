"""Every notebook in colabs/ runs top to bottom (its code cells executed in order, in one namespace)."""

import json
import pathlib

import matplotlib
import pytest

matplotlib.use("Agg")
COLABS = sorted((pathlib.Path(__file__).resolve().parents[1] / "colabs").glob("*.ipynb"))


@pytest.mark.parametrize("path", COLABS, ids=[p.stem for p in COLABS])
def test_notebook_runs(path, monkeypatch, tmp_path):
    monkeypatch.setenv("MESOJAX_COLAB_STEPS", "4")
    monkeypatch.chdir(tmp_path)
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    assert cells, f"{path.name} has no code cells"
    namespace: dict = {"__name__": "__main__"}
    for k, cell in enumerate(cells):
        source = "".join(cell["source"])
        assert not source.lstrip().startswith(("!", "%")), f"{path.name} cell {k}: shell/magic lines cannot run in CI"
        exec(compile(source, f"{path.name}[cell {k}]", "exec"), namespace)
