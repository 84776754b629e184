"""``python -m tinyddpm.grade``: grade one file, or a class folder."""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading

from . import assignments  # noqa: F401  (registers them)
from .framework import ASSIGNMENTS, find_assignment, num
from .runner import DEFAULT_FILE_LIMIT, DEFAULT_MEMORY_LIMIT, DEFAULT_TIME_LIMIT, grade, \
    grade_folder

EXIT_OK, EXIT_NOT_ALL_GRADED, EXIT_USAGE = 0, 1, 2


def print_list():
    print("Assignments (the student files are in lessons/assignments/):")
    for a in ASSIGNMENTS.values():
        print(f"  {a.number:>2}  {a.name:<20} {a.title} (slide \"{a.slide}\"; "
              f"{len(a.checks)} checks, {num(a.max_points)} points, ~{a.minutes} min)")
        for c in a.checks:
            print(f"        {num(c.points):>2}  {c.id:<21} {c.description}")


def parser():
    from .._cli import HelpFormatter, real_number, whole_number
    from .integrity import DEFAULT_SIMILARITY

    p = argparse.ArgumentParser(
        prog="python -m tinyddpm.grade",
        description="Grade a student's assignment file (.py, or a notebook's code cells), or a "
                    "class folder of them (one file per student, named after the student). The "
                    "student's code runs in a sandboxed child process; every point is decided "
                    "in this one.",
        epilog="examples:\n"
               "  python -m tinyddpm.grade --list\n"
               "  python -m tinyddpm.grade 1 lessons/assignments/01_cosine_schedule.py\n"
               "  python -m tinyddpm.grade ddim_step alice.ipynb --json\n"
               "  python -m tinyddpm.grade 3 submissions/ --csv scores.csv --roster names.txt "
               "--feedback feedback/\n"
               "exit status: 0 when every submission was graded (whatever the scores), 1 when "
               "one could not be\n(a student on the roster without a file, an unreadable file), "
               "or with --check when that check failed;\n2 on usage errors",
        formatter_class=HelpFormatter)
    p.add_argument("assignment", nargs="?",
                   help="number (1, 01), name (cosine_schedule) or both (01_cosine_schedule)")
    p.add_argument("path", nargs="?", help="a student's .py or .ipynb file, or a folder of them")
    p.add_argument("--list", action="store_true", help="list the assignments and their checks")
    p.add_argument("--csv", metavar="FILE",
                   help="write the scores as CSV: student, one column per check, total, out_of, "
                        "reason, flags, notes")
    p.add_argument("--roster", metavar="FILE",
                   help="the class list, one name per line: a student without a file gets a "
                        "row 'no submission'")
    p.add_argument("--feedback", metavar="DIR",
                   help="write one Markdown report per student to DIR/<student>.md")
    p.add_argument("--json", action="store_true", help="print the report(s) as JSON")
    p.add_argument("--check", metavar="ID",
                   help="report only this check, exit 1 when it fails (for GitHub Classroom)")
    p.add_argument("--time-limit", type=real_number(0, 3600, low_open=True),
                   default=DEFAULT_TIME_LIMIT, metavar="SECONDS",
                   help="per check, and for importing the file")
    p.add_argument("--file-limit", type=real_number(0, 36000, low_open=True),
                   default=DEFAULT_FILE_LIMIT, metavar="SECONDS",
                   help="for a whole file, Python's start-up included")
    p.add_argument("--memory-limit", type=whole_number(256, 2 ** 20),
                   default=DEFAULT_MEMORY_LIMIT, metavar="MB",
                   help="address space of the student's process")
    p.add_argument("--jobs", type=whole_number(1, 64), default=1, metavar="N",
                   help="grade N students' files at once (a class folder)")
    p.add_argument("--similarity", type=real_number(0, 1), default=DEFAULT_SIMILARITY,
                   metavar="FRACTION",
                   help="flag pairs of a class's files at least this similar (copydetect)")
    p.add_argument("--solutions", metavar="DIR",
                   help="also compare a class's files with the solutions in DIR (NN_name.py)")
    p.add_argument("--no-isolate", action="store_true", help=argparse.SUPPRESS)
    return p


def _usage(parser_, message):
    parser_.print_usage(sys.stderr)
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


