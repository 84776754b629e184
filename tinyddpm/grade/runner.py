"""Running a student's file in a sandbox, and deciding every point in this process.

For each submission :func:`grade`:

1. copies the student's code (a ``.py`` file, or the code cells of a notebook) into a fresh
   temporary folder, with the inputs of every call the checks ask for (``request.json`` and
   ``.npy`` files) and a ``lib/`` folder through which NumPy alone can be imported;
2. runs ``python -I -S _child.py FOLDER`` (see :mod:`._child`) in its own session and process
   group, inside a new PID namespace where ``unshare`` allows it (when the child ends, the kernel
   ends every process it started), with no pipe to this process (output goes to /dev/null), as
   ``nobody`` when the grader runs as root, and with resource limits it sets on itself before any
   student code runs: address space (``memory_limit`` MB), CPU time, processes, file size, open
   files, no core files;
3. waits at most ``file_limit`` seconds, then kills the whole group (and, without a namespace,
   every process still carrying this run's token), so the class run's time is bounded whatever
   the student does;
4. reads the values the calls returned (``np.load(allow_pickle=False)``, sizes and types checked)
   and lets each check's judge compare them with references computed here.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

from .framework import Assignment, CheckResult, Fail, FakeModel, Opaque, RecordingRng, Report, \
    Results, Rng, find_assignment, num

#: Seconds each check (and the import of the student's file) may run.
DEFAULT_TIME_LIMIT = 10.0
#: Seconds a whole submission may run (all its checks, and Python's start-up).
DEFAULT_FILE_LIMIT = 60.0
#: Seconds the child may go without finishing a check beyond its time limit before the grader
#: stops it (the alarm inside should have); and for Python's start-up and the import.
STALL_GRACE, STARTUP_GRACE = 2.0, 10.0
#: Address space of the student's process, in MB.
DEFAULT_MEMORY_LIMIT = 2048
#: Processes the student's code may start beyond those its user already runs.
PROCESS_LIMIT = 32
#: Largest file the student's process may write (bytes): its results, or anything else.
FILE_SIZE_LIMIT = 64 * 2 ** 20
#: Open files the student's process may hold.
OPEN_FILES_LIMIT = 64
#: Largest total of the arrays read back from one submission (bytes).
RESULTS_LIMIT = 256 * 2 ** 20

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_child.py")


def clean(text, limit=300):
    """Student-controlled text made safe to show: printable characters only, at most ``limit``."""
    text = "".join(ch if ch.isprintable() else "?" for ch in str(text))
    return text if len(text) <= limit else text[:limit - 3] + "..."


# =========================================================================== the sandbox

_namespace = None
_mode = None


def sandbox_mode():
    """How the child is confined beyond its limits and namespace: "landlock" (the kernel's
    Landlock LSM: it reads only Python, NumPy and its folder, writes only its results; as root it
    also loses every capability), "own user" (root without Landlock: a fresh unprivileged uid)
    or "none" (a normal user without Landlock: it runs as that user)."""
    global _mode
    if _mode is None:
        from ._confine import landlock_abi

        _mode = "landlock" if sys.platform.startswith("linux") and landlock_abi() else \
            "own user" if os.geteuid() == 0 else "none"
    return _mode


def namespace_prefix():
    """The ``unshare`` command that puts the child in its own PID namespace (so the kernel ends
    every process it started when it ends), or [] where that is not possible."""
    global _namespace
    if _namespace is None:
        _namespace = []
        tool = shutil.which("unshare")
        if sys.platform.startswith("linux") and tool:
            flags = ["--pid", "--fork", "--kill-child"]
            if os.geteuid() != 0:
                flags = ["--user"] + flags
            try:
                ok = subprocess.run([tool, *flags, "true"], capture_output=True,
                                    timeout=10).returncode == 0
            except (OSError, subprocess.SubprocessError):
                ok = False
            _namespace = [tool, *flags] if ok else []
    return list(_namespace)


def _processes_of(uid):
    count = 0
    for pid in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("Uid:"):
                            count += int(line.split()[1]) == uid
                            break
            except OSError:
                pass
    return count


def _with_token(token):
    """Pids of the processes whose environment carries ``token`` (this run's, inherited)."""
    found = []
    needle = f"TINYDDPM_GRADE_TOKEN={token}".encode()
    for pid in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if needle in f.read().split(b"\0"):
                        found.append(int(pid))
            except OSError:
                pass
    return found


def _kill_everything(proc, token):
    """Kill the child's process group, and anything else carrying the token; reap the child."""
    for _ in range(20):
        with _suppress():
            os.killpg(proc.pid, signal.SIGKILL)
        left = _with_token(token)
        for pid in left:
            with _suppress():
                os.kill(pid, signal.SIGKILL)
        if not left:
            break
        time.sleep(0.05)
    with _suppress():
        proc.wait(timeout=10)


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], (OSError, subprocess.SubprocessError))


