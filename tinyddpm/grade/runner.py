"""Grading: each check's calls run in the sandbox (:mod:`.sandbox`), what they returned is read
back (:mod:`.channel`), and every point is decided here, in this process, by the checks' judges
comparing those values with references computed here (:mod:`.framework`)."""
from __future__ import annotations

import os
import shutil
import signal
import tempfile

from .channel import Reader, Unreadable, clean, error_message
from .framework import (Assignment, CheckResult, Counted, Fail, Report, Results, find_assignment,
                        num)
from .sandbox import (DEFAULT_FILE_LIMIT, DEFAULT_MEMORY_LIMIT, DEFAULT_TIME_LIMIT,  # noqa: F401
                      reset_stop, run_child, sandbox_mode, stop_all)


# =========================================================================== grading one file

def grade(assignment, path, *, time_limit=DEFAULT_TIME_LIMIT, file_limit=DEFAULT_FILE_LIMIT,
          memory_limit=DEFAULT_MEMORY_LIMIT, student=None):
    """Grade one student's file (``.py``, or ``.ipynb``: its code cells); returns a
    :class:`Report` and never raises because of what the file contains.

    ``assignment``: an :class:`Assignment` or anything :func:`find_assignment` accepts.
    ``time_limit``: seconds per check (and for importing the file); ``file_limit``: seconds for
    the whole file; ``memory_limit``: MB of address space. ``student``: the name in the report
    (default: the file name without its suffix).
    Raises ``FileNotFoundError`` when ``path`` is not a file, ``ValueError`` for a bad limit.
    """
    from .submissions import student_name

    if not isinstance(assignment, Assignment):
        assignment = find_assignment(assignment)
    limits = _limits(time_limit, file_limit, memory_limit)
    path = os.fspath(path)
    if not os.path.lexists(path):
        raise FileNotFoundError(f"no such file: {path}")
    pending = _Pending(assignment, path, student or student_name(path)[0])
    pending.run(assignment, limits)
    return pending.judge(assignment, limits)


def _limits(time_limit, file_limit, memory_limit):
    """The limits as a dict, each checked: a positive, finite number. Raises ``ValueError``."""
    limits = {"time_limit": time_limit, "file_limit": file_limit, "memory_limit": memory_limit}
    for name, value in limits.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0 \
                or value == float("inf"):
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    return limits


class _Pending:
    """One submission on its way: read and scanned (here), its child run (:meth:`run`, in a
    worker thread in a class run), then judged (:meth:`judge`, in the calling thread: the
    references use the engine, which is not shared between threads)."""

    def __init__(self, assignment, path, student):
        from .integrity import scan
        from .submissions import clean_name, read_cells, read_code

        self.report = Report(assignment.key, path, clean_name(student))
        self.work = self.outcome = self.source = self.cells = None
        try:
            self.source = read_code(path)
            self.cells = read_cells(path) if path.endswith(".ipynb") else None
        except ValueError as exc:
            r = self.report
            r.graded, r.reason, r.error = False, "unreadable", str(exc)
            r.checks = [CheckResult(c.id, c.description, 0, c.points, False,
                                    "not run: the file could not be read")
                        for c in assignment.checks]
            return
        self.report.flags = scan(self.source, assignment)

    def run(self, assignment, limits):
        if self.source is None:
            return
        self.work = tempfile.mkdtemp(prefix="tinyddpm-grade-")
        self.outcome = run_child(assignment, self.source, self.work, limits["time_limit"],
                                 limits["file_limit"], limits["memory_limit"], self.cells)

    def judge(self, assignment, limits):
        if self.work is not None:
            try:
                _judge(assignment, self.report, self.work, self.outcome, limits["time_limit"],
                       limits["memory_limit"])
            finally:
                shutil.rmtree(self.work, ignore_errors=True)
                self.work = None
        return self.report


def _judge(assignment, report, work, outcome, time_limit, memory_limit):
    returncode, seconds, stopped = outcome
    out = os.path.join(work, "out")
    if os.path.isfile(os.path.join(out, "done.json")):
        returncode, stopped = 0, ""          # every check ran; how the process ended is moot
    reader = Reader(out)
    try:
        imported = reader.json("import.json")
    except Unreadable:
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
    elif stopped == "disk":
        ended = ("stopped: the code wrote more files or bytes than a submission may (20,000 "
                 "files, 512 MB)")
        report.reason = "disk limit"
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
    notebook = report.path.endswith(".ipynb")
    if notebook and isinstance(imported, dict) and isinstance(imported.get("cells"), list):
        for err in imported["cells"]:
            if not isinstance(err, dict):
                continue
            cell = err.get("cell") if isinstance(err.get("cell"), int) else "?"
            located = dict(err, kind="exception", function="x",
                           cell=err.get("at") if isinstance(err.get("at"), int) else cell)
            text = (f"time limit ({num(time_limit)} s)" if err.get("kind") == "timeout" else
                    error_message(located, time_limit, memory_limit).split(" raised ", 1)[-1])
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
        except Unreadable as exc:
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
        if message.startswith("what your code returned could not be read back"):
            report.flags.append(f"unreadable results in check {check.id}")
        report.checks.append(CheckResult(check.id, check.description,
                                         check.points if passed else 0, check.points, passed,
                                         message))
    if not report.reason:
        report.reason = "ended early" if not first_missing else _summary(kinds, report)
    if not report.error and (stopped or not first_missing):   # the child did not finish
        report.error = ended


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
    except Unreadable as exc:
        return False, f"what your code returned could not be read back ({clean(exc)})"
    while len(outcomes) < len(check.calls()):
        outcomes.append(("error", "not run: an earlier call of this check failed", {}))
    try:
        check.judge(Results(outcomes))
    except Fail as exc:
        return False, str(exc)
    except Counted as exc:
        return True, str(exc)
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
    limits = _limits(time_limit, file_limit, memory_limit)
    files, notes = find_submissions(folder)
    pending = [_Pending(assignment, path, student) for student, path in files.items()]
    reports = []
    reset_stop()
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
        except BaseException:
            stop_all()          # interrupted: the children running now stop at once
            raise
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
