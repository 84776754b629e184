"""The autograder of the classroom assignments in ``lessons/assignments/``.

    python -m tinyddpm.grade --list                                 # the assignments
    python -m tinyddpm.grade 1 my_01_cosine_schedule.py              # one student file
    python -m tinyddpm.grade cosine_schedule my_file.py --json       # the same, as JSON
    python -m tinyddpm.grade 3 submissions/ --csv scores.csv         # a class: one file a student

Each assignment is a list of weighted checks that call the student's functions on fixed inputs and
compare the results with this package's own implementation (``variance_schedule``,
``sampling.ddpm_step``, ``ddim_step``, the autograd backward of ``functional.conv2d`` and
``functional.batch_norm_train``). A check earns all its points or none; its failure message says
what was wrong: a shape or dtype (expected vs got), the first wrong element (index, expected, got),
the time step, NaNs, an exception (with the line of the student file), "not implemented yet".

Isolation: by default each student file is graded in a fresh Python process
(``python -m tinyddpm.grade --worker ...``) with a time limit per check (10 s, ``--time-limit``;
enforced with SIGALRM where the OS has it) and an overall limit on the process, so an infinite
loop or a crash in student code costs that student the check, never the class run. Output that
student code prints is discarded. ``isolate=False`` (``--no-isolate``) grades in this process,
which is faster (no start-up) but trusts the student code more.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import io
import json
import math
import os
import signal
import subprocess
import sys
import threading
import traceback
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["ASSIGNMENTS", "Assignment", "CheckResult", "Report", "find_assignment", "grade",
           "grade_folder", "write_csv", "main"]

#: Seconds each check (and the import of the student file) may run.
DEFAULT_TIME_LIMIT = 10.0
#: Extra seconds the grading process gets on top of the per-check limits (Python start-up).
STARTUP_ALLOWANCE = 30.0
_PROTOCOL = "TINYDDPM-GRADE "


# =========================================================================== the framework

class Fail(Exception):
    """A check failed; the message is shown to the student."""


class _TimeLimit(BaseException):
    """Raised by the alarm inside student code; a BaseException so ``except Exception`` in
    student code does not swallow it."""


@dataclass
class Check:
    id: str
    points: float
    description: str
    fn: object


class Assignment:
    """A numbered exercise: the student file's functions and the weighted checks on them."""

    def __init__(self, number, name, title, slide, functions, minutes):
        self.number, self.name, self.title, self.slide = number, name, title, slide
        self.functions, self.minutes = tuple(functions), minutes
        self.checks = []

    @property
    def key(self):
        return f"{self.number:02d}_{self.name}"

    @property
    def max_points(self):
        return sum(c.points for c in self.checks)

    def check(self, id, points, description):
        def register(fn):
            self.checks.append(Check(id, points, description, fn))
            return fn
        return register

    def __repr__(self):
        return f"Assignment({self.key!r}, {len(self.checks)} checks, {self.max_points:g} points)"


@dataclass
class CheckResult:
    id: str
    description: str
    points: float
    max_points: float
    passed: bool
    message: str = ""


@dataclass
class Report:
    assignment: str
    path: str
    student: str
    checks: list = field(default_factory=list)
    error: str = ""           # the file could not be imported, the time limit, a crash

    @property
    def total(self):
        return sum(c.points for c in self.checks)

    @property
    def max_total(self):
        return sum(c.max_points for c in self.checks)

    def to_dict(self):
        return {"assignment": self.assignment, "path": self.path, "student": self.student,
                "total": self.total, "max_total": self.max_total, "error": self.error,
                "checks": [asdict(c) for c in self.checks]}

    def format(self):
        lines = [f"Assignment {self.assignment}: {self.path}"]
        if self.error:
            lines.append(f"  ! {self.error}")
        width = max((len(c.id) for c in self.checks), default=0)
        for c in self.checks:
            mark = "ok  " if c.passed else "FAIL"
            lines.append(f"  {mark} {_num(c.points)}/{_num(c.max_points)}  {c.id:<{width}}  "
                         f"{c.description}")
            if c.message:
                lines.extend(f"         {line}" for line in c.message.splitlines())
        lines.append(f"Total: {_num(self.total)}/{_num(self.max_total)}")
        return "\n".join(lines)


def _num(x):
    return f"{x:g}"


ASSIGNMENTS = {}


def _assignment(*args, **kwargs):
    a = Assignment(*args, **kwargs)
    ASSIGNMENTS[a.key] = a
    return a


def find_assignment(text):
    """The assignment named by ``text``: its number (``1``, ``01``), name (``cosine_schedule``),
    both (``01_cosine_schedule``, with or without ``.py``) or a unique prefix of the name.
    Raises ``KeyError`` with the list of choices."""
    key = str(text).strip().lower().replace("-", "_")
    key = key[:-3] if key.endswith(".py") else key
    for a in ASSIGNMENTS.values():
        if key in (a.key, a.name) or (key.isdigit() and int(key) == a.number):
            return a
    prefixed = [a for a in ASSIGNMENTS.values() if a.name.startswith(key)] if key else []
    if len(prefixed) == 1:
        return prefixed[0]
    choices = ", ".join(f"{a.number} ({a.name})" for a in ASSIGNMENTS.values())
    raise KeyError(f"unknown assignment {text!r}; choose one of: {choices}")


# --------------------------------------------------------------------------- running student code

class _Sink(io.TextIOBase):
    """Swallows what student code prints."""

    def write(self, s):
        return len(s)


@contextlib.contextmanager
def _time_limit(seconds):
    """Raise _TimeLimit in the main thread after ``seconds`` (where SIGALRM exists)."""
    usable = (seconds and hasattr(signal, "SIGALRM")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    def on_alarm(signum, frame):
        raise _TimeLimit()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _quiet():
    old = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = _Sink()
    try:
        yield
    finally:
        sys.stdout, sys.stderr = old


def _where(exc, path):
    """' (line N: code)' for the deepest frame of the traceback inside the student file."""
    if path is None:
        return ""
    found = ""
    target = os.path.abspath(path)
    for frame in traceback.extract_tb(exc.__traceback__):
        if os.path.abspath(frame.filename) == target:
            found = f" (line {frame.lineno}: {frame.line.strip()})" if frame.line else \
                f" (line {frame.lineno})"
    if isinstance(exc, SyntaxError) and exc.lineno:
        found = f" (line {exc.lineno})"
    return found


def _describe(exc, path):
    text = exc.msg if isinstance(exc, SyntaxError) and exc.msg else str(exc).strip()
    text = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}{': ' + text if text else ''}{_where(exc, path)}"


_counter = 0


