"""Run the lesson notebooks top to bottom and save them with their outputs.

    python lessons/_build.py                          # every lessons/*.ipynb, normal mode
    python lessons/_build.py 06_generating.ipynb      # only some
    python lessons/_build.py --fast --no-save         # quick check, nothing written
    python lessons/_build.py --solutions              # write lessons/solutions/*.ipynb only

Each notebook runs in a temporary folder (nothing is written into the repository) against this
checkout's ``tinyddpm``. Execution timestamps are dropped, so a re-run changes only what the code
prints and draws, and the figures are stored as palette PNGs (``small_png``: the same pixels to
the eye, a third of the bytes). The committed notebooks come from a normal (not ``--fast``) run on
a quiet machine. ``--solutions`` writes the solutions notebooks (see ``_exercises.py``).
"""
import argparse
import base64
import io
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


def small_png(data):
    """A base64 PNG re-encoded with a 256-colour palette (adaptive), if that is smaller."""
    from PIL import Image

    raw = base64.b64decode(data)
    image = Image.open(io.BytesIO(raw))
    quantized = image.convert("RGBA").quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    out = io.BytesIO()
    quantized.save(out, format="PNG", optimize=True)
    return base64.b64encode(out.getvalue()).decode("ascii") if out.tell() < len(raw) else data


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
    cell_seconds = []
    for i, cell in enumerate(nb.cells):
        timing = cell.metadata.pop("execution", None) or {}
        if "shell.execute_reply" in timing and "iopub.execute_input" in timing:
            cell_seconds.append((_seconds(timing["shell.execute_reply"])
                                 - _seconds(timing["iopub.execute_input"]), i))
        for output in cell.get("outputs", []):
            if "image/png" in output.get("data", {}):
                output["data"]["image/png"] = small_png(output["data"]["image/png"])
    nb.metadata["cell_seconds"] = sorted(cell_seconds, reverse=True)  # dropped before saving
    return nb, seconds


def _seconds(stamp):
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="file names in lessons/ (default: all)")
    parser.add_argument("--fast", action="store_true", help="TINYDDPM_LESSON_FAST=1")
    parser.add_argument("--no-save", action="store_true", help="run only, write nothing")
    parser.add_argument("--times", type=int, default=0, metavar="K",
                        help="also print the K slowest cells and their seconds")
    parser.add_argument("--solutions", action="store_true",
                        help="only write lessons/solutions/NN_name.ipynb from the lessons and "
                             "lessons/solutions/NN_name.py (nothing is run)")
    args = parser.parse_args(argv)
    import nbformat

    from _exercises import write_solution_notebooks

    if args.solutions:
        write_solution_notebooks(lesson_paths(args.notebooks))
        return 0

    for path in lesson_paths(args.notebooks):
        nb, seconds = execute(path, fast=args.fast)
        slowest = nb.metadata.pop("cell_seconds", [])[:args.times]
        if not args.no_save:
            nbformat.write(nb, path)
            write_solution_notebooks([path])
        size = path.stat().st_size / 1024
        print(f"{path.name:<36} {seconds:6.1f} s  {size:6.0f} KB", flush=True)
        for cell_time, index in slowest:
            print(f"    cell {index:3d}: {cell_time:6.1f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
