"""The lesson notebooks (lessons/NN_*.ipynb): their shape, their committed outputs, and a run of
each one top to bottom in fast mode (TINYDDPM_LESSON_FAST=1: fewer steps, images and epochs)."""
import os
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

REPO = Path(__file__).resolve().parent.parent
LESSONS = sorted((REPO / "lessons").glob("[0-9][0-9]_*.ipynb"))
SLIDE_TITLES = {  # the titles of the course slides (Géron, ch. 17, "3. Diffusion Models")
    "Diffusion Models", "Forward Process", "Reverse Process", "Variance Schedule",
    "Cosine Variance Schedule", "Preparing Batch for Training",
    "Creating Training and Validation Sets", "Building the Model", "Training the Model",
    "Generating New Images", "Latent Diffusion Model"}


def ids(path):
    return path.name


def test_the_lessons_follow_the_slides_in_order():
    names = [p.name for p in LESSONS]
    assert names[:7] == [
        "01_forward_process.ipynb", "02_variance_schedule.ipynb", "03_autograd_engine.ipynb",
        "04_convolutions_and_unet.ipynb", "05_training.ipynb", "06_generating.ipynb",
        "07_measuring_quality.ipynb"]
    assert [int(name[:2]) for name in names] == list(range(1, len(names) + 1))  # no gaps


@pytest.mark.parametrize("path", LESSONS, ids=ids)
def test_lesson_opens_with_its_slide_and_ends_with_exercises(path):
    cells = nbformat.read(path, as_version=4).cells
    first, last = cells[0], cells[-1]
    assert first.cell_type == "markdown" and first.source.startswith("# Lesson")
    quoted = set(re.findall(r'\*\*"([^"]+)"\*\*', first.source))
    assert quoted & SLIDE_TITLES, f"{path.name}: the first cell quotes no slide title"
    assert "You will learn" in first.source
    assert last.cell_type == "markdown" and last.source.startswith("## Exercises")
    assert len(re.findall(r"^\d\. ", last.source, flags=re.M)) >= 2


@pytest.mark.parametrize("path", LESSONS, ids=ids)
def test_lesson_is_committed_with_its_outputs(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), \
        f"{path.name}: not run top to bottom in one go (python lessons/_build.py)"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name}: no figure"
    assert path.stat().st_size < 300_000, f"{path.name}: keep figures small"


def _repo_files():
    """Files under the repository, leaving out caches (numba writes its own next to the kernels)."""
    skip = {".git", "__pycache__", ".pytest_cache", ".hypothesis"}
    found = set()
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in skip and not d.endswith(".egg-info")]
        found.update(os.path.join(root, f) for f in files)
    return found


@pytest.mark.slow
@pytest.mark.parametrize("path", LESSONS, ids=ids)
def test_lesson_runs_top_to_bottom_in_fast_mode(path, tmp_path, monkeypatch):
    pytest.importorskip("ipykernel")
    from nbclient import NotebookClient

    monkeypatch.setenv("TINYDDPM_LESSON_FAST", "1")
    # the kernel imports this checkout's tinyddpm, whatever else is installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    nb = nbformat.read(path, as_version=4)
    before = _repo_files()
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # raises on error
    assert _repo_files() - before == set(), f"{path.name} wrote files into the repository"