def _load_student(path, time_limit):
    """Import the file as a fresh module. Returns (module, None) or (None, message)."""
    global _counter
    _counter += 1
    name = f"_tinyddpm_student_{_counter}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        return None, f"cannot load {path} as Python source"
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    dont_write = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # no __pycache__ in the class folder
    try:
        with _quiet(), _time_limit(time_limit):
            spec.loader.exec_module(module)
    except KeyboardInterrupt:
        sys.modules.pop(name, None)
        raise
    except _TimeLimit:
        sys.modules.pop(name, None)
        return None, (f"importing the file took longer than the time limit ({_num(time_limit)} s):"
                      " is there a loop at the top level of your file?")
    except BaseException as exc:  # noqa: BLE001 - anything the student's file does
        sys.modules.pop(name, None)
        return None, f"your file could not be imported: {_describe(exc, path)}"
    finally:
        sys.dont_write_bytecode = dont_write
    module.__tinyddpm_path__ = path
    return module, None


def _run_check(check, module, time_limit):
    """(passed, message) for one check; never raises."""
    try:
        with _quiet(), _time_limit(time_limit):
            check.fn(module)
        return True, ""
    except Fail as exc:
        return False, str(exc)
    except KeyboardInterrupt:
        raise
    except _TimeLimit:
        return False, (f"time limit: stopped after {_num(time_limit)} s (an infinite loop, or a "
                       "very slow loop?)")
    except BaseException as exc:  # noqa: BLE001 - a bug in the check itself, or SystemExit
        return False, f"the check itself failed: {_describe(exc, getattr(module, '__tinyddpm_path__', None))}"


def _grade_events(assignment, path, time_limit, emit):
    """Import the file and run every check, reporting each as an event dict through ``emit``."""
    module, error = _load_student(path, time_limit)
    emit({"event": "import", "ok": error is None, "message": error or ""})
    if error:
        return
    try:
        for check in assignment.checks:
            passed, message = _run_check(check, module, time_limit)
            emit({"event": "check", "id": check.id, "passed": passed, "message": message})
    finally:
        sys.modules.pop(module.__name__, None)
    emit({"event": "done"})


def _report(assignment, path, events, failure=""):
    """Assemble a Report from the events; checks without an event failed because of ``failure``."""
    student = os.path.splitext(os.path.basename(path))[0]
    report = Report(assignment.key, str(path), student)
    by_id = {e["id"]: e for e in events if e.get("event") == "check"}
    imported = [e for e in events if e.get("event") == "import"]
    if imported and not imported[0]["ok"]:
        report.error = imported[0]["message"]
    elif failure:
        report.error = failure
    first_missing = True
    for check in assignment.checks:
        e = by_id.get(check.id)
        if e is not None:
            passed, message = e["passed"], e["message"]
        elif imported and not imported[0]["ok"]:
            passed, message = False, "not run: the file could not be imported (see above)"
        else:
            passed = False
            message = ("stopped here: " if first_missing else "not run: ") + (failure or "?")
            first_missing = False
        report.checks.append(CheckResult(check.id, check.description,
                                         check.points if passed else 0, check.points,
                                         passed, message))
    return report


def grade(assignment, path, *, time_limit=DEFAULT_TIME_LIMIT, isolate=True):
    """Grade one student file; returns a :class:`Report` (never raises for student errors).

    ``assignment`` is an :class:`Assignment` or anything :func:`find_assignment` accepts.
    """
    if not isinstance(assignment, Assignment):
        assignment = find_assignment(assignment)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    events = []
    if not isolate:
        _grade_events(assignment, path, time_limit, events.append)
        return _report(assignment, path, events)
    return _grade_in_subprocess(assignment, path, time_limit)


def _grade_in_subprocess(assignment, path, time_limit):
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    cmd = [sys.executable, "-m", "tinyddpm.grade", "--worker", assignment.key,
           os.path.abspath(path), "--time-limit", repr(float(time_limit or 0))]
    overall = (len(assignment.checks) + 1) * (time_limit or DEFAULT_TIME_LIMIT) + STARTUP_ALLOWANCE
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=env, text=True, encoding="utf-8",
                            errors="replace")
    failure = ""
    try:
        out, err = proc.communicate(timeout=overall)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        failure = (f"time limit: the grading process was stopped after {_num(overall)} s "
                   "(an infinite loop that the per-check limit could not interrupt?)")
    events = []
    for line in out.splitlines():
        if line.startswith(_PROTOCOL):
            with contextlib.suppress(ValueError):
                events.append(json.loads(line[len(_PROTOCOL):]))
    finished = any(e.get("event") == "done" or (e.get("event") == "import" and not e["ok"])
                   for e in events)
    if not failure and not finished:
        crash = [e["message"] for e in events if e.get("event") == "crash"]
        tail = err.strip().splitlines()[-1:]
        failure = (f"the grader itself failed: {crash[0]}" if crash else
                   f"the grading process ended unexpectedly (exit code {proc.returncode}): did "
                   "your code exit Python (os._exit) or crash it?"
                   + (f" Its last output: {tail[0][:200]}" if tail else ""))
    return _report(assignment, path, events, failure)


def grade_folder(assignment, folder, *, time_limit=DEFAULT_TIME_LIMIT, isolate=True):
    """Grade every ``*.py`` file of ``folder`` (one per student, student = file stem)."""
    files = sorted(f for f in os.listdir(folder)
                   if f.endswith(".py") and not f.startswith(("_", ".")))
    return [grade(assignment, os.path.join(folder, f), time_limit=time_limit, isolate=isolate)
            for f in files]


def write_csv(reports, path, assignment):
    """One row per student: student, the points of each check (columns named by check id),
    total, out_of."""
    if not isinstance(assignment, Assignment):
        assignment = find_assignment(assignment)
    from ._files import atomic_write

    def write(f):
        w = csv.writer(f)
        w.writerow(["student"] + [c.id for c in assignment.checks] + ["total", "out_of"])
        for r in reports:
            points = {c.id: c.points for c in r.checks}
            w.writerow([r.student] + [_num(points[c.id]) for c in assignment.checks]
                       + [_num(r.total), _num(r.max_total)])
    atomic_write(path, write, binary=False)


# =========================================================================== check helpers

def _call(m, name, *args, **kwargs):
    """Call the student's function ``name``, turning its failures into readable Fails."""
    fn = getattr(m, name, None)
    if fn is None:
        raise Fail(f"your file has no function `{name}`")
    if not callable(fn):
        raise Fail(f"`{name}` in your file is not a function")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise Fail(f"`{name}` is not implemented yet (it raises NotImplementedError)") from None
    except (Fail, _TimeLimit, KeyboardInterrupt):
        raise
    except BaseException as exc:  # noqa: BLE001 - anything the student code raises, exit() too
        raise Fail(f"`{name}` raised {_describe(exc, getattr(m, '__tinyddpm_path__', None))}") \
            from None


def _fmt(x):
    return f"{x:.6g}" if isinstance(x, (float, np.floating)) else str(x)


