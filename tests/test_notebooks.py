"""Notebooks are executed, so they cannot rot; their plots must show (a figure output per
plotting cell), both in the committed notebook and in a fresh run."""
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def plotting_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code" and "plt.show()" in c.source]


def has_figure(cell) -> bool:
    return any("image/png" in o.get("data", {}) for o in cell.get("outputs", []))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_notebook_keeps_its_figures(path):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    cells = plotting_cells(nb)
    assert cells, "a notebook here shows at least one plot"
    assert all(has_figure(c) for c in cells), "save the notebook with its outputs (run it, then save)"
    assert not any("matplotlib.use(" in c.source for c in nb.cells if c.cell_type == "code")  # a non-GUI backend hides every plot


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes_and_plots(path, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []  # judge this run, not the committed outputs
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    missing = [c.source.splitlines()[0] for c in plotting_cells(nb) if not has_figure(c)]
    assert not missing, f"plotting cells without a figure: {missing}"
    warnings = [o["text"] for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                if o.get("name") == "stderr" and "warning" in o.get("text", "").lower()]
    assert not warnings, f"warnings a reader cannot act on: {warnings}"
