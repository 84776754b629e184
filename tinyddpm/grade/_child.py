"""The student's side of the grader: a script run by :mod:`tinyddpm.grade.runner` as

    python -I -S _child.py WORKDIR

in a sandbox (its own process group or PID namespace, resource limits, a temporary WORKDIR holding
only the student's file, no site-packages: NumPy alone is importable, through WORKDIR/lib). It
imports the student's file, makes the calls listed in WORKDIR/request.json (one group per check,
each group under a time limit) and writes what they returned to WORKDIR/out: a JSON file per
check, arrays as .npy files beside it. It decides nothing: the grader reads those files (with
``allow_pickle=False``, validated) and compares them with references it computes itself.

This file must not import tinyddpm (the child cannot), only the standard library and NumPy.
"""
import json
import os
import signal
import sys
import traceback

WORK = os.path.abspath(sys.argv[1])
HERE = os.path.dirname(os.path.abspath(__file__))


def _load_confine():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_confine", os.path.join(HERE, "_confine.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


confine = _load_confine()
sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) != HERE]  # no grader modules
sys.path.append(os.path.join(WORK, "lib"))                                  # numpy only
sys.dont_write_bytecode = True

with open(os.path.join(WORK, "request.json"), encoding="utf-8") as f:
    REQUEST = json.load(f)
confine.set_limits(REQUEST.get("limits") or {})
import numpy as np  # noqa: E402  (after the path is set)

#: modules imported before switching to another user (where Python lives in a folder others
#: cannot read, such as /root, a module first imported after the switch cannot be read)
PRELOAD = ("math cmath random functools itertools collections collections.abc typing dataclasses "
           "operator statistics fractions decimal copy time warnings contextlib enum abc numbers "
           "string re json textwrap heapq bisect array struct traceback linecache tokenize "
           "logging timeit importlib.util numpy.linalg numpy.random numpy.fft "
           "numpy.lib.stride_tricks numpy.polynomial encodings.latin_1 encodings.ascii").split()


def confined():
    """Confine this process; returns how ("landlockN", "own user" or "none")."""
    abi = confine.landlock_abi() if REQUEST.get("landlock") else 0
    root = os.geteuid() == 0
    if abi:
        numpy_dir = os.path.realpath(os.path.dirname(np.__file__))
        read = confine.readable_python(sys.path[:-1]) + [
            numpy_dir, numpy_dir + ".libs", WORK, "/dev/urandom",
            "/usr/share/zoneinfo", "/etc/localtime"]
        if root:
            confine.drop_root_powers()
        confine.landlock(read, [os.path.join(WORK, "out"), "/dev/null"], abi)
        return f"landlock{abi}"
    if root and REQUEST.get("drop"):
        confine.become_user(*REQUEST["drop"], PRELOAD)
        return "own user"
    return "none"


SANDBOX = confined()

OUT = os.path.join(WORK, "out")
SOURCE = os.path.join(WORK, REQUEST["source"])
MAX_ITEMS, MAX_DEPTH, MAX_TEXT = 10_000, 6, 300


class TimeLimit(BaseException):
    """Raised by the alarm inside student code (a BaseException: ``except Exception`` in student
    code does not swallow it)."""


def on_alarm(signum, frame):
    raise TimeLimit()


signal.signal(signal.SIGALRM, on_alarm)


class Sink:
    def write(self, s):
        return len(s)

    def flush(self):
        pass