def _array(value, what, shape=None, dtype=None, kind=None):
    """Check ``value`` is an ndarray with the given shape / dtype / dtype kind ('i', 'f')."""
    if not isinstance(value, np.ndarray):
        raise Fail(f"{what} should be a NumPy array, got {type(value).__name__}")
    if shape is not None and value.shape != tuple(shape):
        raise Fail(f"{what} has the wrong shape: expected {tuple(shape)}, got {value.shape}")
    if dtype is not None and value.dtype != np.dtype(dtype):
        raise Fail(f"{what} has the wrong dtype: expected {np.dtype(dtype)}, got {value.dtype}"
                   + (f" (cast with .astype(np.{np.dtype(dtype)}), or create it with "
                      f"dtype={np.dtype(dtype)})" if np.dtype(dtype).kind == "f" else ""))
    if kind is not None and value.dtype.kind not in kind:
        kinds = {"iu": "an integer", "f": "a floating-point"}.get(kind, kind)
        raise Fail(f"{what} should have {kinds} dtype, got {value.dtype}")
    return value


def _index(idx):
    return "(" + ", ".join(str(int(i)) for i in idx) + ")" if len(idx) != 1 else f"({int(idx[0])},)"


def _close(got, expected, what, rtol=1e-5, atol=1e-6, where=None, mistakes=(), context=""):
    """Compare arrays of equal shape; Fail at the first wrong element, NaN or inf.

    ``where(idx) -> str`` names an element (default "element (i, j, ...)"); ``mistakes`` is a list
    of (wrong_expected, hint): when ``got`` matches one, the hint is added to the message.
    """
    try:
        got = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        raise Fail(f"{what} should hold real numbers, got dtype "
                   f"{getattr(got, 'dtype', type(got).__name__)}") from None
    expected = np.asarray(expected, dtype=np.float64)
    if got.shape != expected.shape:
        raise Fail(f"{what} has the wrong shape: expected {expected.shape}, got {got.shape}")
    where = where or (lambda idx: f"element {_index(idx)}")
    suffix = f" {context}" if context else ""
    for bad, label in ((np.isnan(got), "NaN"), (np.isinf(got) & np.isfinite(expected), "inf")):
        if bad.any():
            first = np.argwhere(bad)[0]
            raise Fail(f"{what} contains {label}{suffix}: {int(bad.sum())} of {got.size} values, "
                       f"the first at {where(first)} (expected {_fmt(expected[tuple(first)])})")
    wrong = ~np.isclose(got, expected, rtol=rtol, atol=atol)
    if wrong.any():
        first = tuple(np.argwhere(wrong)[0])
        message = (f"{what} is wrong at {where(first)}{suffix}: expected "
                   f"{_fmt(expected[first])}, got {_fmt(got[first])}")
        if got.size > 1:
            message += f" ({int(wrong.sum())} of {got.size} values wrong)"
        for alternative, hint in mistakes:
            alternative = np.asarray(alternative, dtype=np.float64)
            if alternative.shape == got.shape and np.allclose(got, alternative, rtol=rtol,
                                                              atol=atol):
                message += f"\nhint: {hint}"
                break
        raise Fail(message)


def _tuple_of(value, n, what, names):
    if not isinstance(value, (tuple, list)) or len(value) != n:
        got = f"a {type(value).__name__} of length {len(value)}" if isinstance(
            value, (tuple, list)) else type(value).__name__
        raise Fail(f"{what} should return a tuple of {n} values ({', '.join(names)}), got {got}")
    return value


def _t_at(idx):
    return f"t={int(idx[0])}"


# =========================================================================== 01 cosine schedule

A1 = _assignment(1, "cosine_schedule", "The cosine variance schedule", "Variance Schedule",
                 ["variance_schedule"], 30)


def _schedule(m, *args, **kwargs):
    out = _call(m, "variance_schedule", *args, **kwargs)
    return _tuple_of(out, 3, "variance_schedule", ("alpha", "alpha_cumprod", "beta"))


@A1.check("returns", 1, "variance_schedule(4000) returns three arrays")
def _(m):
    for name, a in zip(("alpha", "alpha_cumprod", "beta"), _schedule(m, 4000)):
        _array(a, name)


@A1.check("shapes_dtypes", 1, "each array has shape (T + 1,) and dtype float32")
def _(m):
    for T in (4000, 10):
        for name, a in zip(("alpha", "alpha_cumprod", "beta"), _schedule(m, T)):
            if isinstance(a, np.ndarray) and a.shape == (T,):
                raise Fail(f"{name} has shape ({T},) for T={T}: expected ({T + 1},), one value "
                           "for each t = 0..T (add alpha_0 = 1 in front)")
            _array(a, f"{name} (T={T})", (T + 1,), np.float32)


@A1.check("t0", 1, "alpha_0 = 1, alpha_bar_0 = 1, beta_0 = 0")
def _(m):
    alpha, alpha_cumprod, beta = _schedule(m, 4000)
    for name, a, want in (("alpha", alpha, 1), ("alpha_cumprod", alpha_cumprod, 1),
                          ("beta", beta, 0)):
        a = _array(a, name)
        if a.size == 0 or not np.isclose(a.reshape(-1)[0], want, atol=1e-7):
            got = a.reshape(-1)[0] if a.size else "nothing"
            raise Fail(f"{name}[0] should be {want} (t = 0 is the clean image), got {_fmt(got)}")


@A1.check("alpha_cumprod", 3, "alpha_bar_t = f(t)/f(0) (with the clip) at every t, T = 4000")
def _(m):
    from .schedule import variance_schedule

    ref = variance_schedule(4000)
    alpha, alpha_cumprod, beta = _schedule(m, 4000)
    _array(alpha_cumprod, "alpha_cumprod", (4001,))
    t = np.arange(4001)
    f = np.cos((t / 4000 + 0.008) / 1.008 * np.pi / 2) ** 2
    _close(alpha_cumprod, ref[1], "alpha_cumprod", rtol=1e-4, atol=1e-7, where=_t_at, mistakes=[
        (f / f[0], "this is f(t)/f(0) without the clip of beta_t at max_beta: build alpha_t = "
                   "f(t)/f(t-1), clip it to at least 1 - max_beta, then take the cumulative "
                   "product"),
        (np.cumprod(np.append(1, f[1:] / f[:-1])), "clip alpha_t = f(t)/f(t-1) to at least "
                                                   "1 - max_beta before the cumulative product"),
        (f, "alpha_bar_t is f(t)/f(0), not f(t)")])


@A1.check("beta", 1, "beta_t = 1 - alpha_t at every t, T = 4000")
def _(m):
    from .schedule import variance_schedule

    ref = variance_schedule(4000)
    alpha, _, beta = _schedule(m, 4000)
    _array(alpha, "alpha", (4001,))
    _array(beta, "beta", (4001,))
    t = np.arange(4001)
    f = np.cos((t / 4000 + 0.008) / 1.008 * np.pi / 2) ** 2
    _close(alpha, ref[0], "alpha", rtol=1e-5, atol=1e-6, where=_t_at, mistakes=[
        (np.append(1, f[1:] / f[:-1]), "alpha_t = f(t)/f(t-1) must be clipped to at least "
                                       "1 - max_beta (beta_t at most max_beta)")])
    _close(beta, ref[2], "beta", rtol=1e-4, atol=1e-6, where=_t_at)


