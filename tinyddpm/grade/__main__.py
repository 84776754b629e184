import os
import sys

# `python -m` put the current folder first on the import path: a student's `numpy.py` or
# `secrets.py` there would be imported by the grader. Take it off, and refuse to go on if
# something was already imported from it (run the grader from another folder, or `python -I`).
_here = os.path.realpath(os.getcwd())
sys.path[:] = [p for p in sys.path if p and os.path.realpath(p) != _here]
_shadowing = sorted(name for name, module in list(sys.modules.items())
                    if "." not in name and name != "tinyddpm"
                    and os.path.dirname(os.path.realpath(getattr(module, "__file__", None) or
                                                         "/")) == _here)
if _shadowing:
    print(f"error: the current folder's {', '.join(_shadowing)} was imported in place of the "
          "module of that name: run the grader from another folder, or as "
          "python -I -m tinyddpm.grade", file=sys.stderr)
    sys.exit(2)

from .cli import main  # noqa: E402

sys.exit(main())
