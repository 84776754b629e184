"""One source for each assignment: the solution file, with its answers marked, makes the student's
file and notebook (the nbgrader / ``otter assign`` convention), so they cannot drift apart.

In the source (a correct, runnable solution)::

    ### BEGIN SOLUTION
    return alpha, np.cumprod(alpha), beta       # the answer: left out of the student's file
    ### END SOLUTION
    ### STUB raise NotImplementedError("...")    # only in the student's file (without the marker)

    python -m tinyddpm.grade.assign SOURCE_DIR OUT_DIR    # NN_name.py -> OUT_DIR/NN_name.py, .ipynb

A GitHub Classroom workflow running the grader, one test a check, is written beside them
(``OUT_DIR/github-classroom/NN_name.yml``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

_BEGIN, _END = re.compile(r"^\s*### BEGIN SOLUTION\s*$"), re.compile(r"^\s*### END SOLUTION\s*$")
_STUB = re.compile(r"^(\s*)### STUB ?(.*)$")


def make_stub(source, name="source"):
    """The student's version of a marked source: solution blocks out, ``### STUB`` lines in.
    Raises ``ValueError`` naming the line of an unbalanced marker, or when there is no solution
    block (the student's file would hold the answer)."""
    if not any(_BEGIN.match(line) for line in source.splitlines()):
        raise ValueError(f"{name}: no ### BEGIN SOLUTION block: the student's file would hold "
                         "the whole answer; mark the answers first")
    out, inside, opened = [], False, 0
    for number, line in enumerate(source.splitlines(), 1):
        if _BEGIN.match(line):
            if inside:
                raise ValueError(f"{name}, line {number}: BEGIN SOLUTION inside another block")
            inside, opened = True, number
        elif _END.match(line):
            if not inside:
                raise ValueError(f"{name}, line {number}: END SOLUTION without BEGIN")
            inside = False
        elif not inside:
            stub = _STUB.match(line)
            out.append(stub.group(1) + stub.group(2) if stub else line)
    if inside:
        raise ValueError(f"{name}, line {opened}: BEGIN SOLUTION is never closed")
    return "\n".join(out) + "\n"


def _cell(kind, text, index):
    cell = {"cell_type": kind, "id": f"cell-{index}", "metadata": {},
            "source": text.splitlines(keepends=True)}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def make_notebook(stub, number, file_name):
    """The notebook version of a student's file: its docstring as text, its code, and a cell
    that grades the notebook."""
    import ast

    tree = ast.parse(stub)
    doc = ast.get_docstring(tree, clean=False) or ""
    body = stub
    if doc:
        first = tree.body[0]
        lines = stub.splitlines(keepends=True)
        body = "".join(lines[first.end_lineno:]).lstrip("\n")
    title, _, rest = doc.strip().partition("\n")
    notebook_name = file_name[:-3] + ".ipynb"
    code, _, demo = body.partition('\nif __name__ == "__main__":\n')
    text = rest.strip().replace(f"tinyddpm.grade {number} {file_name}",
                                f"tinyddpm.grade {number} {notebook_name}")
    text = text.replace(f"(`python {file_name}`)", "(the *Try it* cell below)")
    cells = [_cell("markdown", f"# {title}\n\n" + text, 0),
             _cell("code", code.rstrip() + "\n", 1)]
    if demo.strip():     # the file's own demo: Jupyter runs it, the grader (a module) does not
        cells += [_cell("markdown", "## Try it\n\nRuns your functions on a few values (it "
                                    "fails until they are filled in). The grader skips it, as "
                                    "it skips this block in the `.py` file.", 2),
                  _cell("code", 'if __name__ == "__main__":\n' + demo.rstrip() + "\n", 3)]
    cells += [_cell("markdown", "## Check your work\n\nRun the grader on this notebook (save "
                                "it first): it grades the code cells above.", len(cells)),
              _cell("code", f"!python -I -m tinyddpm.grade {number} {notebook_name}\n",
                    len(cells) + 1)]
    return {"cells": cells, "metadata": {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}


def classroom_workflow(assignment, file_name):
    """A GitHub Classroom autograding workflow: one grader step a check, worth its points."""
    steps = []
    for c in assignment.checks:
        steps.append(
            f"      - name: {c.id}\n"
            f"        id: {c.id.replace('_', '-')}\n"
            f"        uses: classroom-resources/autograding-command-grader@v1\n"
            f"        with:\n"
            f"          test-name: {c.id}\n"
            f"          setup-command: pip install tinyddpm\n"
            f"          command: python -I -m tinyddpm.grade {assignment.number} {file_name} "
            f"--check {c.id}\n"
            f"          timeout: 5\n"
            f"          max-score: {c.points:g}\n")
    ids = [c.id.replace("_", "-") for c in assignment.checks]
    env = "\n".join(f"          {i.upper()}_RESULTS: \"${{{{steps.{i}.outputs.result}}}}\""
                    for i in ids)
    runners = ",".join(ids)
    return (f"# GitHub Classroom autograding for assignment {assignment.number} "
            f"({assignment.title}).\n"
            f"# Made by python -m tinyddpm.grade.assign; copy it to the template repository as\n"
            f"# .github/workflows/classroom.yml, beside the student's file {file_name}.\n"
            "name: Autograding Tests\n"
            "on: [push, repository_dispatch]\n"
            "permissions:\n  checks: write\n  actions: read\n  contents: read\n"
            "jobs:\n  run-autograding-tests:\n    runs-on: ubuntu-latest\n"
            "    if: github.actor != 'github-classroom[bot]'\n"
            "    steps:\n      - name: Checkout code\n        uses: actions/checkout@v4\n"
            "      - uses: actions/setup-python@v5\n        with:\n"
            "          python-version: '3.11'\n"
            + "".join(steps)
            + "      - name: Autograding Reporter\n"
              "        uses: classroom-resources/autograding-grader-reporter@v1\n"
              "        env:\n" + env + "\n"
              "        with:\n"
              f"          runners: {runners}\n")


def build(source_dir, out_dir):
    """Write the student's file, notebook and Classroom workflow of every ``NN_name.py`` in
    ``source_dir``; returns the paths written."""
    from .._files import atomic_write
    from .framework import find_assignment

    if os.path.realpath(source_dir) == os.path.realpath(out_dir):
        raise ValueError(f"the output folder {out_dir} is the source folder: the students' "
                         "files would replace the solutions")
    names = [n for n in sorted(os.listdir(source_dir)) if re.fullmatch(r"\d\d_\w+\.py", n)]
    if not names:
        raise ValueError(f"no solution files (NN_name.py) in {source_dir}")
    written = []
    for name in names:
        with open(os.path.join(source_dir, name), encoding="utf-8") as f:
            source = f.read()
        stub = make_stub(source, name)
        number = int(name[:2])
        outputs = {name: stub,
                   name[:-3] + ".ipynb": json.dumps(make_notebook(stub, number, name),
                                                    indent=1, ensure_ascii=False) + "\n"}
        try:
            assignment = find_assignment(name)
        except KeyError:
            assignment = None
        if assignment is not None:
            outputs[os.path.join("github-classroom", name[:-3] + ".yml")] = \
                classroom_workflow(assignment, name)
        for rel, text in outputs.items():
            path = os.path.join(out_dir, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_write(path, lambda f, text=text: f.write(text), binary=False)
            written.append(path)
    return written


def main(argv=None):
    from .._cli import HelpFormatter
    from . import assignments  # noqa: F401  (registers them)

    p = argparse.ArgumentParser(
        prog="python -m tinyddpm.grade.assign", formatter_class=HelpFormatter,
        description="Make the students' files (.py and .ipynb) and GitHub Classroom workflows "
                    "from solution files whose answers are marked with ### BEGIN SOLUTION / "
                    "### END SOLUTION (and ### STUB lines for the student's version).",
        epilog="example:\n  python -m tinyddpm.grade.assign tests/assignments/solutions "
               "lessons/assignments")
    p.add_argument("source_dir", help="folder of marked solutions, NN_name.py")
    p.add_argument("out_dir", help="where the students' files go")
    args = p.parse_args(argv)
    if not os.path.isdir(args.source_dir):
        p.error(f"no such folder: {args.source_dir}")
    try:
        written = build(args.source_dir, args.out_dir)
    except ValueError as exc:
        p.error(str(exc))
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