@A1.check("clip", 1, "beta_t is clipped at max_beta (0.999 by default; also max_beta=0.2)")
def _(m):
    from .schedule import variance_schedule

    _, _, beta = _schedule(m, 4000)
    beta = _array(beta, "beta", (4001,))
    if not np.isclose(beta[-1], 0.999, atol=1e-6):
        raise Fail(f"beta_T should be clipped to max_beta = 0.999 (f(T) = 0 would make it 1), "
                   f"got {_fmt(beta[-1])}")
    _, _, beta = _schedule(m, 20, max_beta=0.2)
    _close(_array(beta, "beta (T=20, max_beta=0.2)", (21,)), variance_schedule(20, max_beta=0.2)[2],
           "beta", rtol=1e-4, atol=1e-6, where=_t_at, context="with T=20, max_beta=0.2")


@A1.check("arguments", 2, "T and s are used: T = 10 with s = 0.1, and T = 1000")
def _(m):
    from .schedule import variance_schedule

    for T, kwargs in ((10, {"s": 0.1}), (1000, {})):
        ref = variance_schedule(T, **kwargs)
        got = _schedule(m, T, **kwargs)
        label = f"with T={T}" + (f", s={kwargs['s']}" if kwargs else "")
        for name, a, r in zip(("alpha", "alpha_cumprod", "beta"), got, ref):
            _array(a, f"{name} ({label})", (T + 1,))
            _close(a, r, name, rtol=1e-4, atol=1e-6, where=_t_at, context=label)


# =========================================================================== 02 prepare_batch

A2 = _assignment(2, "prepare_batch", "Preparing a training batch", "Preparing Batch for Training",
                 ["prepare_batch"], 30)


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 28, 28), dtype=np.float32)


def _batch(m, X, alpha_cumprod, seed):
    out = _call(m, "prepare_batch", X, alpha_cumprod, np.random.default_rng(seed))
    inputs, noise = _tuple_of(out, 2, "prepare_batch", ("inputs", "noise"))
    if not isinstance(inputs, dict):
        raise Fail(f"the first value returned should be a dict {{'X_noisy': ..., 'time': ...}}, "
                   f"got {type(inputs).__name__}")
    missing = [k for k in ("X_noisy", "time") if k not in inputs]
    if missing:
        raise Fail(f"the dict returned lacks the key(s) {missing}; it has {sorted(inputs)}")
    return inputs["X_noisy"], inputs["time"], noise


def _cosine(T):
    from .schedule import variance_schedule
    return variance_schedule(T)[1]


@A2.check("returns", 1, "returns ({'X_noisy': ..., 'time': ...}, noise), all NumPy arrays")
def _(m):
    X_noisy, time_, noise = _batch(m, _images(8), _cosine(100), 0)
    _array(X_noisy, "X_noisy")
    _array(time_, "time")
    _array(noise, "noise")


@A2.check("shapes", 1, "X (N, 28, 28) gives X_noisy and noise (N, 28, 28, 1), time (N,)")
def _(m):
    X_noisy, time_, noise = _batch(m, _images(8), _cosine(100), 0)
    for name, a, shape in (("X_noisy", X_noisy, (8, 28, 28, 1)), ("noise", noise, (8, 28, 28, 1)),
                           ("time", time_, (8,))):
        if isinstance(a, np.ndarray) and a.shape == (8, 28, 28) and len(shape) == 4:
            raise Fail(f"{name} has shape (8, 28, 28): add the channel axis, X[..., np.newaxis]")
        _array(a, name, shape)


@A2.check("dtypes", 1, "X_noisy and noise are float32, time is an integer array")
def _(m):
    X_noisy, time_, noise = _batch(m, _images(8), _cosine(100), 0)
    _array(X_noisy, "X_noisy", dtype=np.float32)
    _array(noise, "noise", dtype=np.float32)
    _array(time_, "time", kind="iu")


@A2.check("time_range", 2, "t is drawn per image, uniformly from 1..T (both ends included)")
def _(m):
    T = 5
    _, time_, _ = _batch(m, _images(1000), _cosine(T), 1)
    t = _array(time_, "time", (1000,))
    if t.min() < 1:
        raise Fail(f"time contains {_fmt(t.min())}: t must lie in 1..T (t = 0 is the clean "
                   "image, there is no noise to predict)")
    if t.max() > T:
        raise Fail(f"time contains {_fmt(t.max())} with T={T}: t must lie in 1..T")
    if np.all(t == t[0]):
        raise Fail(f"every image got the same t={_fmt(t[0])}: draw one t per image")
    counts = np.bincount(t.astype(np.int64), minlength=T + 1)[1:]
    if counts[-1] == 0:
        raise Fail(f"t never equals T={T} in 1,000 draws: the upper bound of rng.integers is "
                   "exclusive, use rng.integers(1, T + 1, ...)")
    if counts.min() < 120:  # each value expects 200 of the 1,000 draws
        raise Fail(f"t is not uniform on 1..{T}: counts {counts.tolist()} for 1,000 images")


@A2.check("noise", 1, "the noise is standard normal (mean 0, std 1)")
def _(m):
    _, _, noise = _batch(m, _images(500), _cosine(100), 2)
    noise = _array(noise, "noise", (500, 28, 28, 1))
    mean, std = float(noise.mean()), float(noise.std())
    if abs(mean) > 0.01 or abs(std - 1) > 0.01:
        raise Fail(f"noise should be standard normal: mean 0 and std 1, got mean {mean:.4f} and "
                   f"std {std:.4f} (use rng.standard_normal)")


@A2.check("formula", 3, "X_noisy = sqrt(alpha_bar_t) (2X - 1) + sqrt(1 - alpha_bar_t) noise")
def _(m):
    T = 20
    X = _images(16, 3)
    alpha_cumprod = _cosine(T)
    X_noisy, time_, noise = _batch(m, X, alpha_cumprod, 4)
    X_noisy = _array(X_noisy, "X_noisy", (16, 28, 28, 1))
    noise = _array(noise, "noise", (16, 28, 28, 1))
    t = _array(time_, "time", (16,), kind="iu")
    if t.min() < 0 or t.max() > T:
        raise Fail(f"time lies outside 0..T ({_fmt(t.min())}..{_fmt(t.max())})")
    abar = alpha_cumprod[t].astype(np.float64).reshape(-1, 1, 1, 1)
    x01 = X[..., None].astype(np.float64)
    x = 2 * x01 - 1
    expected = np.sqrt(abar) * x + np.sqrt(1 - abar) * noise
    _close(X_noisy, expected, "X_noisy", rtol=1e-4, atol=1e-5, context=(
        "(compared with the formula applied to the time and noise you returned)"), mistakes=[
        (np.sqrt(abar) * x01 + np.sqrt(1 - abar) * noise,
         "X was not scaled from [0, 1] to [-1, 1]: X * 2 - 1"),
        (abar * x + (1 - abar) * noise,
         "the coefficients are square roots: sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t)"),
        (np.sqrt(abar[::-1]) * x + np.sqrt(1 - abar[::-1]) * noise, "alpha_bar is gathered in the "
                                                                     "wrong order"),
        (np.sqrt(alpha_cumprod[-1]) * x + np.sqrt(1 - alpha_cumprod[-1]) * noise,
         "use alpha_bar at each image's own t: alpha_cumprod[t], reshaped to (N, 1, 1, 1)")])


