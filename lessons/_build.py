"""Run the lesson notebooks top to bottom and save them with their outputs.

    python lessons/_build.py                          # every lessons/*.ipynb, normal mode
    python lessons/_build.py 06_generating.ipynb      # only some
    python lessons/_build.py --fast --no-save         # quick check, nothing written

Each notebook runs in a temporary folder (nothing is written into the repository) against this
checkout's ``tinyddpm``. Execution timestamps are dropped, so a re-run changes only what the code
prints and draws. The committed notebooks come from a normal (not ``--fast``) run.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

LESSONS = Path(__file__).resolve().parent
REPO = LESSONS.parent


def lesson_paths(names=()):
    if names:
        return [LESSONS / Path(n).name for n in names]
    return sorted(LESSONS.glob("[0-9][0-9]_*.ipynb"))


def execute(path, fast=False, timeout=600):
    """Execute the notebook at ``path``; returns (executed notebook, seconds)."""
    import nbformat
    from nbclient import NotebookClient

    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    os.environ["TINYDDPM_LESSON_FAST"] = "1" if fast else "0"
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": tmp}}).execute()
        seconds = time.perf_counter() - start
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    return nb, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="file names in lessons/ (default: all)")
    parser.add_argument("--fast", action="store_true", help="TINYDDPM_LESSON_FAST=1")
    parser.add_argument("--no-save", action="store_true", help="run only, write nothing")
    args = parser.parse_args(argv)
    import nbformat

    for path in lesson_paths(args.notebooks):
        nb, seconds = execute(path, fast=args.fast)
        if not args.no_save:
            nbformat.write(nb, path)
        size = path.stat().st_size / 1024
        print(f"{path.name:<36} {seconds:6.1f} s  {size:6.0f} KB", flush=True)


if __name__ == "__main__":
    sys.exit(main())