# =========================================================================== requests and results

class _Inputs:
    """Encodes call arguments into JSON nodes, arrays into ``inputs/N.npy``."""

    def __init__(self, work):
        self.work, self.count = work, 0
        os.makedirs(os.path.join(work, "inputs"))

    def __call__(self, v):
        if isinstance(v, np.ndarray):
            name = f"inputs/{self.count}.npy"
            self.count += 1
            np.save(os.path.join(self.work, name), v, allow_pickle=False)
            return {"t": "array", "f": name}
        if isinstance(v, bool):
            return {"t": "bool", "v": v}
        if isinstance(v, (int, np.integer)):
            return {"t": "int", "v": int(v)}
        if isinstance(v, (float, np.floating)):
            return {"t": "float", "v": float(v)}
        if isinstance(v, str):
            return {"t": "str", "v": v}
        if v is None:
            return {"t": "none"}
        if isinstance(v, RecordingRng):
            return {"t": "recording_rng", "seed": v.seed}
        if isinstance(v, Rng):
            return {"t": "rng", "seed": v.seed}
        if isinstance(v, FakeModel):
            return {"t": "fake_model", "T": v.T}
        if isinstance(v, (tuple, list)):
            return {"t": "tuple" if isinstance(v, tuple) else "list",
                    "items": [self(x) for x in v]}
        if isinstance(v, dict):
            return {"t": "dict", "items": [[k, self(x)] for k, x in v.items()]}
        raise TypeError(f"cannot pass {type(v).__name__} to the student's code")


class _Unreadable(Exception):
    """What the child wrote cannot be read back: a broken or forged result file."""


