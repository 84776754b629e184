"""Submissions: a student's file (``.py``, or a notebook's code cells), student names from file
names, the class folder and the roster."""
from __future__ import annotations

import json
import os
import re

SUFFIXES = (".py", ".ipynb")
MAX_BYTES = 2 * 2 ** 20
_NAME = re.compile(r"\w[\w .@+-]{0,63}")


def student_name(path):
    """(name, problem): the file name without its suffix, and why it is not a valid student name
    ('' when it is: letters, digits, ``_ . @ + -`` and inner spaces, at most 64 characters,
    starting with a letter, digit or ``_``)."""
    base = os.path.basename(os.fspath(path))
    stem = base[:-len(suffix)] if (suffix := next((s for s in SUFFIXES if base.endswith(s)),
                                                  "")) else base
    if not _NAME.fullmatch(stem) or stem != stem.strip():
        return stem, ("the file name is not a student name (letters, digits, _ . @ + - and "
                      "spaces, starting with a letter or digit): rename the file")
    return stem, ""


def _text(path):
    path = os.fspath(path)
    if os.path.islink(path):
        raise ValueError(f"{path}: a symbolic link, not the student's own file")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: not a regular file")
    try:
        size = os.path.getsize(path)
        if size > MAX_BYTES:
            raise ValueError(f"{path}: {size:,} bytes, more than a submission can be "
                             f"({MAX_BYTES // 2 ** 20} MB)")
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    if "\0" in text:
        raise ValueError(f"{path}: contains NUL bytes: not a text file")
    return text


def read_code(path):
    """The Python code of a submission: a ``.py`` file's text, or a notebook's code cells joined
    (each after a ``# In[k]`` line; IPython-only lines commented out, see :func:`read_cells`).
    Raises ``ValueError`` naming the file and the problem (unreadable, too large, not UTF-8
    text, not a notebook)."""
    text = _text(path)
    path = os.fspath(path)
    if not path.endswith(".ipynb"):
        return text
    return "\n\n".join(f"# In[{k}]\n{code}" for k, code in _cells(text, path)) + "\n"


def read_cells(path):
    """A notebook's code cells as [(k, code)] (k: the cell's number, counting every cell from
    1), IPython-only lines commented out: magics and shell commands (``%``, ``!``, ``x = !ls``)
    and help requests (``f?``, ``??f``). Raises ``ValueError`` as :func:`read_code`."""
    return _cells(_text(path), path)


_IPYTHON_ONLY = re.compile(r"^\s*([%!]|[\w.]+\s*=\s*[%!]|\?{1,2}[\w.]+\s*$|[\w.]+\?{1,2}\s*$)")


def _cells(text, path):
    try:
        notebook = json.loads(text)
        cells = notebook["cells"]
        if not isinstance(cells, list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path}: not a Jupyter notebook (no JSON with a list of cells)") \
            from None
    out = []
    for k, cell in enumerate(cells, 1):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        lines = [f"# {line}" if _IPYTHON_ONLY.match(line) else line
                 for line in source.splitlines()]
        out.append((k, "\n".join(lines) + "\n"))
    return out


def find_submissions(folder):
    """The submissions of a class folder: {student: path}, and notes on what was left out
    (symbolic links and other non-regular files; a student with both a .py and a notebook: the
    .py is graded)."""
    chosen, notes = {}, []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.startswith(("_", ".")) or not name.endswith(SUFFIXES):
            continue
        if os.path.islink(path) or not os.path.isfile(path):
            kind = "a symbolic link" if os.path.islink(path) else "not a regular file"
            notes.append(f"skipped {clean_name(name)}: {kind}")
            continue
        stem = student_name(path)[0]
        if stem in chosen:
            kept = chosen[stem] if chosen[stem].endswith(".py") else path
            notes.append(f"{clean_name(stem)}: two submissions, "
                         f"{clean_name(os.path.basename(chosen[stem]))} and {clean_name(name)}; "
                         f"graded {clean_name(os.path.basename(kept))}")
            chosen[stem] = kept
        else:
            chosen[stem] = path
    return chosen, notes


def clean_name(text):
    """A file or student name made safe to print: control characters replaced."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def roster_suggestions(roster, students):
    """'did you mean' notes for roster names without a file and files without a roster name
    that differ only in case, accents or spacing."""
    import unicodedata

    def key(name):
        text = unicodedata.normalize("NFKD", name.casefold())
        return "".join(ch for ch in text if ch.isalnum())

    unmatched = {key(s): s for s in students if s not in roster}
    notes = []
    for name in roster:
        if name not in students and key(name) in unmatched:
            notes.append(f"{name!r} on the roster has no file, but {unmatched[key(name)]!r} "
                         "is not on the roster: the same student? Rename the file or fix the "
                         "roster")
    return notes


def read_roster(path):
    """The students of a roster file: one name per line, blank lines and ``#`` comments ignored.
    Raises ``ValueError`` naming the line of a bad or repeated name."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--roster {path}: cannot be read ({getattr(exc, 'strerror', exc)})") \
            from None
    names = []
    for number, line in enumerate(lines, 1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if not _NAME.fullmatch(name):
            raise ValueError(f"--roster {path}, line {number}: {name[:40]!r} is not a student "
                             "name (letters, digits, _ . @ + - and spaces)")
        if name in names:
            raise ValueError(f"--roster {path}, line {number}: {name!r} is listed twice")
        names.append(name)
    if not names:
        raise ValueError(f"--roster {path}: no names in it (one name per line)")
    return names