@A2.check("rng", 1, "all randomness comes from rng: same seed, same batch; new seed, new batch")
def _(m):
    X = _images(8)
    a = _batch(m, X, _cosine(100), 5)
    b = _batch(m, X, _cosine(100), 5)
    c = _batch(m, X, _cosine(100), 6)
    for name, x, y in zip(("X_noisy", "time", "noise"), a, b):
        if not np.array_equal(np.asarray(x), np.asarray(y)):
            raise Fail(f"two calls with rng = np.random.default_rng(5) gave different {name}: "
                       "draw every random number from rng (not np.random.*)")
    if np.array_equal(np.asarray(a[2]), np.asarray(c[2])):
        raise Fail("seeds 5 and 6 gave the same noise: draw the noise from rng")


# =========================================================================== 03 conv backward

A3 = _assignment(3, "conv_backward", "The backward pass of a convolution", "Building the Model",
                 ["conv2d_forward", "conv2d_backward"], 60)


def _conv_case(n, h, w, c_in, kh, kw, c_out, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, c_in)).astype(dtype)
    k = rng.standard_normal((kh, kw, c_in, c_out)).astype(dtype)
    dy = rng.standard_normal((n, h - kh + 1, w - kw + 1, c_out)).astype(dtype)
    return x, k, dy


def _conv_reference(x, k, dy):
    """dx, dw from the engine: functional.conv2d's backward, in float64."""
    from . import functional as F
    from .tensor import Tensor

    xt = Tensor(x.astype(np.float64), requires_grad=True)
    kt = Tensor(k.astype(np.float64), requires_grad=True)
    F.conv2d(xt, kt, None, stride=1, padding="valid").backward(dy.astype(np.float64))
    return xt.grad, kt.grad


def _conv_student(m, x, k, dy):
    out = _call(m, "conv2d_backward", x.copy(), k.copy(), dy.copy())
    dx, dw = _tuple_of(out, 2, "conv2d_backward", ("dx", "dw"))
    return _array(dx, "dx", x.shape), _array(dw, "dw", k.shape)


def _conv_compare(m, case, which, label=""):
    x, k, dy = case
    dx, dw = _conv_student(m, x, k, dy)
    ref_dx, ref_dw = _conv_reference(x, k, dy)
    if which in ("dx", "both"):
        _close(dx, ref_dx, "dx", rtol=1e-6, atol=1e-8, context=label, mistakes=[
            (np.zeros_like(ref_dx), "dx is all zeros")])
    if which in ("dw", "both"):
        _close(dw, ref_dw, "dw", rtol=1e-6, atol=1e-8, context=label, mistakes=[
            (ref_dw[::-1, ::-1], "dw is flipped: dw[i, j] pairs dy with the input shifted by "
                                 "(+i, +j), as in the forward pass")])


@A3.check("returns", 1, "conv2d_backward(x, w, dy) returns two arrays (dx, dw)")
def _(m):
    x, k, dy = _conv_case(2, 5, 5, 2, 3, 3, 3)
    out = _call(m, "conv2d_backward", x, k, dy)
    dx, dw = _tuple_of(out, 2, "conv2d_backward", ("dx", "dw"))
    _array(dx, "dx")
    _array(dw, "dw")


@A3.check("shapes_dtypes", 1, "dx has x's shape and dw has w's; float32 in gives float32 out")
def _(m):
    x, k, dy = _conv_case(2, 6, 5, 3, 3, 2, 4, dtype=np.float32)
    out = _call(m, "conv2d_backward", x, k, dy)
    dx, dw = _tuple_of(out, 2, "conv2d_backward", ("dx", "dw"))
    _array(dx, "dx", x.shape, np.float32)
    _array(dw, "dw", k.shape, np.float32)


@A3.check("dx_1x1", 1, "a 1x1 kernel: dx = dy @ w[0, 0].T")
def _(m):
    _conv_compare(m, _conv_case(2, 4, 4, 3, 1, 1, 5, seed=1), "dx", "(1x1 kernel)")


@A3.check("dx", 3, "dx for a 3x3 kernel matches the engine's backward")
def _(m):
    _conv_compare(m, _conv_case(2, 6, 6, 3, 3, 3, 4, seed=2), "dx", "(3x3 kernel)")


@A3.check("dw", 3, "dw for a 3x3 kernel matches the engine's backward")
def _(m):
    _conv_compare(m, _conv_case(2, 6, 6, 3, 3, 3, 4, seed=3), "dw", "(3x3 kernel)")


@A3.check("non_square", 1, "a 2x3 kernel on a 7x5 image, C_in=2, C_out=3: dx and dw")
def _(m):
    _conv_compare(m, _conv_case(3, 7, 5, 2, 2, 3, 3, seed=4), "both", "(2x3 kernel, 7x5 image)")


# =========================================================================== 04 batchnorm backward

A4 = _assignment(4, "batchnorm_backward", "The backward pass of BatchNorm (training mode)",
                 "Building the Model", ["batchnorm_forward", "batchnorm_backward"], 60)


def _bn_case(shape, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[-1]
    x = (rng.standard_normal(shape) * rng.uniform(0.5, 2, c) + rng.uniform(-1, 1, c)).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, c).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    return x, gamma, dy


def _bn_reference(x, gamma, dy, eps=1e-3):
    """(dx, dgamma, dbeta) from the engine: functional.batch_norm_train's backward, float64."""
    from . import functional as F
    from .tensor import Tensor

    shape = x.shape
    as4d = (lambda a: a.reshape(a.shape[0], 1, 1, a.shape[-1])) if x.ndim == 2 else (lambda a: a)
    xt = Tensor(as4d(x.astype(np.float64)), requires_grad=True)
    gt = Tensor(gamma.astype(np.float64), requires_grad=True)
    bt = Tensor(np.zeros_like(gamma, dtype=np.float64), requires_grad=True)
    F.batch_norm_train(xt, gt, bt, eps=eps).backward(as4d(dy.astype(np.float64)))
    return xt.grad.reshape(shape), gt.grad, bt.grad


def _bn_student(m, x, gamma, dy):
    out = _call(m, "batchnorm_backward", dy.copy(), x.copy(), gamma.copy())
    dx, dgamma, dbeta = _tuple_of(out, 3, "batchnorm_backward", ("dx", "dgamma", "dbeta"))
    c = x.shape[-1]
    return (_array(dx, "dx", x.shape), _array(dgamma, "dgamma", (c,)),
            _array(dbeta, "dbeta", (c,)))


def _bn_constant_stats(x, gamma, dy, eps=1e-3):
    axes = tuple(range(x.ndim - 1))
    return dy * gamma / np.sqrt(x.var(axis=axes) + eps)


