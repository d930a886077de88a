"""The examples a user copies from: examples/quickstart.ipynb runs from top to bottom and predicts what it drew."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


@pytest.mark.slow
def test_the_quickstart_notebook_runs(tmp_path: Path):
    """Its code cells, in order, as one script in a fresh Python (as a kernel runs them, without a kernel)."""
    notebook = json.loads(NOTEBOOK.read_text())
    assert notebook["nbformat"] == 4
    cells = ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    script = tmp_path / "quickstart.py"
    script.write_text("\n\n".join(cells) + "\n")
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # its data and run land here
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                            env=env)
    assert result.returncode == 0, result.stderr
    printed = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    assert printed["file"].startswith("circle ") and printed["PIL image"].startswith("square {")
    assert printed["array"].startswith("circle ")
    assert "epoch  10/10" in result.stderr  # what training says, through logging