class _Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP: stop as on Ctrl-C (the children are killed on the way out)."""


def _on_signal(signum, frame):
    raise _Stopped(signum)


def main(argv=None):
    """The command line; returns the exit status (130 or 128 + the signal when interrupted:
    every child is killed and nothing is written)."""
    import signal

    handled = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            handled[sig] = signal.signal(sig, _on_signal)
    try:
        return _main(argv)
    except KeyboardInterrupt as exc:
        code = 128 + exc.args[0] if isinstance(exc, _Stopped) else 130
        print("\ngrading interrupted: its processes were stopped; no scores or feedback were "
              "written", file=sys.stderr)
        return code
    finally:
        for sig, previous in handled.items():
            signal.signal(sig, previous)


def _main(argv=None):
    p = parser()
    args = p.parse_args(argv)
    if args.list:
        print_list()
        return EXIT_OK
    if args.no_isolate:
        return _usage(p, "--no-isolate was removed: student code always runs in a sandboxed "
                         "child, and the grade is decided outside it")
    if not args.assignment or not args.path:
        return _usage(p, "give an ASSIGNMENT and a student file or folder (or --list)")
    try:
        assignment = find_assignment(args.assignment)
    except KeyError as exc:
        return _usage(p, f"{exc.args[0]} (python -m tinyddpm.grade --list)")
    if args.check and args.check not in [c.id for c in assignment.checks]:
        return _usage(p, f"--check {args.check!r}: assignment {assignment.key} has the checks "
                         + ", ".join(c.id for c in assignment.checks))
    folder = os.path.isdir(args.path)
    if not folder and not os.path.lexists(args.path):
        return _usage(p, f"no such file or folder: {args.path}")
    if not folder and (os.path.islink(args.path) or not os.path.isfile(args.path)):
        return _usage(p, f"{args.path}: not a regular file (a symbolic link, a FIFO, a device?)")
    if not folder and args.path.endswith((".py", ".ipynb")) is False:
        return _usage(p, f"{args.path}: a submission is a .py file or a .ipynb notebook")
    if not folder and (args.roster or args.solutions):
        return _usage(p, "--roster and --solutions apply to a class folder, not one file")
    roster = None
    if args.roster:
        from .submissions import read_roster
        try:
            roster = read_roster(args.roster)
        except ValueError as exc:
            return _usage(p, str(exc))
    if args.solutions and not os.path.isdir(args.solutions):
        return _usage(p, f"--solutions {args.solutions}: no such folder")
    from .._files import WriteError, check_output
    try:
        if args.csv:
            check_output(args.csv, "--csv", (".csv",), example="scores.csv")
        if args.feedback:
            parent = os.path.dirname(os.path.abspath(args.feedback))
            if not os.path.isdir(parent):
                raise ValueError(f"--feedback {args.feedback}: its folder {parent} does not "
                                 "exist")
            os.makedirs(args.feedback, exist_ok=True)
            check_output(os.path.join(args.feedback, "_probe.md"), "--feedback", (".md",))
    except (WriteError, OSError, ValueError) as exc:
        return _usage(p, str(exc))
    limits = {"time_limit": args.time_limit, "file_limit": args.file_limit,
              "memory_limit": args.memory_limit}
    notes, pairs = [], []
    if folder:
        from .submissions import find_submissions
        if not find_submissions(args.path)[0] and roster is None:
            return _usage(p, f"no .py or .ipynb files in the folder {args.path}")
        reports, notes = grade_folder(assignment, args.path, roster=roster, jobs=args.jobs,
                                      progress=_progress(args.json), **limits)
        pairs, note = _similarity(assignment, reports, args)
        notes += [note] if note else []
        if roster is not None:
            from .submissions import roster_suggestions
            notes += roster_suggestions(roster, [r.student for r in reports if r.graded])
    else:
        reports = [grade(assignment, args.path, **limits)]
    if args.csv:
        from .reports import write_csv
        write_csv(reports, args.csv, assignment)
    if args.feedback:
        from .reports import write_feedback
        write_feedback([r for r in reports if r.graded or r.reason == "no submission"],
                       args.feedback, assignment)
    _print(assignment, reports, args, folder, pairs, notes)
    if args.check:
        return EXIT_OK if all(c.passed for r in reports for c in r.checks
                              if c.id == args.check) else EXIT_NOT_ALL_GRADED
    return EXIT_OK if all(r.graded for r in reports) else EXIT_NOT_ALL_GRADED


def _progress(quiet):
    if quiet or not sys.stderr.isatty():
        return None

    def show(i, n, student):
        print(f"\rgrading {i + 1}/{n}: {student[:40]:<40}", end="" if i + 1 < n else "\n",
              file=sys.stderr, flush=True)
    return show


def _similarity(assignment, reports, args):
    """Copy detection over the graded files (and --solutions); the pairs also become flags."""
    from . import integrity
    from .submissions import read_code

    if not integrity.available():
        return [], "copy detection skipped: pip install copydetect"
    codes = {}
    for r in reports:
        if r.graded and r.path:
            try:
                codes[r.student] = read_code(r.path)
            except ValueError:
                pass
    stub = os.path.join(os.path.dirname(__file__), "..", "..", "lessons", "assignments",
                        f"{assignment.key}.py")
    boilerplate = open(stub, encoding="utf-8").read() if os.path.isfile(stub) else ""
    references = {}
    if args.solutions:
        solution = os.path.join(args.solutions, f"{assignment.key}.py")
        if os.path.isfile(solution):
            references[assignment.key] = read_code(solution)
    pairs = integrity.similar_pairs(codes, boilerplate, references, args.similarity)
    by_name = {r.student: r for r in reports}
    similar = {}
    for a, b, similarity in pairs:
        similar.setdefault(a, []).append((similarity, b.replace("reference:", "the solution ")))
        if b in by_name:
            similar.setdefault(b, []).append((similarity, a))
    for student, others in similar.items():
        others.sort(key=lambda o: (-o[0], o[1]))
        by_name[student].flags.append("similar to " + ", ".join(
            f"{name} ({share:.0%})" for share, name in others))
    return pairs, ""


def _print(assignment, reports, args, folder, pairs, notes):
    from .reports import print_class

    shown = reports
    if args.check:
        for r in reports:
            r.checks = [c for c in r.checks if c.id == args.check]
    if args.json:
        data = [r.to_dict() for r in shown]
        if folder:
            print(json.dumps({"reports": data, "similar": [
                {"student": a, "other": b, "similarity": round(s, 3)} for a, b, s in pairs],
                "notes": notes}, indent=2))
        else:
            print(json.dumps(data[0], indent=2))
    elif not folder:
        print(shown[0].format())
    else:
        print_class(assignment, shown, pairs, notes, check=args.check)
    if args.csv:
        print(f"Scores written to {args.csv}", file=sys.stderr if args.json else sys.stdout)
    if args.feedback:
        print(f"Feedback written to {args.feedback}/", file=sys.stderr if args.json else sys.stdout)