def quiet():
    """Drop everything the student's code prints, from Python and from C."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    sys.stdout = sys.stderr = Sink()


# --------------------------------------------------------------------------- fixtures

class RecordingRng:
    def __init__(self, seed):
        self._rng = np.random.default_rng(seed)
        self.draws = []

    def standard_normal(self, size=None, dtype=np.float64, out=None):
        z = self._rng.standard_normal(size, dtype=dtype)
        self.draws.append(np.array(z, dtype=np.float64))
        if out is not None:
            out[...] = z
            return out
        return z

    def normal(self, loc=0.0, scale=1.0, size=None):
        z = self._rng.standard_normal(size)
        self.draws.append(np.array(z))
        return loc + scale * z

    def __getattr__(self, name):
        raise AttributeError(f"in this exercise, draw z with rng.standard_normal(x.shape) "
                             f"(the grader's rng has no .{name})")


class FakeModel:
    def __init__(self, T):
        self.T, self.calls = T, []

    def __call__(self, x, t):
        x = np.asarray(x)
        t_arr = np.asarray(t)
        if t_arr.ndim == 0:
            t_value = t_arr.item()
        else:
            if t_arr.shape != (len(x),) or not np.all(t_arr == t_arr.reshape(-1)[0]):
                raise ValueError(f"predict_noise was called with time of shape {t_arr.shape}: "
                                 "pass the step t as an int, or np.full(len(x), t)")
            t_value = t_arr.reshape(-1)[0].item()
        self.calls.append(t_value)
        return (0.5 * np.tanh(x) + 0.01 * t_value / self.T).astype(np.float32)


# --------------------------------------------------------------------------- values in and out

def decode(node, fixtures):
    t = node["t"]
    if t == "array":
        return np.load(os.path.join(WORK, node["f"]), allow_pickle=False)
    if t in ("int", "float", "bool", "str"):
        return node["v"]
    if t == "none":
        return None
    if t in ("tuple", "list"):
        items = [decode(n, fixtures) for n in node["items"]]
        return tuple(items) if t == "tuple" else items
    if t == "dict":
        return {k: decode(n, fixtures) for k, n in node["items"]}
    if t == "rng":
        return np.random.default_rng(node["seed"])
    if t == "recording_rng":
        fixtures.append(("draws", RecordingRng(node["seed"])))
        return fixtures[-1][1]
    if t == "fake_model":
        fixtures.append(("calls", FakeModel(node["T"])))
        return fixtures[-1][1]
    raise ValueError(f"unknown node {t!r}")


class Encoder:
    """Turns a returned value into a JSON tree; arrays go to .npy files in ``folder``."""

    def __init__(self, folder):
        self.folder, self.count = folder, 0

    def array(self, a, t="array"):
        os.makedirs(self.folder, exist_ok=True)
        name = f"{self.count}.npy"
        self.count += 1
        np.save(os.path.join(self.folder, name), a, allow_pickle=False)
        return {"t": t, "f": name}

    def __call__(self, v, depth=0):
        if depth > MAX_DEPTH:
            return {"t": "other", "name": "(nested too deep)"}
        if isinstance(v, np.ndarray):
            if v.dtype.kind not in "biuf":
                return {"t": "other", "name": f"ndarray of {v.dtype}"}
            return self.array(np.asarray(v))
        if isinstance(v, np.generic) and np.asarray(v).dtype.kind in "biuf":
            return self.array(np.asarray(v), "scalar")
        if isinstance(v, bool):
            return {"t": "bool", "v": v}
        if isinstance(v, int) and abs(v) < 2 ** 62:
            return {"t": "int", "v": v}
        if isinstance(v, float):
            return {"t": "float", "v": v if np.isfinite(v) else repr(v)}
        if v is None:
            return {"t": "none"}
        if isinstance(v, str):
            return {"t": "str", "v": v[:MAX_TEXT]}
        if isinstance(v, (tuple, list)) and len(v) <= MAX_ITEMS:
            return {"t": "tuple" if isinstance(v, tuple) else "list",
                    "items": [self(x, depth + 1) for x in v]}
        if isinstance(v, dict) and len(v) <= MAX_ITEMS:
            return {"t": "dict", "items": [[str(k)[:MAX_TEXT], self(x, depth + 1)]
                                           for k, x in v.items()]}
        return {"t": "other", "name": type(v).__name__[:MAX_TEXT]}


def where(exc):
    """(line, code, cell) of the deepest frame inside the student's code (its file, or a
    notebook's cell files ``cell_K.py``; cell None for a file)."""
    line = code = cell = None
    for frame in traceback.extract_tb(exc.__traceback__):
        found = student_file(frame.filename)
        if found is not None:
            line, code = frame.lineno, (frame.line or "").strip()[:MAX_TEXT]
            cell = found or None
    if isinstance(exc, SyntaxError) and exc.lineno:
        line, code = exc.lineno, None
        found = student_file(exc.filename or "")
        cell = found or None
    return line, code, cell


def student_file(filename):
    """0 for the student's .py file, K for a notebook's cell K, None for any other file."""
    path = os.path.abspath(filename) if filename else ""
    if path == SOURCE:
        return 0
    name = os.path.basename(path)
    if os.path.dirname(path) == WORK and name.startswith("cell_") and name.endswith(".py"):
        return int(name[5:-3]) if name[5:-3].isdigit() else None
    return None


def error(kind, exc=None, **extra):
    out = {"kind": kind, **extra}
    if exc is not None:
        text = exc.msg if isinstance(exc, SyntaxError) and exc.msg else str(exc).strip()
        out["type"] = type(exc).__name__[:MAX_TEXT]
        out["message"] = (text.splitlines() or [""])[0][:MAX_TEXT]
        out["line"], out["code"], out["cell"] = where(exc)
    return out