@A4.check("returns", 1, "batchnorm_backward(dy, x, gamma) returns (dx, dgamma, dbeta)")
def _(m):
    x, gamma, dy = _bn_case((4, 3, 3, 2))
    out = _call(m, "batchnorm_backward", dy, x, gamma)
    for name, a in zip(("dx", "dgamma", "dbeta"),
                       _tuple_of(out, 3, "batchnorm_backward", ("dx", "dgamma", "dbeta"))):
        _array(a, name)


@A4.check("shapes_dtypes", 1, "dx has x's shape, dgamma and dbeta (C,); float32 stays float32")
def _(m):
    x, gamma, dy = _bn_case((4, 3, 3, 5), np.float32)
    out = _call(m, "batchnorm_backward", dy, x, gamma)
    dx, dgamma, dbeta = _tuple_of(out, 3, "batchnorm_backward", ("dx", "dgamma", "dbeta"))
    _array(dx, "dx", x.shape, np.float32)
    for name, a in (("dgamma", dgamma), ("dbeta", dbeta)):
        if isinstance(a, np.ndarray) and a.shape != (5,) and a.size == 5:
            raise Fail(f"{name} has shape {a.shape}: expected (5,), one value per channel "
                       "(sum over every axis but the last)")
        _array(a, name, (5,), np.float32)


@A4.check("dbeta", 1, "dbeta = sum of dy over N, H, W")
def _(m):
    x, gamma, dy = _bn_case((4, 5, 5, 3), seed=1)
    _, _, dbeta = _bn_student(m, x, gamma, dy)
    _close(dbeta, _bn_reference(x, gamma, dy)[2], "dbeta", rtol=1e-6, atol=1e-8)


@A4.check("dgamma", 2, "dgamma = sum of dy * x_hat over N, H, W")
def _(m):
    x, gamma, dy = _bn_case((4, 5, 5, 3), seed=2)
    _, dgamma, _ = _bn_student(m, x, gamma, dy)
    _close(dgamma, _bn_reference(x, gamma, dy)[1], "dgamma", rtol=1e-6, atol=1e-8, mistakes=[
        ((dy * x).sum(axis=(0, 1, 2)), "use the normalised x_hat = (x - mean) / sqrt(var + eps), "
                                       "not x")])


@A4.check("dx", 4, "dx, through the batch mean and variance too")
def _(m):
    x, gamma, dy = _bn_case((4, 5, 5, 3), seed=3)
    dx, _, _ = _bn_student(m, x, gamma, dy)
    _close(dx, _bn_reference(x, gamma, dy)[0], "dx", rtol=1e-5, atol=1e-8, mistakes=[
        (_bn_constant_stats(x, gamma, dy), "this treats the batch mean and variance as "
                                           "constants; they depend on x too (two more terms)")])


@A4.check("dense_input", 1, "x of shape (N, C) (after a Dense layer): statistics over axis 0")
def _(m):
    x, gamma, dy = _bn_case((16, 4), seed=4)
    dx, dgamma, dbeta = _bn_student(m, x, gamma, dy)
    ref = _bn_reference(x, gamma, dy)
    for name, a, r in zip(("dx", "dgamma", "dbeta"), (dx, dgamma, dbeta), ref):
        _close(a, r, name, rtol=1e-5, atol=1e-8, context="for x of shape (16, 4)")


# =========================================================================== 05 DDPM step

A5 = _assignment(5, "ddpm_step", "One reverse (DDPM) step and the sampling loop",
                 "Generating New Images", ["ddpm_step", "generate"], 45)


def _step_inputs(seed, shape=(3, 8, 8, 1)):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape, dtype=np.float32),
            rng.standard_normal(shape, dtype=np.float32),
            rng.standard_normal(shape, dtype=np.float32))


def _ddpm_ref(x, eps, t, sched, z):
    from .sampling import ddpm_step
    return ddpm_step(x, eps, t, *sched, z)


def _student_step(m, x, eps, t, sched, z):
    out = _call(m, "ddpm_step", x.copy(), eps.copy(), t, *sched, z.copy())
    return _array(out, "x_{t-1}", x.shape)


def _sched(T):
    from .schedule import variance_schedule
    return variance_schedule(T)


@A5.check("step_shape", 1, "ddpm_step returns an array of x_t's shape, float32 for float32 in")
def _(m):
    x, eps, z = _step_inputs(0)
    out = _call(m, "ddpm_step", x, eps, 500, *_sched(1000), z)
    _array(out, "x_{t-1}", x.shape, np.float32)


@A5.check("step_value", 3, "x_{t-1} = (x_t - beta_t/sqrt(1 - alpha_bar_t) eps)/sqrt(alpha_t) "
                           "+ sqrt(beta_t) z at t = 500 of 1000")
def _(m):
    x, eps, z = _step_inputs(1)
    sched = _sched(1000)
    alpha, abar, beta = (a.astype(np.float64) for a in sched)
    t = 500
    _close(_student_step(m, x, eps, t, sched, z), _ddpm_ref(x, eps, t, sched, z), "x_{t-1}",
           rtol=1e-4, atol=1e-5, context="at t=500", mistakes=[
               ((x - beta[t] / np.sqrt(1 - abar[t]) * eps) / np.sqrt(alpha[t]),
                "the noise term sqrt(beta_t) z is missing"),
               ((x - beta[t] / np.sqrt(1 - abar[t]) * eps) / np.sqrt(alpha[t]) + beta[t] * z,
                "the noise is scaled by sqrt(beta_t), not beta_t"),
               ((x - beta[t] / (1 - abar[t]) * eps) / np.sqrt(alpha[t]) + np.sqrt(beta[t]) * z,
                "eps is scaled by beta_t / sqrt(1 - alpha_bar_t): a square root is missing"),
               (1 / np.sqrt(alpha[t]) * x - beta[t] / np.sqrt(1 - abar[t]) * eps
                + np.sqrt(beta[t]) * z, "1/sqrt(alpha_t) multiplies the whole bracket "
                                        "(x_t - ... eps), not only x_t")])


@A5.check("step_each_t", 1, "the step is right at t = 1, 2, 10, 999 (alpha, alpha_bar, beta "
                            "taken at t)")
def _(m):
    x, eps, z = _step_inputs(2)
    sched = _sched(1000)
    for t in (1, 2, 10, 999):
        _close(_student_step(m, x, eps, t, sched, z), _ddpm_ref(x, eps, t, sched, z), "x_{t-1}",
               rtol=1e-4, atol=1e-5, context=f"at t={t}")


@A5.check("step_noise", 1, "with x_t = 0 and eps = 0 the step returns sqrt(beta_t) z")
def _(m):
    _, _, z = _step_inputs(3)
    zero = np.zeros_like(z)
    sched = _sched(1000)
    _close(_student_step(m, zero, zero, 700, sched, z), np.sqrt(sched[2][700]) * z, "x_{t-1}",
           rtol=1e-4, atol=1e-6, context="with x_t = 0, eps = 0, t=700")


