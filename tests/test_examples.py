"""The notebooks in examples/ run top to bottom (with small settings, on synthetic digits)."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SMALL = {"EPOCHS": 1, "N_IMAGES": 8, "STEPS": 64, "SWEEPS": 2, "PGD_STEPS": 3, "GAN_EPOCHS": 1,
         "GAN_LIMIT": 320}
PER_NOTEBOOK = {"05-how-sure-is-it": {"N_IMAGES": 40}}  # a temperature needs 5 to fit on, 5 to check


def _shrunk(nb: object, name: str = "") -> object:
    """The notebook with its parameters cell's values replaced by SMALL ones."""
    small = {**SMALL, **PER_NOTEBOOK.get(name, {})}
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    lines = []
    for line in cell.source.splitlines():
        name = line.split("=")[0].strip()
        lines.append(f"{name} = {small[name]!r}" if name in small else line)
    cell.source = "\n".join(lines)
    return nb


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebook_runs(path: Path, blob_data: Path, tmp_path: Path) -> None:
    nb = _shrunk(nbformat.read(path, as_version=4), path.stem)
    client = nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the notebook shows no picture"


def test_there_is_a_notebook_per_question_of_the_report() -> None:
    assert len(list(EXAMPLES.glob("*.ipynb"))) == 7
