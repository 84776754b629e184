"""The lesson notebooks (lessons/NN_*.ipynb): their shape, their committed outputs, and a run of
each one top to bottom in fast mode (TINYDDPM_LESSON_FAST=1: fewer steps, images and epochs)."""
import base64
import os
import re
import struct
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "lessons"))
from _exercises import (SOLUTIONS, exercise_cells, read_solutions, solution_notebook,  # noqa: E402
                        solutions_path, tags)
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
def test_lesson_opens_with_its_slide(path):
    first = nbformat.read(path, as_version=4).cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# Lesson")
    assert quoted_titles(first) & SLIDE_TITLES, f"{path.name}: the first cell quotes no slide title"
    assert "You will learn" in first.source


def quoted_titles(cell):
    return {" ".join(t.split()) for t in re.findall(r'\*\*"([^"]+)"\*\*', cell.source)}


def canonical(text):
    """LaTeX and code compared loosely: no spaces, braces, \\mathbf-like wrappers or sizing."""
    for wrapper in (r"\mathbf", r"\boldsymbol", r"\mathcal", r"\left", r"\right", r"\,", r"\;",
                    r"\!", "$", "{", "}", "`", "> "):
        text = text.replace(wrapper, "")
    text = text.replace(r"\cdots", r"\dots")
    return "".join(text.split())


#: What each slide shows, as the slides write it (compared with ``canonical``): every slide's
#: equations and code appear in a lesson that quotes the slide's title in its first cell.
SLIDE_CONTENT = {
    "Diffusion Models": [
        "In 2021 OpenAI researchers improved the DDPM architecture"],
    "Forward Process": [
        r"q(\mathbf{x}_t | \mathbf{x}_{t-1}) = N(\sqrt{1 - \beta_t} \mathbf{x}_{t-1}, \beta_t \mathbf{I})",
        r"\mathbf{x}_t = \sqrt{1 - \beta_t} \mathbf{x}_{t-1} + \sqrt{\beta_t} \epsilon_t"],
    "Reverse Process": [
        "Train a model that can perform the *reverse process*",
        # the training objective behind it (Ho et al. 2020, eq. 14)
        r"\| \epsilon - \epsilon_\theta(\sqrt{\bar\alpha_t} \mathbf{x}_0 + \sqrt{1 - \bar\alpha_t} \epsilon, t) \|"],
    "Variance Schedule": [
        r"\bar{\alpha}_t = \alpha_1 \times \alpha_2 \times \dots \times \alpha_t = \prod_{i=1}^t \alpha_i",
        r"q(\mathbf{x}_t | \mathbf{x}_0) = N(\sqrt{\bar{\alpha}_t} \mathbf{x}_0, (1 - \bar{\alpha}_t)\mathbf{I})",
        r"\beta_t = 1 - \frac{\bar{\alpha}_t}{\bar{\alpha}_{t-1}}",
        r"\bar{\alpha}_t = \frac{f(t)}{f(0)}",
        r"f(t) = \cos\left(\frac{t/T+s}{1+s} \cdot \frac{\pi}{2}\right)^2",
        "def variance_schedule(T, s=0.008, max_beta=0.999):"],
    "Cosine Variance Schedule": ["td.linear_schedule(", "td.variance_schedule("],
    "Preparing Batch for Training": [
        "def prepare_batch(X):",
        "t = tf.random.uniform([X_shape[0]], minval=1, maxval=T + 1, dtype=tf.int32)",
        '"X_noisy": alpha_cm ** 0.5 * X + (1 - alpha_cm) ** 0.5 * noise'],
    "Creating Training and Validation Sets": [
        "def prepare_dataset(X, batch_size=32, shuffle=False):",
        "return ds.batch(batch_size).map(prepare_batch).prefetch(1)"],
    "Building the Model": ["def build_diffusion_model():"],
    "Training the Model": [
        'model.compile(loss=tf.keras.losses.Huber(), optimizer="nadam")',
        "save_best_only=True",
        # what the two names stand for: the Huber loss and Nadam's update (Dozat 2016)
        r"L_\delta(e) =", r"\hat m_t", r"\hat v_t"],
    "Generating New Images": [
        r"\mathbf{x}_{t-1} = \frac{1}{\sqrt{\alpha_t}} \left(\mathbf{x}_t - \frac{\beta_t}{\sqrt{1 - \bar{\alpha}_t}} \boldsymbol{\epsilon}_{\boldsymbol{\theta}}(\mathbf{x}_t, t) \right) + \sqrt{\beta_t} \mathbf{z}",
        "for t in range(T - 1, 0, -1):",
        "noise = (tf.random.normal if t > 1 else tf.zeros)(tf.shape(X))",
        # where the step comes from: the posterior mean of q(x_{t-1} | x_t, x_0) (Ho et al., eq. 7)
        r"\tilde\mu_t"],
    "Latent Diffusion Model": ["A powerful autoencoder is used to compress each training image"],
}


def lesson_text(path):
    return canonical("\n".join(c.source for c in nbformat.read(path, as_version=4).cells))


