"""The analysis notebook is committed with its figures from a real CIFAR-10 run, and still runs top to bottom on the
CPU (training its own short digits run), writing its figures."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "feature_distributions.ipynb"
FIGURES = ["weight_fits.png", "feature_distributions.png", "feature_distances.png", "training_curves.png"]


def test_the_committed_notebook_shows_its_figures_from_a_cifar10_run() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code), "executed top to bottom"
    images = [o for cell in code for o in cell.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= len(FIGURES)
    printed = "".join(o.get("text", "") for cell in code for o in cell.outputs if o.get("output_type") == "stream")
    assert "CIFAR10" in printed and "cli.py fit" in printed, "the run and its command are shown"


@pytest.mark.slow
def test_notebook_executes_and_writes_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PKKD_FIGURES_DIR", str(tmp_path / "figures"))
    monkeypatch.delenv("PKKD_CHECKPOINT", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's training run goes into a temporary folder
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # The kernel inherits this process's environment; "python3" resolves to the interpreter running the tests.
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()
    for name in FIGURES:
        figure = tmp_path / "figures" / name
        assert figure.is_file() and figure.stat().st_size > 10_000, name
