"""Exercises in the lessons: answer cells, check cells and their solutions, in one format.

A lesson ends with a ``## Exercises`` section (at least two exercises); an exercise may also
sit inside the lesson, where the student writes a piece that the lesson goes on with (lesson
12: the engine). Exercises are numbered 1, 2, ... in the order of the notebook. Each exercise
is three cells:

1. a Markdown cell ``### Exercise K: title`` with the task;
2. a code cell tagged ``answer`` where the student replaces the ``...`` (Ellipsis) placeholders;
3. a code cell tagged ``check`` that prints ``Exercise K: not answered yet`` while the answer is
   still ``...``, and otherwise asserts with a helpful message and prints ``Exercise K: correct``.

The solutions live in ``lessons/solutions/NN_name.py``, one ``# %% Exercise K`` block per answer
cell (the "percent" cell format that VS Code, Spyder and Jupytext open as cells).
``solution_notebook`` puts them into a copy of the lesson (``lessons/solutions/NN_name.ipynb``,
written by ``python lessons/_build.py --solutions``); the tests run that copy and require every
check to print ``correct``.
"""
import re
from pathlib import Path

LESSONS = Path(__file__).resolve().parent
SOLUTIONS = LESSONS / "solutions"
BLOCK = re.compile(r"^# %% Exercise (\d+)[^\n]*\n", flags=re.M)


def tags(cell):
    return cell.get("metadata", {}).get("tags", [])


def exercise_cells(nb):
    """[(number, answer cell, check cell)] in order, read from the ``### Exercise K`` headings."""
    found = []
    cells = nb.cells
    for i, cell in enumerate(cells):
        match = re.match(r"### Exercise (\d+)\b", cell.source) if cell.cell_type == "markdown" else None
        if match:
            answer = cells[i + 1] if i + 1 < len(cells) else None
            check = cells[i + 2] if i + 2 < len(cells) else None
            found.append((int(match.group(1)), answer, check))
    return found


def solutions_path(lesson):
    return SOLUTIONS / (Path(lesson).stem + ".py")


def read_solutions(path):
    """{number: source} from a solutions file's ``# %% Exercise K`` blocks."""
    text = Path(path).read_text(encoding="utf-8")
    starts = list(BLOCK.finditer(text))
    blocks = {}
    for k, match in enumerate(starts):
        end = starts[k + 1].start() if k + 1 < len(starts) else len(text)
        blocks[int(match.group(1))] = text[match.end():end].strip("\n")
    return blocks


def solution_notebook(lesson):
    """The lesson with each answer cell replaced by its solution, outputs cleared."""
    import nbformat

    lesson = Path(lesson)
    nb = nbformat.read(lesson, as_version=4)
    blocks = read_solutions(solutions_path(lesson))
    for number, answer, _ in exercise_cells(nb):
        answer.source = blocks[number]
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    first = nb.cells[0]
    title, _, rest = first.source.partition("\n")
    first.source = (f"{title} (solutions)\n\nThe lesson `../{lesson.name}` with the exercises "
                    f"answered (from `{lesson.stem}.py`); run it top to bottom: every check "
                    f"prints `correct`.\n{rest}")
    return nb


def write_solution_notebooks(lessons):
    import nbformat

    SOLUTIONS.mkdir(exist_ok=True)
    for lesson in lessons:
        if solutions_path(lesson).exists():
            nbformat.write(solution_notebook(lesson), SOLUTIONS / Path(lesson).name)