class _Reader:
    """Reads what the child wrote, trusting nothing: names, sizes, types, depth."""

    def __init__(self, out):
        self.out, self.bytes = out, 0

    def json(self, name):
        path = os.path.join(self.out, name)
        if not os.path.isfile(path) or os.path.islink(path):
            return None
        if os.path.getsize(path) > 8 * 2 ** 20:
            raise _Unreadable(f"{name} is too large")
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except (ValueError, OSError, RecursionError) as exc:
            raise _Unreadable(f"{name}: {type(exc).__name__}") from None

    def value(self, node, folder, depth=0):
        if depth > 8 or not isinstance(node, dict):
            raise _Unreadable("malformed value")
        t = node.get("t")
        if t in ("array", "scalar"):
            name = node.get("f")
            if not isinstance(name, str) or not re.fullmatch(r"\d{1,6}\.npy", name):
                raise _Unreadable("malformed array name")
            path = os.path.join(folder, name)
            if not os.path.isfile(path) or os.path.islink(path):
                raise _Unreadable("missing array file")
            self.bytes += os.path.getsize(path)
            if self.bytes > RESULTS_LIMIT:
                raise _Unreadable("the arrays returned are too large")
            try:
                a = np.load(path, allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise _Unreadable(f"array file: {type(exc).__name__}") from None
            if not isinstance(a, np.ndarray) or a.dtype.kind not in "biuf":
                return Opaque("ndarray of an unsupported dtype")
            if t == "scalar":
                return a[()] if a.ndim == 0 else Opaque("scalar")
            return a
        if t == "int" and isinstance(node.get("v"), int) and not isinstance(node["v"], bool):
            return node["v"]
        if t == "float" and isinstance(node.get("v"), (int, float)):
            return float(node["v"])
        if t == "float" and node.get("v") in ("nan", "inf", "-inf"):
            return float(node["v"])
        if t == "bool" and isinstance(node.get("v"), bool):
            return node["v"]
        if t == "str" and isinstance(node.get("v"), str):
            return clean(node["v"])
        if t == "none":
            return None
        if t in ("tuple", "list") and isinstance(node.get("items"), list):
            items = [self.value(n, folder, depth + 1) for n in node["items"][:1000]]
            return tuple(items) if t == "tuple" else items
        if t == "dict" and isinstance(node.get("items"), list):
            out = {}
            for pair in node["items"][:1000]:
                if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
                    raise _Unreadable("malformed dict")
                out[clean(pair[0], 100)] = self.value(pair[1], folder, depth + 1)
            return out
        if t == "other":
            return Opaque(clean(node.get("name", "object"), 60))
        raise _Unreadable("malformed value")


def error_message(err, time_limit, memory_limit):
    """What a call's failure (as the child reported it) means for the student."""
    if not isinstance(err, dict):
        return "the call failed (no details)"
    name = clean(err.get("function", "?"), 60)
    kind = err.get("kind")
    line = err.get("line")
    where = ""
    if isinstance(line, int):
        code = err.get("code")
        cell = err.get("cell")
        at = f"cell {cell}, line {line}" if isinstance(cell, int) else f"line {line}"
        where = f" ({at}: {clean(code, 120)})" if code else f" ({at})"
    text = clean(err.get("message") or "", 200)
    exc = f"{clean(err.get('type', 'Exception'), 60)}{': ' + text if text else ''}{where}"
    if kind == "missing":
        return f"your file has no function `{name}`"
    if kind == "not_callable":
        return f"`{name}` in your file is not a function"
    if kind == "not_implemented":
        return f"`{name}` is not implemented yet (it raises NotImplementedError)"
    if kind == "timeout":
        return (f"time limit: `{name}` was stopped after {num(time_limit)} s (an infinite loop, "
                "or a very slow loop?)")
    if kind == "skipped":
        return (f"not run: `{name}` already went past the time limit (in check "
                f"{clean(err.get('after', '?'), 40)})")
    if kind == "unsaveable":
        return (f"what `{name}` returned could not be passed back to the grader: an array "
                f"larger than {FILE_SIZE_LIMIT // 2 ** 20} MB? ({exc})")
    if kind == "memory":
        return f"`{name}` ran out of memory (the limit is {memory_limit} MB): {exc}"
    return f"`{name}` raised {exc}"


# =========================================================================== grading one file

def grade(assignment, path, *, time_limit=DEFAULT_TIME_LIMIT, file_limit=DEFAULT_FILE_LIMIT,
          memory_limit=DEFAULT_MEMORY_LIMIT, student=None, source=None):
    """Grade one student's file (``.py``, or ``.ipynb``: its code cells); returns a
    :class:`Report` and never raises because of what the file contains.

    ``assignment``: an :class:`Assignment` or anything :func:`find_assignment` accepts.
    ``time_limit``: seconds per check (and for importing the file); ``file_limit``: seconds for
    the whole file; ``memory_limit``: MB of address space. ``student``: the name in the report
    (default: the file name without its suffix). ``source``: the code to grade, if already read.
    Raises ``FileNotFoundError`` when ``path`` is not a file, ``ValueError`` for a bad limit.
    """
    from .integrity import scan
    from .submissions import clean_name, read_cells, read_code, student_name

    if not isinstance(assignment, Assignment):
        assignment = find_assignment(assignment)
    for name, value in (("time_limit", time_limit), ("file_limit", file_limit),
                        ("memory_limit", memory_limit)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0 \
                or value == float("inf"):
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    path = os.fspath(path)
    if not os.path.lexists(path):
        raise FileNotFoundError(f"no such file: {path}")
    report = Report(assignment.key, path, clean_name(student or student_name(path)[0]))
    cells = None
    if source is None:
        try:
            source = read_code(path)
            cells = read_cells(path) if path.endswith(".ipynb") else None
        except ValueError as exc:
            report.graded, report.reason, report.error = False, "unreadable", str(exc)
            report.checks = [CheckResult(c.id, c.description, 0, c.points, False,
                                         "not run: the file could not be read")
                             for c in assignment.checks]
            return report
    report.flags = scan(source, assignment)
    work = tempfile.mkdtemp(prefix="tinyddpm-grade-")
    try:
        outcome = _run_child(assignment, source, work, time_limit, file_limit, memory_limit,
                             cells)
        _judge(assignment, report, work, outcome, time_limit, memory_limit)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


class _Pending:
    """A submission whose child has run (in a worker thread) and that waits to be judged (in the
    calling thread: the references use the engine, which is not shared between threads)."""

    def __init__(self, assignment, path, student, limits):
        from .integrity import scan
        from .submissions import clean_name, read_cells, read_code

        self.report = Report(assignment.key, path, clean_name(student))
        self.work = self.outcome = self.source = self.cells = None
        try:
            self.source = read_code(path)
            self.cells = read_cells(path) if path.endswith(".ipynb") else None
        except ValueError:
            self.report = grade(assignment, path, student=student, **limits)  # reports it
            return
        self.report.flags = scan(self.source, assignment)

    def run(self, assignment, limits):
        if self.source is None:
            return
        self.work = tempfile.mkdtemp(prefix="tinyddpm-grade-")
        self.outcome = _run_child(assignment, self.source, self.work, limits["time_limit"],
                                  limits["file_limit"], limits["memory_limit"], self.cells)

    def judge(self, assignment, limits):
        if self.work is not None:
            try:
                _judge(assignment, self.report, self.work, self.outcome, limits["time_limit"],
                       limits["memory_limit"])
            finally:
                shutil.rmtree(self.work, ignore_errors=True)
        return self.report


def _run_child(assignment, source, work, time_limit, file_limit, memory_limit, cells=None):
    """Run the child; returns (returncode, seconds, stopped): stopped is "" (it ended), "file"
    (the file limit) or "stall" (a check ran past its time limit and the alarm did not stop
    it)."""
    with open(os.path.join(work, "submission.py"), "w", encoding="utf-8") as f:
        f.write(source)
    for k, code in cells or ():                  # a notebook: its cells run one by one
        with open(os.path.join(work, f"cell_{k}.py"), "w", encoding="utf-8") as f:
            f.write(code)
    lib = os.path.join(work, "lib")
    os.makedirs(lib)
    numpy_dir = os.path.dirname(np.__file__)
    for name in ("numpy", "numpy.libs"):
        target = os.path.join(os.path.dirname(numpy_dir), name)
        if os.path.isdir(target):
            os.symlink(target, os.path.join(lib, name))
    encode = _Inputs(work)
    checks = [{"id": c.id, "calls": [{"fn": k.function, "args": [encode(a) for a in k.args],
                                      "kwargs": {n: encode(a) for n, a in k.kwargs.items()}}
                                     for k in c.calls()]} for c in assignment.checks]
    out = os.path.join(work, "out")
    os.makedirs(out)
    for name in ("_child.py", "_confine.py"):     # the child runs from its own folder
        shutil.copy(os.path.join(os.path.dirname(CHILD), name), os.path.join(work, name))
    mode = sandbox_mode()
    # without Landlock, root's child becomes a user of its own (no other child can reach its
    # folder); with Landlock it keeps uid 0 without capabilities, confined to its folder
    uid = secrets.randbelow(2 ** 30) + 2 ** 30 if mode == "own user" else os.geteuid()
    limits = {"as": int(memory_limit * 2 ** 20), "cpu": int(file_limit) + 2,
              "nproc": (0 if mode == "own user" else _processes_of(uid)) + PROCESS_LIMIT,
              "fsize": FILE_SIZE_LIMIT, "nofile": OPEN_FILES_LIMIT}
    request = {"source": "submission.py", "time_limit": float(time_limit), "checks": checks,
               "cells": [k for k, _ in cells] if cells is not None else None,
               "landlock": mode == "landlock", "drop": [uid, uid] if mode == "own user" else None,
               "limits": limits}
    with open(os.path.join(work, "request.json"), "w", encoding="utf-8") as f:
        json.dump(request, f)
    if mode == "own user":      # its folder is its own, and nobody else's
        for dirpath, dirnames, filenames in os.walk(work):
            os.chown(dirpath, uid, uid)
            os.chmod(dirpath, 0o700)
            for name in filenames:
                os.chown(os.path.join(dirpath, name), uid, uid)
                os.chmod(os.path.join(dirpath, name), 0o600)
        os.chmod(work, 0o500)
    token = secrets.token_hex(8)
    env = {"PATH": "/usr/bin:/bin", "HOME": work, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "TINYDDPM_GRADE_TOKEN": token}
    cmd = namespace_prefix() + [sys.executable, "-I", "-S", os.path.join(work, "_child.py"),
                                work]
    start = time.monotonic()
    with open(os.path.join(work, "stderr.txt"), "wb") as stderr:  # the child's own start-up
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=stderr,
                                start_new_session=True, close_fds=True)
    stopped = ""
    progress, last = 0, start
    try:
        while True:
            try:
                proc.wait(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            done = len(os.listdir(out))        # a file for the start, the import, each check
            if done != progress:
                progress, last = done, now
            if now - start > file_limit:
                stopped = "file"
                break
            # a check (or the import) past its time limit that the alarm did not stop
            if now - last > time_limit + (STARTUP_GRACE if progress < 2 else STALL_GRACE):
                stopped = "stall"
                break
    finally:
        _kill_everything(proc, token)
    return proc.returncode, time.monotonic() - start, stopped


def _judge(assignment, report, work, outcome, time_limit, memory_limit):
    returncode, seconds, stopped = outcome
    out = os.path.join(work, "out")
    if os.path.isfile(os.path.join(out, "done.json")):
        returncode, stopped = 0, ""          # every check ran; how the process ended is moot
    reader = _Reader(out)
    try:
        imported = reader.json("import.json")
    except _Unreadable:
        imported = None
    if not stopped and not os.path.isfile(os.path.join(out, "started.json")):
        # the child failed before any student code ran: the grader's problem, not the student's
        try:
            with open(os.path.join(work, "stderr.txt"), "rb") as f:
                f.seek(max(0, os.path.getsize(f.name) - 2000))
                tail = f.read().decode("utf-8", "replace").strip().splitlines()[-1:]
        except OSError:
            tail = []
        report.graded, report.reason = False, "grader error"
        report.error = ("the grader could not start the student's process (exit code "
                        f"{returncode}){': ' + clean(tail[0]) if tail else ''}")
        report.checks = [CheckResult(c.id, c.description, 0, c.points, False, "not run: "
                                     "grader error") for c in assignment.checks]
        return
    if stopped == "file":
        ended = (f"time limit: the whole file was stopped after {num(round(seconds))} s (its "
                 "file limit)")
        report.reason = "time limit"
    elif stopped:
        ended = (f"time limit: stopped after {num(time_limit)} s (the check's limit), by the "
                 "grader: the code did not stop at the time limit's alarm (an infinite loop "
                 "with signals blocked or ignored?)")
        report.reason = "time limit"
    elif returncode is not None and returncode < 0:
        sig = -returncode
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        reasons = {"SIGXCPU": "CPU time limit", "SIGKILL": "killed (memory or process limit?)",
                   "SIGSEGV": "crashed", "SIGXFSZ": "file size limit"}
        ended = f"the process ended by {name}: {reasons.get(name, 'crashed')}"
        report.reason = reasons.get(name, "crashed")
    elif returncode not in (0, None):
        ended = (f"the process ended early (exit code {returncode}): did the code exit Python "
                 "(sys.exit, os._exit) or crash it?")
        report.reason = "ended early"
    else:
        ended = "the process ended before this check (did the code exit Python?)"
    if isinstance(imported, dict) and imported.get("ok") is False:
        err = imported.get("error") or {}
        if err.get("kind") == "timeout":
            report.error = (f"importing the file took longer than the time limit "
                            f"({num(time_limit)} s): is there a loop at the top level of your "
                            "file?")
            report.reason = "time limit"
        else:
            err.setdefault("function", "import")
            report.error = "your file could not be imported: " + \
                error_message(dict(err, kind="exception"), time_limit, memory_limit).split(
                    " raised ", 1)[-1]
            report.reason = "could not be imported"
        for c in assignment.checks:
            report.checks.append(CheckResult(c.id, c.description, 0, c.points, False,
                                             "not run: the file could not be imported (see above)"))
        return
    if isinstance(imported, dict) and isinstance(imported.get("cells"), list):
        for err in imported["cells"]:
            if not isinstance(err, dict):
                continue
            cell = err.get("cell") if isinstance(err.get("cell"), int) else "?"
            text = (f"time limit ({num(time_limit)} s)" if err.get("kind") == "timeout" else
                    error_message(dict(err, kind="exception", function="x"), time_limit,
                                  memory_limit).split(" raised ", 1)[-1])
            report.warnings.append(f"cell {cell} raised {text}; the grader went on with the "
                                   "next cell (it runs the code cells with NumPy only)")
    if imported is None:
        report.error = ended.replace("before this check", "while importing the file")
        report.reason = report.reason or "ended early"
    first_missing = True
    kinds = []
    for i, check in enumerate(assignment.checks):
        data = None
        try:
            data = reader.json(f"{i}.json")
        except _Unreadable as exc:
            message = f"what your code returned could not be read back ({clean(exc)})"
            report.flags.append(f"unreadable results in check {check.id}")
            report.checks.append(CheckResult(check.id, check.description, 0, check.points,
                                             False, message))
            continue
        if data is None:
            prefix = "stopped here: " if first_missing and imported is not None else "not run: "
            first_missing = False
            report.checks.append(CheckResult(check.id, check.description, 0, check.points,
                                             False, prefix + ended))
            continue
        passed, message = _decide(check, data, reader, os.path.join(out, str(i)), time_limit,
                                  memory_limit, kinds)
        report.checks.append(CheckResult(check.id, check.description,
                                         check.points if passed else 0, check.points, passed,
                                         message))
    if not report.reason:
        report.reason = "ended early" if not first_missing else _summary(kinds, report)
    if report.error == "" and report.reason in ("time limit", "crashed", "ended early",
                                                "CPU time limit", "file size limit") \
            or report.reason.startswith("killed"):
        report.error = report.error or ended


def _decide(check, data, reader, folder, time_limit, memory_limit, kinds):
    """(passed, message) of one check from what the child returned; the judge decides."""
    calls = data.get("calls") if isinstance(data, dict) else None
    if not isinstance(calls, list):
        return False, "what your code returned could not be read back"
    outcomes = []
    try:
        for c in calls[:len(check.calls())]:
            recorded = {}
            if isinstance(c.get("recorded"), dict):
                recorded = {k: reader.value(v, folder) for k, v in c["recorded"].items()
                            if k in ("draws", "calls")}
            if "value" in c:
                outcomes.append(("value", reader.value(c["value"], folder), recorded))
            else:
                err = c.get("error")
                kinds.append(err.get("kind") if isinstance(err, dict) else None)
                outcomes.append(("error", error_message(err, time_limit, memory_limit),
                                 recorded))
    except _Unreadable as exc:
        return False, f"what your code returned could not be read back ({clean(exc)})"
    while len(outcomes) < len(check.calls()):
        outcomes.append(("error", "not run: an earlier call of this check failed", {}))
    try:
        check.judge(Results(outcomes))
    except Fail as exc:
        return False, str(exc)
    return True, ""


def _summary(kinds, report):
    """The file-level reason for lost points, from the kinds of failed calls."""
    failed = [c for c in report.checks if not c.passed]
    if not failed:
        return ""
    if kinds and all(k == "not_implemented" for k in kinds) and len(failed) == len(report.checks):
        return "not implemented"
    for kind, text in (("timeout", "time limit"), ("memory", "memory limit"),
                       ("missing", "missing function")):
        if kind in kinds:
            return text
    return "wrong results"


def grade_folder(assignment, folder, *, roster=None, progress=None, jobs=1,
                 time_limit=DEFAULT_TIME_LIMIT, file_limit=DEFAULT_FILE_LIMIT,
                 memory_limit=DEFAULT_MEMORY_LIMIT):
    """Grade a class folder: one ``.py`` or ``.ipynb`` per student, named after the student
    (files starting with ``_`` or ``.`` are skipped). Returns (reports, notes).

    ``roster``: a list of student names; each one without a file gets a report with reason "no
    submission" (``graded`` False), and files of students not on it are flagged.
    ``progress(i, n, student)`` is called as each file is judged. ``jobs``: how many students'
    code runs at once (each child is limited as in :func:`grade`; the judging stays in this
    thread). The limits are as for :func:`grade`.
    """
    from concurrent.futures import ThreadPoolExecutor

    from .submissions import find_submissions, student_name

    if not isinstance(assignment, Assignment):
        assignment = find_assignment(assignment)
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs must be a whole number >= 1, got {jobs!r}")
    limits = {"time_limit": time_limit, "file_limit": file_limit, "memory_limit": memory_limit}
    files, notes = find_submissions(folder)
    pending = [_Pending(assignment, path, student, limits) for student, path in files.items()]
    reports = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(p.run, assignment, limits) for p in pending]
        try:
            for i, (future, p, (student, path)) in enumerate(zip(futures, pending,
                                                                 files.items())):
                future.result()
                if progress:
                    progress(i, len(files), student)
                report = p.judge(assignment, limits)
                problem = student_name(path)[1]
                if problem:
                    report.flags.insert(0, f"file name: {problem}")
                if roster is not None and student not in roster:
                    report.flags.insert(0, "not on the roster")
                reports.append(report)
        finally:
            for future in futures:
                future.cancel()
            for p in pending:
                if p.work:
                    shutil.rmtree(p.work, ignore_errors=True)
    for student in roster or ():
        if student not in files:
            reports.append(Report(assignment.key, "", student, [
                CheckResult(c.id, c.description, 0, c.points, False, "no submission")
                for c in assignment.checks], reason="no submission", graded=False))
    order = {name: i for i, name in enumerate(roster or ())}
    reports.sort(key=lambda r: (order.get(r.student, len(order)), r.student))
    return reports, notes
