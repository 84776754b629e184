"""What the grader writes for the teacher and the students: the class summary, the CSV, and one
feedback file per student."""
from __future__ import annotations

import csv
import os

from .framework import num
from .channel import clean

#: a spreadsheet reads a cell starting with one of these as a formula
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def cell(value):
    """A CSV cell that a spreadsheet shows as text (a leading ' before a formula start)."""
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def notes(report):
    """Every failed check's full message, one per line, after the file-level error."""
    lines = [report.error] if report.error else []
    lines += list(report.warnings)
    lines += [f"{c.id}: {c.message}" for c in report.checks if c.message]  # failed, or counted
    return "\n".join(lines)


def write_csv(reports, path, assignment):
    """One row per student: student, the points of each check (columns named by check id),
    total, out_of, reason (why points were lost at the file level), flags (integrity, for the
    teacher), notes (every failed check's message, untruncated). Every text cell is escaped
    against spreadsheet formulas; written atomically."""
    from .._files import atomic_write

    def write(f):
        w = csv.writer(f)
        w.writerow(["student"] + [c.id for c in assignment.checks]
                   + ["total", "out_of", "reason", "flags", "notes"])
        for r in reports:
            points = {c.id: c.points for c in r.checks}
            w.writerow([cell(r.student)] + [num(points.get(c.id, 0)) for c in assignment.checks]
                       + [num(r.total), num(assignment.max_points), cell(r.reason),
                          cell("; ".join(r.flags)), cell(notes(r))])
    atomic_write(path, write, binary=False)


def _safe_file_name(student):
    name = "".join(ch if ch.isalnum() or ch in "._@+-" else "_" for ch in student).lstrip(".")
    return (name or "student")[:64]


def feedback(report, assignment):
    """A student's report as Markdown (no integrity flags: those are for the teacher). Student
    text (messages) sits in indented blocks, where Markdown renders nothing."""
    lines = [f"# {assignment.title}: feedback for {clean(report.student, 64)}", "",
             f"Assignment {assignment.number} (`{assignment.key}`), slide "
             f"\"{assignment.slide}\".", "",
             f"**Score: {num(report.total)}/{num(assignment.max_points)}**", ""]
    for text in ([report.error] if report.error else []) + list(report.warnings):
        lines += ["The whole file:", "", *("    " + line for line in text.splitlines()), ""]
    lines += ["| check | points | what it tests |", "|---|--:|---|"]
    for c in report.checks:
        lines.append(f"| `{c.id}` | {num(c.points)}/{num(c.max_points)} | "
                     f"{c.description.replace('|', '/')} |")
    failed = [c for c in report.checks if not c.passed or c.message]   # failed, or counted
    if failed:
        lines += ["", "## What to fix", ""]
        for c in failed:
            lines += [f"### `{c.id}`", "", *("    " + line for line in c.message.splitlines()),
                      ""]
    file_name = os.path.basename(report.path) if report.path else f"{assignment.key}.py"
    lines += ["", f"Run the grader yourself: `python -m tinyddpm.grade {assignment.number} "
                  f"{clean(file_name, 80)}`", ""]
    return "\n".join(lines)


def write_feedback(reports, folder, assignment):
    """One Markdown file a student, ``FOLDER/<student>.md``; returns the paths written."""
    from .._files import atomic_write

    os.makedirs(folder, exist_ok=True)
    paths, taken = [], set()
    for r in reports:
        name = _safe_file_name(r.student)
        base, k = name, 2
        while name.casefold() in taken:       # Alice and alice: one file each, on any system
            name, k = f"{base}-{k}", k + 1
        taken.add(name.casefold())
        path = os.path.join(folder, name + ".md")
        text = feedback(r, assignment)
        atomic_write(path, lambda f, text=text: f.write(text), binary=False)
        paths.append(path)
    return paths


def clusters(pairs):
    """Groups of files linked by similar pairs: [(members, lowest, highest similarity)], largest
    first (a reference solution is a member like a student)."""
    parent = {}

    def root(x):
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for a, b, _ in pairs:
        parent[root(a)] = root(b)
    groups = {}
    for a, b, similarity in pairs:
        g = groups.setdefault(root(a), [set(), 1.0, 0.0])
        g[0].update((a, b))
        g[1], g[2] = min(g[1], similarity), max(g[2], similarity)
    return sorted(((sorted(m), low, high) for m, low, high in groups.values()),
                  key=lambda c: (-len(c[0]), -c[2], c[0]))


def print_class(assignment, reports, pairs=(), notes_=(), check=None):
    out_of = num(assignment.max_points) if not check else \
        f"{num(next(c.points for c in assignment.checks if c.id == check))} (check {check})"
    print(f"Assignment {assignment.key}: {len(reports)} students, out of {out_of}")
    width = max((len(r.student) for r in reports), default=7)
    for r in reports:
        failed = [c.id for c in r.checks if not c.passed]
        line = f"  {r.student:<{width}}  {num(r.total):>4}/{num(r.max_total)}"
        if r.reason:
            line += f"  [{r.reason}]"
        if failed and len(failed) < len(r.checks):
            line += f"  failed: {', '.join(failed)}"
        if r.flags:
            line += f"  FLAGS: {len(r.flags)}"
        print(line)
    flagged = [r for r in reports if r.flags]
    if flagged:
        print("Flags for review (they change no points):")
        for r in flagged:
            print(f"  {r.student}: " + "; ".join(r.flags))
    if pairs:
        print("Similar submissions (copydetect; review them side by side):")
        for members, low, high in clusters(pairs):
            share = f"{high:.0%}" if round(low, 2) == round(high, 2) else f"{low:.0%}-{high:.0%}"
            shown = ", ".join(members[:12]) + (f", ... ({len(members)} files)"
                                               if len(members) > 12 else "")
            print(f"  {share:>8}  {shown}")
    for note in notes_:
        print(f"Note: {note}")
