"""The pieces every assignment is made of: checks, the calls they ask the student's code to make,
and the comparisons that decide them.

A check never runs student code. It names the **calls** to make (:class:`Call`: a function of the
student's file and its arguments), the runner (:mod:`.runner`) makes them in a sandboxed child
process, and the check's **judge** then decides, in the grader's own process, from the values the
calls returned (:class:`Results`). So nothing the student's code prints, patches or forges can
change a grade: the references (this package's own implementation) are computed here and never
leave this process.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["ASSIGNMENTS", "Assignment", "Call", "CheckResult", "Counted", "Fail", "FakeModel",
           "Opaque",
           "RecordingRng", "Report", "Results", "Rng", "find_assignment"]


class Fail(Exception):
    """A check failed; the message is shown to the student."""


class Counted(Exception):
    """The check's result is wrong only through a mistake that another check (``under``)
    already charges: one mistake costs points once, so this check keeps its points, and the
    report says so instead of "ok"."""

    def __init__(self, under="another check"):
        self.under = under
        super().__init__(f"counted under {under}: wrong here only through the mistake that "
                         f"check charges (one mistake costs points once)")


# --------------------------------------------------------------------------- calls

class Rng:
    """An argument: the child passes ``np.random.default_rng(seed)``."""

    def __init__(self, seed):
        self.seed = int(seed)


class RecordingRng(Rng):
    """An argument: a generator that records every draw (its ``standard_normal`` and ``normal``;
    any other method raises with a hint). The draws come back as ``results.recorded(i)["draws"]``,
    a list of float64 arrays."""


class FakeModel:
    """An argument: eps_theta(x, t) = 0.5 tanh(x) + 0.01 t / T (float32), which records the time
    steps it is called with (``results.recorded(i)["calls"]``: a list of ints). Calling it with a
    ``t`` that is neither an int nor ``np.full(len(x), t)`` raises ``ValueError`` with a hint."""

    def __init__(self, T):
        self.T = int(T)

    @staticmethod
    def predict(x, t, T):
        """The fake model's output, computed in this process (for the judges' references)."""
        return (0.5 * np.tanh(np.asarray(x)) + 0.01 * t / T).astype(np.float32)


@dataclass
class Call:
    """Call the student's function ``function`` with these arguments (arrays, numbers, strings,
    tuples/lists/dicts of them, or :class:`Rng`, :class:`RecordingRng`, :class:`FakeModel`)."""
    function: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


def call(function, *args, **kwargs):
    return Call(function, args, kwargs)


class Opaque:
    """What a call returned that is not an array, number, string or container (its type's name
    only: the object itself stays in the child)."""

    def __init__(self, type_name):
        self.type_name = type_name

    def __repr__(self):
        return f"<{self.type_name} object>"


class Results:
    """The outcome of a check's calls, in order. ``results[i]`` is what call ``i`` returned, or
    raises :class:`Fail` with what went wrong (the function is missing, raised, timed out, was
    not run). ``recorded(i)`` is what the fixtures of call ``i`` recorded."""

    def __init__(self, outcomes):
        self._outcomes = outcomes   # list of ("value", value, recorded) or ("error", text, recorded)

    def __len__(self):
        return len(self._outcomes)

    def __getitem__(self, i):
        kind, value, _ = self._outcomes[i]
        if kind == "error":
            raise Fail(value)
        return value

    def recorded(self, i):
        return self._outcomes[i][2]


# --------------------------------------------------------------------------- assignments

@dataclass
class Check:
    id: str
    points: float
    description: str
    calls: object      # a function returning the list of Call to make
    judge: object      # judge(results): returns when the check passes, raises Fail otherwise


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

    def check(self, id, points, description, calls):
        """Register ``judge(results)`` as a check: ``calls()`` gives the calls to make."""
        def register(judge):
            self.checks.append(Check(id, points, description, calls, judge))
            return judge
        return register

    def __repr__(self):
        return f"Assignment({self.key!r}, {len(self.checks)} checks, {self.max_points:g} points)"


ASSIGNMENTS = {}


def register(assignment):
    ASSIGNMENTS[assignment.key] = assignment
    return assignment


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


# --------------------------------------------------------------------------- reports

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
    """One student's grade. ``reason``: why points were lost at the level of the whole file ("no
    submission", "could not be imported", "time limit", "not implemented", ...; "" when every
    check ran). ``flags``: integrity findings for the teacher to review (they change no points).
    ``graded``: False when the file could not be graded at all (missing, unreadable).
    ``warnings``: what went wrong without costing points by itself (a notebook cell that
    raised)."""
    assignment: str
    path: str
    student: str
    checks: list = field(default_factory=list)
    error: str = ""
    reason: str = ""
    flags: list = field(default_factory=list)
    graded: bool = True
    warnings: list = field(default_factory=list)

    @property
    def total(self):
        return sum(c.points for c in self.checks)

    @property
    def max_total(self):
        return sum(c.max_points for c in self.checks)

    def to_dict(self):
        return {"assignment": self.assignment, "path": self.path, "student": self.student,
                "total": self.total, "max_total": self.max_total, "error": self.error,
                "reason": self.reason, "flags": list(self.flags), "graded": self.graded,
                "warnings": list(self.warnings),
                "checks": [asdict(c) for c in self.checks]}

    def format(self, flags=True):
        lines = [f"Assignment {self.assignment}: {self.path}"]
        if self.error:
            lines.append(f"  ! {self.error}")
        lines.extend(f"  ! {w}" for w in self.warnings)
        width = max((len(c.id) for c in self.checks), default=0)
        for c in self.checks:
            mark = "FAIL" if not c.passed else "ok* " if c.message else "ok  "
            lines.append(f"  {mark} {num(c.points)}/{num(c.max_points)}  {c.id:<{width}}  "
                         f"{c.description}")
            if c.message:
                lines.extend(f"         {line}" for line in c.message.splitlines())
        lines.append(f"Total: {num(self.total)}/{num(self.max_total)}")
        if flags and self.flags:
            lines.append("Flags for the teacher: " + "; ".join(self.flags))
        return "\n".join(lines)


def num(x):
    return f"{x:g}"


# =========================================================================== comparisons

def fmt(x):
    return f"{x:.6g}" if isinstance(x, (float, np.floating)) else str(x)


def array(value, what, shape=None, dtype=None, kind=None):
    """Check ``value`` is an ndarray with the given shape / dtype / dtype kind ('iu', 'f')."""
    if not isinstance(value, np.ndarray):
        got = type(value).__name__ if not isinstance(value, Opaque) else value.type_name
        raise Fail(f"{what} should be a NumPy array, got {got}")
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


def index(idx):
    return "(" + ", ".join(str(int(i)) for i in idx) + ")" if len(idx) != 1 else f"({int(idx[0])},)"


def close(got, expected, what, rtol=1e-5, atol=1e-6, where=None, mistakes=(), context="",
          accept=()):
    """Compare arrays of equal shape; Fail at the first wrong element, NaN or inf.

    ``where(idx) -> str`` names an element (default "element (i, j, ...)"); ``mistakes`` is a list
    of (wrong_expected, hint): when ``got`` matches one (with the same tolerance), the hint is
    added. ``accept``: results of mistakes that another check already charges (one mistake costs
    points once), each an array or (array, the id of the check that charges it): ``got``
    matching one of them raises :class:`Counted` (the check keeps its points, marked as such).
    """
    try:
        got = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        raise Fail(f"{what} should hold real numbers, got dtype "
                   f"{getattr(got, 'dtype', type(got).__name__)}") from None
    expected = np.asarray(expected, dtype=np.float64)
    if got.shape != expected.shape:
        raise Fail(f"{what} has the wrong shape: expected {expected.shape}, got {got.shape}")
    right = np.isclose(got, expected, rtol=rtol, atol=atol)
    if right.all():
        return
    for a in accept:                             # a mistake another check charges (the right
        a, under = a if isinstance(a, tuple) else (a, "another check")   # answer is not one)
        if np.shape(a) == got.shape and np.allclose(got, a, rtol=rtol, atol=atol, equal_nan=True):
            raise Counted(under)
    where = where or (lambda idx: f"element {index(idx)}")
    suffix = f" {context}" if context else ""
    for bad, label in ((np.isnan(got), "NaN"), (np.isinf(got) & np.isfinite(expected), "inf")):
        if bad.any():
            first = np.argwhere(bad)[0]
            hint = mistake(got, mistakes, rtol, atol)
            raise Fail(f"{what} contains {label}{suffix}: {int(bad.sum())} of {got.size} values, "
                       f"the first at {where(first)} (expected {fmt(expected[tuple(first)])})"
                       + (f"\nhint: {hint}" if hint else ""))
    wrong = ~right                               # not all right: some element is wrong
    first = tuple(np.argwhere(wrong)[0])
    message = (f"{what} is wrong at {where(first)}{suffix}: expected "
               f"{fmt(expected[first])}, got {fmt(got[first])}")
    if got.size > 1:
        message += f" ({int(wrong.sum())} of {got.size} values wrong)"
    hint = mistake(got, mistakes, rtol, atol)
    if hint:
        message += f"\nhint: {hint}"
    raise Fail(message)


def mistake(got, mistakes, rtol, atol):
    """The hint of the first known mistake ``got`` matches, or ''."""
    for alternative, hint in mistakes:
        alternative = np.asarray(alternative, dtype=np.float64)
        if alternative.shape == got.shape and np.allclose(got, alternative, rtol=rtol, atol=atol,
                                                          equal_nan=True):
            return hint
    return ""


def tuple_of(value, n, what, names):
    if not isinstance(value, (tuple, list)) or len(value) != n:
        got = f"a {type(value).__name__} of length {len(value)}" if isinstance(
            value, (tuple, list)) else (value.type_name if isinstance(value, Opaque)
                                        else type(value).__name__)
        raise Fail(f"{what} should return a tuple of {n} values ({', '.join(names)}), got {got}")
    return value


def t_at(idx):
    return f"t={int(idx[0])}"