class _NoiseSource:
    """Stands in for the rng given to the student's ``generate``: records every draw."""

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


class _FakeModel:
    """eps_theta(x, t): a fixed smooth function of x and t; records the time steps asked for."""

    def __init__(self, T):
        self.T, self.calls = T, []

    def __call__(self, x, t):
        x = np.asarray(x)
        t_arr = np.asarray(t)
        if t_arr.ndim == 0:
            t_value = t_arr.item()
        else:
            if t_arr.shape != (len(x),) or not np.all(t_arr == t_arr.reshape(-1)[0]):
                raise Fail(f"predict_noise was called with time of shape {t_arr.shape}: pass "
                           f"the step t as an int, or np.full(len(x), t)")
            t_value = t_arr.reshape(-1)[0].item()
        self.calls.append(t_value)
        return (0.5 * np.tanh(x) + 0.01 * t_value / self.T).astype(np.float32)


def _ddpm_loop_ref(x, T, sched, draws, last_noise=False):
    model = _FakeModel(T)
    x = x.astype(np.float32)
    for t in range(T - 1, 0, -1):
        k = T - 1 - t
        z = draws[k] if (t > 1 or last_noise) else np.zeros_like(x)
        x = _ddpm_ref(x, model(x, t), t, sched, np.asarray(z, dtype=np.float32))
    return x


def _run_generate(m, T, seed=0, shape=(3, 6, 6, 1)):
    x_T = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    model, rng = _FakeModel(T), _NoiseSource(seed + 1)
    out = _call(m, "generate", model, x_T.copy(), *_sched(T), rng)
    return x_T, _array(out, "the result of generate", shape), model, rng


@A5.check("loop_times", 2, "generate calls the model at t = T-1, T-2, ..., 1, as on the slide")
def _(m):
    T = 12
    _, _, model, _ = _run_generate(m, T)
    want = list(range(T - 1, 0, -1))
    if model.calls != want:
        got = model.calls
        if not got:
            raise Fail("generate never called predict_noise")
        detail = ""
        if got[0] == T:
            detail = "; the slide's loop starts at t = T - 1: for t in range(T - 1, 0, -1)"
        elif got[-1] == 0:
            detail = "; the loop must stop at t = 1 (range(T - 1, 0, -1) ends at 1)"
        elif got == want[::-1]:
            detail = "; the reverse process runs backwards, from t = T - 1 down to 1"
        k = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        raise Fail(f"with T={T} the model was called at t = {got}, expected {want} (first "
                   f"difference at call {k}){detail}")


@A5.check("loop_last_step", 1, "no noise is added at the last step (z = 0 at t = 1)")
def _(m):
    T = 2  # a single step, t = 1
    x_T, out, model, rng = _run_generate(m, T, seed=10)
    if model.calls != [1]:
        raise Fail(f"with T=2 the model should be called once, at t=1; got calls at {model.calls}")
    expected = _ddpm_loop_ref(x_T, T, _sched(T), [])
    mistakes = [(_ddpm_loop_ref(x_T, T, _sched(T), rng.draws, last_noise=True),
                 "at t = 1 the slide uses z = 0: the last step adds no noise")] if rng.draws else []
    _close(out, expected, "the result of generate", rtol=1e-4, atol=1e-5,
           context="with T=2 (one step, t=1)", mistakes=mistakes)


@A5.check("loop_result", 1, "generate's result matches the slide's loop (T = 12)")
def _(m):
    T = 12
    x_T, out, model, rng = _run_generate(m, T, seed=20)
    n = len(rng.draws)
    if n not in (T - 2, T - 1):
        raise Fail(f"generate drew noise from rng {n} times for T={T}: expected one z per step "
                   f"t = T-1..2 ({T - 2} draws; z = 0 at t = 1), each with "
                   "rng.standard_normal(x.shape)" + (" (do not use np.random.* here)" if n == 0
                                                    else ""))
    expected = _ddpm_loop_ref(x_T, T, _sched(T), rng.draws)
    _close(out, expected, "the result of generate", rtol=1e-3, atol=1e-4,
           context=f"with T={T}")


# =========================================================================== 06 DDIM step

A6 = _assignment(6, "ddim_step", "One DDIM step, with the clip and the recomputed noise",
                 "Generating New Images", ["ddim_timesteps", "ddim_step"], 45)


@A6.check("timesteps", 2, "ddim_timesteps(T, steps): t_k = 1 + floor(k T / steps), an int array")
def _(m):
    from .sampling import ddim_timesteps

    for T, steps in ((4000, 50), (4000, 100), (10, 3), (1000, 7), (4000, 3)):
        out = _call(m, "ddim_timesteps", T, steps)
        got = _array(out, f"ddim_timesteps({T}, {steps})", (steps,), kind="iu")
        want = ddim_timesteps(T, steps)
        exact = 1 + np.arange(steps) * T // steps
        if T in got:
            raise Fail(f"ddim_timesteps({T}, {steps}) contains t = T = {T}: alpha_bar_T is ~0 "
                       "and x0_hat would divide by ~0; start at t = 1")
        wrong = np.flatnonzero((got != want) & (got != exact))
        if wrong.size:
            k = int(wrong[0])
            raise Fail(f"ddim_timesteps({T}, {steps}) is wrong at k={k}: expected {want[k]}, got "
                       f"{got[k]}" + (" (the steps start at t = 1, not 0)"
                                      if np.array_equal(got, want - 1) else ""))


def _ddim_inputs(seed=0, shape=(4, 8, 8, 1)):
    rng = np.random.default_rng(seed)
    return (1.5 * rng.standard_normal(shape, dtype=np.float32),
            rng.standard_normal(shape, dtype=np.float32))


def _abar(t):
    return float(_sched(4000)[1][t])


def _ddim_ref(x, eps, abar_t, abar_prev, clip):
    from .sampling import ddim_step
    return ddim_step(x, eps, abar_t, abar_prev, eta=0.0, clip=clip)


def _ddim_student(m, x, eps, abar_t, abar_prev, clip):
    out = _call(m, "ddim_step", x.copy(), eps.copy(), abar_t, abar_prev, clip=clip)
    return _array(out, "x_{t'}", x.shape)


@A6.check("step_shape", 1, "ddim_step returns an array of x_t's shape, float32 for float32 in")
def _(m):
    x, eps = _ddim_inputs()
    out = _call(m, "ddim_step", x, eps, _abar(2000), _abar(1920), clip=True)
    _array(out, "x_{t'}", x.shape, np.float32)


