"""The autograder of the classroom assignments in ``lessons/assignments/``.

    python -m tinyddpm.grade --list                                 # the assignments
    python -m tinyddpm.grade 1 my_01_cosine_schedule.py              # one student file
    python -m tinyddpm.grade cosine_schedule alice.ipynb --json      # a notebook, as JSON
    python -m tinyddpm.grade 3 submissions/ --csv scores.csv --roster names.txt --feedback fb/

The grade is decided here, never in the student's process: each check names the calls to make
(:mod:`.framework`); :mod:`.sandbox` makes them in a child process (:mod:`._child`, confined by
:mod:`._confine`: Landlock, resource limits, its own process group and PID namespace, a
temporary folder, no pipe back) that returns only values (:mod:`.channel` reads them back); and
:mod:`.runner` lets each check's judge compare them with this package's own implementation.
:mod:`.integrity` flags suspicious code and similar submissions; :mod:`.reports` writes the CSV
and the feedback files; :mod:`.assign` makes the student files from the solutions. Each
assignment is one module (``a01_cosine_schedule.py`` ...): adding one touches one new file and
the list in :mod:`.assignments`.
"""
from . import assignments  # noqa: F401  (registers them)
from .cli import main
from .framework import ASSIGNMENTS, Assignment, CheckResult, Report, find_assignment
from .reports import write_csv, write_feedback
from .runner import DEFAULT_FILE_LIMIT, DEFAULT_MEMORY_LIMIT, DEFAULT_TIME_LIMIT, grade, \
    grade_folder

__all__ = ["ASSIGNMENTS", "Assignment", "CheckResult", "DEFAULT_FILE_LIMIT",
           "DEFAULT_MEMORY_LIMIT", "DEFAULT_TIME_LIMIT", "Report", "find_assignment", "grade",
           "grade_folder", "main", "write_csv", "write_feedback"]