def write_json(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def limited(seconds, fn, *args, **kwargs):
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn(*args, **kwargs)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


# --------------------------------------------------------------------------- the run

class _NoIPython:
    """What ``get_ipython()`` returns when the grader runs a notebook's cells: every method does
    nothing (magics and shell commands do not run when grading)."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def load_student(limit):
    """Import the student's file, or run a notebook's cells one after another into one module
    (a cell that raises or runs past the limit is reported and the next one runs, as nbgrader
    does). Returns (module, failure, cell_errors)."""
    import importlib.util
    import types

    cells = REQUEST.get("cells")
    if cells is None:
        spec = importlib.util.spec_from_file_location("submission", SOURCE)
        module = importlib.util.module_from_spec(spec)
        sys.modules["submission"] = module
        try:
            limited(limit, spec.loader.exec_module, module)
        except TimeLimit:
            return None, {"kind": "timeout"}, []
        except BaseException as exc:  # noqa: BLE001 - anything the student's file does
            return None, error("exception", exc), []
        return module, None, []
    module = types.ModuleType("submission")
    module.__file__ = SOURCE
    module.display = lambda *args, **kwargs: None          # IPython's, in a notebook
    module.get_ipython = _NoIPython
    sys.modules["submission"] = module
    sys.meta_path.insert(0, _DisplayOnly())
    errors = []
    for k in cells:
        path = os.path.join(WORK, f"cell_{k}.py")
        try:
            with open(path, encoding="utf-8") as f:
                code = compile(f.read(), path, "exec")
            limited(limit, exec, code, module.__dict__)
        except TimeLimit:
            errors.append({"kind": "timeout", "cell": k})
        except BaseException as exc:  # noqa: BLE001 - anything a cell does
            errors.append(dict(error("exception", exc), cell=k, at=where(exc)[2]))
        write_json(os.path.join(OUT, f"cell_{k}.json"), {})     # progress, for the grader
    return module, None, errors


#: packages a notebook uses to show things, absent when grading: importing them gives a stand-in
#: whose every attribute and call does nothing (so `fig, ax = plt.subplots()` and `plt.show()`
#: run, and the cell goes on to its next line)
DISPLAY_ONLY = {"matplotlib", "seaborn", "IPython", "ipywidgets", "tqdm", "plotly", "PIL"}


class _Nothing:
    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self

    def __call__(self, *args, **kwargs):
        return self

    def __getitem__(self, key):
        return self

    def __iter__(self):
        return iter((self, self))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _DisplayOnly:
    """A meta-path finder: a stand-in module for the packages of :data:`DISPLAY_ONLY`."""

    def find_spec(self, name, path=None, target=None):
        import importlib.machinery

        if name.split(".")[0] in DISPLAY_ONLY:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        import types

        module = types.ModuleType(spec.name)
        module.__getattr__ = lambda attr: _Nothing()
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def run_call(module, spec, deadline, timed_out):
    name = spec["fn"]
    if name in timed_out:
        return {"error": {"kind": "skipped", "function": name, "after": timed_out[name]}}, []
    fn = getattr(module, name, None)
    if fn is None:
        return {"error": {"kind": "missing", "function": name}}, []
    if not callable(fn):
        return {"error": {"kind": "not_callable", "function": name}}, []
    fixtures = []
    args = [decode(n, fixtures) for n in spec["args"]]
    kwargs = {k: decode(n, fixtures) for k, n in spec["kwargs"].items()}
    import time

    try:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeLimit()
        value = limited(left, fn, *args, **kwargs)
    except TimeLimit:
        return {"error": {"kind": "timeout", "function": name}}, fixtures
    except NotImplementedError as exc:      # named after the function that raised it
        raised = [f.name for f in traceback.extract_tb(exc.__traceback__)
                  if student_file(f.filename) is not None]
        return {"error": {"kind": "not_implemented",
                          "function": raised[-1] if raised else name}}, fixtures
    except MemoryError as exc:
        return {"error": error("memory", exc, function=name)}, fixtures
    except BaseException as exc:  # noqa: BLE001 - anything student code raises, exit() too
        return {"error": error("exception", exc, function=name)}, fixtures
    return {"value": value}, fixtures


def main():
    limit = float(REQUEST["time_limit"])
    quiet()
    # from here on, a failure is the student's code's (before: the grader's, with its stderr)
    write_json(os.path.join(OUT, "started.json"), {"pid": os.getpid(), "sandbox": SANDBOX})
    module, failure, cell_errors = load_student(limit)
    write_json(os.path.join(OUT, "import.json"), {"ok": failure is None, "error": failure,
                                                  "cells": cell_errors[:20]})
    if failure:
        return
    timed_out = {}
    import time

    for i, check in enumerate(REQUEST["checks"]):
        encode = Encoder(os.path.join(OUT, str(i)))
        results = []
        deadline = time.monotonic() + limit           # for all the calls of the check
        for spec in check["calls"]:
            outcome, fixtures = run_call(module, spec, deadline, timed_out)
            try:
                if "value" in outcome:
                    outcome = {"value": encode(outcome["value"])}
                elif outcome["error"]["kind"] == "timeout":
                    timed_out[spec["fn"]] = check["id"]
                outcome["recorded"] = {key: encode(getattr(f, key)) for key, f in fixtures}
            except BaseException as exc:  # noqa: BLE001 - too large for the file limit, ...
                outcome = {"error": error("unsaveable", exc, function=spec["fn"]),
                           "recorded": {}}
            results.append(outcome)
            if "error" in outcome:
                break        # the check's later calls would be charged for the same failure
        write_json(os.path.join(OUT, f"{i}.json"), {"calls": results})
    write_json(os.path.join(OUT, "done.json"), {})


if __name__ == "__main__":
    main()
    os._exit(0)          # threads the student's code started do not hold the end