@A6.check("no_clip", 2, "clip=False: x_t' = sqrt(abar_t') x0_hat + sqrt(1 - abar_t') eps")
def _(m):
    x, eps = _ddim_inputs(1)
    a, b = _abar(2000), _abar(1920)
    x0 = (x.astype(np.float64) - np.sqrt(1 - a) * eps) / np.sqrt(a)
    _close(_ddim_student(m, x, eps, a, b, False), _ddim_ref(x, eps, a, b, False), "x_{t'}",
           rtol=1e-4, atol=1e-5, context="with clip=False, t=2000 -> 1920", mistakes=[
               (x0, "that is x0_hat: the step returns x_t' = sqrt(abar_t') x0_hat + "
                    "sqrt(1 - abar_t') eps"),
               (np.clip(x0, -1, 1) * np.sqrt(b) + np.sqrt(1 - b) * eps,
                "clip=False must not clip x0_hat")])


@A6.check("clip", 3, "clip=True: x0_hat clipped to [-1, 1] and eps recomputed from it")
def _(m):
    x, eps = _ddim_inputs(2)
    a, b = _abar(2000), _abar(1920)
    x0 = (x.astype(np.float64) - np.sqrt(1 - a) * eps) / np.sqrt(a)
    x0c = np.clip(x0, -1, 1)
    _close(_ddim_student(m, x, eps, a, b, True), _ddim_ref(x, eps, a, b, True), "x_{t'}",
           rtol=1e-4, atol=1e-5, context="with clip=True, t=2000 -> 1920", mistakes=[
               (np.sqrt(b) * x0c + np.sqrt(1 - b) * eps,
                "x0_hat is clipped but eps is not recomputed from it: "
                "eps = (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t)"),
               (np.sqrt(b) * x0 + np.sqrt(1 - b) * eps, "x0_hat is not clipped to [-1, 1]")])


@A6.check("last_step", 1, "going to t' = 0 (abar_t' = 1) returns the clipped x0_hat")
def _(m):
    x, eps = _ddim_inputs(3)
    a = _abar(40)
    _close(_ddim_student(m, x, eps, a, 1.0, True), _ddim_ref(x, eps, a, 1.0, True), "x_0",
           rtol=1e-4, atol=1e-5, context="with abar_t' = 1 (the last step)")


@A6.check("noisiest_t", 1, "no NaN or inf near t = T, where abar_t ~ 1e-7 (clip=True)")
def _(m):
    x, eps = _ddim_inputs(4)
    a, b = _abar(3999), _abar(3919)
    _close(_ddim_student(m, x, eps, a, b, True), _ddim_ref(x, eps, a, b, True), "x_{t'}",
           rtol=1e-3, atol=1e-4, context="at t=3999 -> 3919")


# =========================================================================== command line

def _worker(key, path, time_limit):
    """The isolated side: grade, writing one protocol line per event to the real stdout."""
    out = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # anything else written to stdout (student prints, C code) is dropped

    def emit(event):
        out.write(_PROTOCOL + json.dumps(event) + "\n")
        out.flush()

    try:
        _grade_events(ASSIGNMENTS[key], path, time_limit, emit)
    except BaseException as exc:  # noqa: BLE001 - report, never a traceback
        emit({"event": "crash", "message": _describe(exc, path)})
    return 0


def _print_list():
    print("Assignments (the student files are in lessons/assignments/):")
    for a in ASSIGNMENTS.values():
        print(f"  {a.number:>2}  {a.name:<20} {a.title} (slide \"{a.slide}\"; "
              f"{len(a.checks)} checks, {_num(a.max_points)} points, ~{a.minutes} min)")
        for c in a.checks:
            print(f"        {_num(c.points):>2}  {c.id:<15} {c.description}")


def _parser():
    from ._cli import HelpFormatter, real_number

    p = argparse.ArgumentParser(
        prog="python -m tinyddpm.grade",
        description="Grade a student's assignment file, or a folder of them (one *.py per "
                    "student, named after the student).",
        epilog="examples:\n"
               "  python -m tinyddpm.grade --list\n"
               "  python -m tinyddpm.grade 1 lessons/assignments/01_cosine_schedule.py\n"
               "  python -m tinyddpm.grade ddim_step alice.py --json\n"
               "  python -m tinyddpm.grade 3 submissions/ --csv scores.csv\n"
               "exit status: 0 when grading ran (whatever the score), 2 on usage errors",
        formatter_class=HelpFormatter)
    p.add_argument("assignment", nargs="?",
                   help="number (1, 01), name (cosine_schedule) or both (01_cosine_schedule)")
    p.add_argument("path", nargs="?", help="a student .py file, or a folder of them")
    p.add_argument("--list", action="store_true", help="list the assignments and their checks")
    p.add_argument("--csv", metavar="FILE",
                   help="write the scores as CSV: student, one column per check, total, out_of")
    p.add_argument("--json", action="store_true", help="print the report(s) as JSON")
    p.add_argument("--time-limit", type=real_number(0, low_open=True), default=DEFAULT_TIME_LIMIT,
                   metavar="SECONDS",
                   help=f"per check and for the import (default {_num(DEFAULT_TIME_LIMIT)})")
    p.add_argument("--no-isolate", action="store_true",
                   help="grade in this process (faster, but a crash in student code stops it)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args.assignment, args.path, args.time_limit)
    if args.list:
        _print_list()
        return 0
    if not args.assignment or not args.path:
        parser.print_usage(sys.stderr)
        print("error: give an ASSIGNMENT and a student file or folder (or --list)",
              file=sys.stderr)
        return 2
    try:
        assignment = find_assignment(args.assignment)
    except KeyError as exc:
        print(f"error: {exc.args[0]} (python -m tinyddpm.grade --list)", file=sys.stderr)
        return 2
    if args.time_limit <= 0 or not math.isfinite(args.time_limit):
        print("error: --time-limit must be a positive number of seconds", file=sys.stderr)
        return 2
    kwargs = {"time_limit": args.time_limit, "isolate": not args.no_isolate}
    if os.path.isdir(args.path):
        reports = grade_folder(assignment, args.path, **kwargs)
        if not reports:
            print(f"error: no *.py files in the folder {args.path}", file=sys.stderr)
            return 2
    elif os.path.isfile(args.path):
        reports = [grade(assignment, args.path, **kwargs)]
    else:
        print(f"error: no such file or folder: {args.path}", file=sys.stderr)
        return 2
    if args.csv:
        write_csv(reports, args.csv, assignment)
    if args.json:
        data = [r.to_dict() for r in reports]
        print(json.dumps(data[0] if len(reports) == 1 and not os.path.isdir(args.path) else data,
                         indent=2))
    elif len(reports) == 1 and not os.path.isdir(args.path):
        print(reports[0].format())
    else:
        _print_class(assignment, reports)
    if args.csv:
        print(f"Scores written to {args.csv}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _print_class(assignment, reports):
    print(f"Assignment {assignment.key}: {len(reports)} files, out of {_num(assignment.max_points)}")
    width = max(len(r.student) for r in reports)
    for r in reports:
        failed = [c.id for c in r.checks if not c.passed]
        note = f"  failed: {', '.join(failed)}" if failed else ""
        if r.error:
            note += f"  ({r.error.splitlines()[0][:80]})"
        print(f"  {r.student:<{width}}  {_num(r.total):>4}/{_num(r.max_total)}{note}")


if __name__ == "__main__":
    sys.exit(main())