@pytest.mark.parametrize("title", sorted(SLIDE_TITLES))
def test_each_slide_is_shown_with_its_equations_and_code(title):
    assert set(SLIDE_CONTENT) == SLIDE_TITLES
    homes = [p for p in LESSONS
             if title in quoted_titles(nbformat.read(p, as_version=4).cells[0])]
    assert homes, f"no lesson quotes the slide **\"{title}\"** in its first cell"
    texts = {p.name: lesson_text(p) for p in homes}
    for snippet in SLIDE_CONTENT[title]:
        assert any(canonical(snippet) in text for text in texts.values()), (
            f"slide \"{title}\": none of {sorted(texts)} shows {snippet!r}")


#: a ``...`` left to fill in (``x = ...``, ``return ...``, a body of ``...``), not ``a[..., None]``
PLACEHOLDER = re.compile(r"(=|return|:|^)[ \t]*\.\.\.[ \t]*(#.*)?$", flags=re.M)


@pytest.mark.parametrize("path", LESSONS, ids=ids)
def test_lesson_ends_with_exercises_each_with_an_answer_and_a_check(path):
    nb = nbformat.read(path, as_version=4)
    headings = [i for i, c in enumerate(nb.cells)
                if c.cell_type == "markdown" and c.source.startswith("## Exercises")]
    assert len(headings) == 1, f"{path.name}: one '## Exercises' section"
    exercises = exercise_cells(nb)
    assert [n for n, _, _ in exercises] == list(range(1, len(exercises) + 1))
    assert len(exercises) >= 2, f"{path.name}: at least two exercises"
    placed = [i for i, c in enumerate(nb.cells)         # an exercise may also sit in the lesson
              if c.cell_type == "markdown" and re.match(r"### Exercise \d+\b", c.source)]
    assert placed[0] > 0 and sum(i > headings[0] for i in placed) >= 2, \
        f"{path.name}: at least two exercises in the '## Exercises' section at the end"
    solutions = read_solutions(solutions_path(path))
    assert sorted(solutions) == [n for n, _, _ in exercises], \
        f"{solutions_path(path).name}: one '# %% Exercise K' block per exercise"
    for n, answer, check in exercises:
        assert answer.cell_type == "code" and "answer" in tags(answer), f"exercise {n}: answer cell"
        assert "..." in answer.source, f"exercise {n}: the answer cell has ... to fill in"
        assert check.cell_type == "code" and "check" in tags(check), f"exercise {n}: check cell"
        assert f"Exercise {n}: not answered yet" in check.source
        assert f"Exercise {n}: correct" in check.source
        assert "assert " in check.source, f"exercise {n}: the check asserts something"
        printed = "".join(o.get("text", "") for o in check.outputs)
        assert f"Exercise {n}: not answered yet" in printed, \
            f"{path.name}: exercise {n}'s check, as committed, does not say 'not answered yet'"
        assert solutions[n].strip() and not PLACEHOLDER.search(solutions[n]), \
            f"exercise {n}: the solution leaves a ... placeholder in place"
    assert nb.cells[-1] is exercises[-1][2], f"{path.name}: the last cell is the last check"
    committed = nbformat.read(SOLUTIONS / path.name, as_version=4)
    assert [c.source for c in committed.cells] == \
        [c.source for c in solution_notebook(path).cells], \
        f"solutions/{path.name} is out of date: python lessons/_build.py --solutions"


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


def pngs(nb):
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if "image/png" in output.get("data", {}):
                yield base64.b64decode(output["data"]["image/png"])


@pytest.mark.parametrize("path", LESSONS, ids=ids)
def test_lesson_figures_are_readable_at_native_size_and_light(path):
    nb = nbformat.read(path, as_version=4)
    setup = nb.cells[1].source
    dpi = re.search(r'"figure\.dpi":\s*(\d+)', setup)
    font = re.search(r'"font\.size":\s*(\d+)', setup)
    assert dpi and int(dpi.group(1)) >= 96, f"{path.name}: figure.dpi >= 96 in the first code cell"
    assert font and int(font.group(1)) * int(dpi.group(1)) / 72 >= 12, \
        f"{path.name}: text at least 12 pixels high"
    for k, raw in enumerate(pngs(nb)):
        width, height = struct.unpack(">II", raw[16:24])
        assert width >= 300, f"{path.name}: figure {k} is {width} px wide: too small to read"
        assert len(raw) < 100_000, \
            f"{path.name}: figure {k} is {len(raw):,} bytes (palette PNGs: python lessons/_build.py)"


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
def test_lesson_with_its_solutions_runs_top_to_bottom_in_fast_mode(path, tmp_path, monkeypatch):
    pytest.importorskip("ipykernel")
    from nbclient import NotebookClient

    monkeypatch.setenv("TINYDDPM_LESSON_FAST", "1")
    # the kernel imports this checkout's tinyddpm, whatever else is installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    nb = solution_notebook(path)      # the lesson, its exercises answered with the solutions
    before = _repo_files()
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # raises on error
    assert _repo_files() - before == set(), f"{path.name} wrote files into the repository"
    for n, _, check in exercise_cells(nb):
        printed = "".join(o.get("text", "") for o in check.outputs)
        assert f"Exercise {n}: correct" in printed, f"{path.name}: exercise {n}: {printed!r}"
