"""The learners' notebook runs top to bottom (DIGITNET_QUICK=1: 2,000 images, one epoch) and draws real figures."""
import base64
import json
import sys
from pathlib import Path

import nbclient
import nbformat
import numpy as np
from PIL import Image

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "cnn-digits.ipynb"


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) > 10
    assert all(not c.outputs and c.execution_count is None for c in code)


def venv_kernel(folder: Path) -> str:
    """A kernelspec running this very interpreter, so the kernel sees the same digitnet install.

    The stock 'python3' spec runs whatever `python` is first on PATH, which from a clean clone need
    not be the .venv one.
    """
    spec = folder / "kernels" / "digitnet-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "digitnet test", "language": "python"}))
    return "digitnet-test"


def test_notebook_runs_and_every_figure_is_drawn(tmp_path, monkeypatch):
    monkeypatch.setenv("DIGITNET_QUICK", "1")
    monkeypatch.setenv("DIGITNET_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    kernel = venv_kernel(tmp_path / "jupyter")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=kernel, timeout=300,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, if any cell fails

    figures = tmp_path / "figures"
    figures.mkdir()
    pngs = []
    for i, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            assert output.output_type != "error", output
            if "image/png" in output.get("data", {}):
                payload = base64.b64decode(output.data["image/png"])
                path = figures / f"cell{i:02d}-{len(pngs):02d}.png"
                path.write_bytes(payload)
                pngs.append(path)
    # data grid, learning curves, confusion matrix, mistakes, filters, maps, dense, saliency, photo, explain
    assert len(pngs) >= 10, [p.name for p in pngs]
    for path in pngs:
        with Image.open(path) as im:
            assert im.width >= 200 and im.height >= 150, (path.name, im.size)
            grey = np.asarray(im.convert("L"), dtype=np.float32)
        # not one flat colour: a drawn figure has ink and paper
        assert grey.std() > 10 and (grey < 128).mean() > 0.005, (path.name, grey.std())

    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.output_type == "stream")
    assert "(60000, 28, 28)" in text
    assert "conv2d           3*3*1*32 + 32 = 320" in text and "Total params: 241,546" in text
    assert "test accuracy" in text and "answer" in text
