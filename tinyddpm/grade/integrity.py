"""Integrity flags: what a submission does that a teacher should look at. They change no points.

* :func:`scan` reads the code (an AST walk, no execution) for imports of the package or the
  grader, ``exec``/``eval``/``compile``, ``sys.modules``/``sys.path``, ``os._exit``, processes
  (``subprocess``, ``os.system``, ``os.fork``, ...), file reads (``open``, ``np.load``, ...),
  and the introspection that reaches another module's globals.
* :func:`similar_pairs` finds submissions whose code is nearly the same after normalising names
  and formatting, with `copydetect <https://github.com/blingenf/copydetect>`_ (MOSS-style
  winnowing of token k-grams; the stub handed out is boilerplate and does not count).
"""
from __future__ import annotations

import ast
import io
import os

#: modules whose import is flagged, with what it means
MODULES = {
    "tinyddpm": "imports tinyddpm (the reference implementation)",
    "importlib": "imports importlib", "runpy": "imports runpy", "imp": "imports imp",
    "subprocess": "starts processes (subprocess)", "multiprocessing": "starts processes",
    "pty": "starts processes (pty)", "ctypes": "uses ctypes", "cffi": "uses cffi",
    "socket": "uses the network (socket)", "urllib": "uses the network (urllib)",
    "http": "uses the network (http)", "requests": "uses the network (requests)",
    "builtins": "imports builtins", "inspect": "inspects frames (inspect)",
    "gc": "imports gc", "pickle": "uses pickle", "marshal": "uses marshal", "signal": "uses signal",
    "resource": "changes resource limits", "threading": "starts threads",
    "site": "changes the import path (site)", "linecache": "reads files (linecache)",
    "io": "reads or writes files (io)", "codecs": "reads or writes files (codecs)",
    "pathlib": "reads or writes files (pathlib)", "glob": "lists folders (glob)",
    "shutil": "copies or removes files (shutil)", "tempfile": "writes files (tempfile)",
    "mmap": "maps files (mmap)", "fileinput": "reads files (fileinput)",
    "zipimport": "imports from archives", "base64": "decodes text (base64)",
    "zlib": "decompresses data (zlib)", "codeop": "compiles code (codeop)",
    "posix": "uses the OS directly (posix)", "nt": "uses the OS directly (nt)",
    "timeit": "runs code from strings (timeit)", "cProfile": "runs code from strings (cProfile)",
    "profile": "runs code from strings (profile)", "code": "runs code from strings (code)",
    "doctest": "runs code from strings (doctest)", "trace": "runs code from strings (trace)",
    "bdb": "runs code from strings (bdb)", "pdb": "runs code from strings (pdb)",
    "pkgutil": "resolves names (pkgutil)", "pydoc": "resolves names (pydoc)",
    "tokenize": "reads files (tokenize)", "hashlib": "hashes data (hashlib: a table of answers?)",
}
CALLS = {"exec": "exec", "eval": "eval", "compile": "compile", "__import__": "__import__",
         "open": "reads or writes files (open)", "globals": "globals()", "vars": "vars()",
         "breakpoint": "breakpoint()", "input": "input()", "setattr": "setattr"}
ATTRIBUTES = {
    ("sys", "modules"): "sys.modules", ("sys", "path"): "sys.path",
    ("sys", "meta_path"): "sys.meta_path", ("sys", "_getframe"): "sys._getframe",
    ("sys", "setrecursionlimit"): "raises the recursion limit (sys.setrecursionlimit)",
    ("os", "_exit"): "os._exit", ("os", "system"): "os.system", ("os", "popen"): "os.popen",
    ("os", "fork"): "os.fork", ("os", "kill"): "os.kill", ("os", "killpg"): "os.killpg",
    ("os", "setsid"): "os.setsid", ("os", "dup2"): "os.dup2", ("os", "open"): "os.open",
    ("os", "write"): "writes to file descriptors (os.write)",
    ("os", "listdir"): "lists folders (os.listdir)", ("os", "walk"): "lists folders (os.walk)",
    ("os", "scandir"): "lists folders (os.scandir)", ("os", "environ"): "os.environ",
    ("np", "load"): "reads files (np.load)", ("numpy", "load"): "reads files (np.load)",
    ("np", "loadtxt"): "reads files (np.loadtxt)", ("np", "fromfile"): "reads files (np.fromfile)",
    ("np", "genfromtxt"): "reads files (np.genfromtxt)", ("np", "memmap"): "reads files",
}
PREFIXES = {("os", "exec"): "replaces the process (os.exec*)",
            ("os", "spawn"): "starts processes (os.spawn*)",
            ("os", "posix_spawn"): "starts processes (os.posix_spawn)"}
METHODS = {"read_text": "reads files (read_text)", "read_bytes": "reads files (read_bytes)",
           "write_text": "writes files (write_text)", "write_bytes": "writes files",
           "tofile": "writes files (ndarray.tofile)", "savetxt": "writes files (np.savetxt)",
           "builtins": "reaches a builtins module", "attrgetter": "attrgetter",
           "methodcaller": "methodcaller", "addsitedir": "changes the import path (site)",
           "exec_module": "runs a module (exec_module)", "load_module": "loads a module",
           "getlines": "reads files (linecache)", "system": "runs commands (.system)",
           "save": "writes files (np.save)", "savez": "writes files (np.savez)",
           "savez_compressed": "writes files (np.savez)", "fromregex": "reads files",
           "DataSource": "reads files (DataSource)", "npyio": "reads or writes files (npyio)",
           "get_type_hints": "evaluates strings (get_type_hints)", "runctx": "runs code (runctx)",
           "resolve_name": "resolves names", "locate": "resolves names (locate)",
           "walk_tb": "walks frames", "walk_stack": "walks frames"}
#: literal data at least this large (characters, or items of a container) looks like a table
#: of answers: the checks' inputs are fixed, so answers computed elsewhere could be pasted in
LARGE_LITERAL = 2000
DUNDERS = {"__builtins__", "__globals__", "__code__", "__subclasses__", "__loader__", "__spec__",
           "__dict__", "__closure__", "__getattribute__", "f_back", "f_globals", "f_locals",
           "gi_frame", "tb_frame"}


def scan(source, assignment=None):
    """Integrity flags of ``source`` (a list of strings like ``"exec (line 4)"``); a file that
    does not parse gets none (its SyntaxError is reported with the grade)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    found = {}
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef,
                                    ast.ClassDef))
                  and n.body and isinstance(n.body[0], ast.Expr)
                  and isinstance(n.body[0].value, ast.Constant)}

    def add(text, node):
        found.setdefault(text, []).append(getattr(node, "lineno", 0))

    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                if top.startswith("_") and top != "__future__":
                    add(f"imports a private module ({top})", node)
                if top in MODULES:
                    add(MODULES[top] if top != "tinyddpm" or "grade" not in name
                        else "imports the grader (tinyddpm.grade)", node)
                if isinstance(node, ast.ImportFrom) and top in ("os", "sys", "numpy"):
                    for alias in node.names:
                        text = ATTRIBUTES.get(("np" if top == "numpy" else top, alias.name))
                        if text:
                            add(text, node)
            if isinstance(node, ast.ImportFrom) and node.level:
                add("relative import (another file of the folder)", node)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in CALLS:
                add(CALLS[node.func.id], node)
            if node.func.id == "getattr" and len(node.args) >= 2 and not isinstance(
                    node.args[1], ast.Constant):
                add("getattr with a computed name", node)
        elif isinstance(node, ast.Attribute):
            if node.attr in DUNDERS:
                add(f"reaches {node.attr}", node)
            elif node.attr in METHODS:
                add(METHODS[node.attr], node)
            if isinstance(node.value, ast.Name):
                pair = (node.value.id, node.attr)
                if pair in ATTRIBUTES:
                    add(ATTRIBUTES[pair], node)
                for (module, prefix), text in PREFIXES.items():
                    if node.value.id == module and node.attr.startswith(prefix):
                        add(text, node)
        elif isinstance(node, ast.Name) and node.id in DUNDERS:
            add(f"reaches {node.id}", node)
        elif isinstance(node, ast.Name) and node.id == "builtins":
            add("reaches a builtins module", node)
        elif isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
            if len(node.value) >= LARGE_LITERAL and id(node) not in docstrings:
                add("large literal data (a table of answers?)", node)
            text = node.value if isinstance(node.value, str) else ""
            if any(d in text for d in DUNDERS if d.startswith("__")):
                add("a dunder name in a string", node)
        elif isinstance(node, (ast.List, ast.Tuple, ast.Set, ast.Dict)):
            items = len(node.keys) if isinstance(node, ast.Dict) else len(node.elts)
            if items >= LARGE_LITERAL // 10:
                add("large literal data (a table of answers?)", node)
    flags = []
    if assignment is not None and edited_below_marker(source, assignment):
        flags.append(f"changed the part marked \"{MARKER}\" (the helpers the grader calls, "
                     "which could return a table of answers)")
    for text, lines in found.items():
        lines = sorted(set(lines))
        where = ", ".join(str(n) for n in lines[:5]) + (", ..." if len(lines) > 5 else "")
        flags.append(f"{text} (line{'s' if len(lines) > 1 else ''} {where})")
    return flags


MARKER = "do not edit below"


def marker_line(source):
    return next((i for i, line in enumerate(source.splitlines(), 1) if MARKER in line), 0)


def _functions_below_marker(source):
    """{name: ast dump} of the functions and classes defined after the marker line."""
    line = marker_line(source)
    if not line:
        return None
    tree = ast.parse(source)
    return {n.name: ast.dump(n) for n in tree.body
            if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.lineno > line}


def edited_below_marker(source, assignment):
    """Whether a file changed the helpers below the stub's "do not edit below" line (they are
    what the grader calls: a changed ``run`` can return a table of answers). Compared by
    syntax tree with this checkout's stub (``lessons/assignments/``); False where there is
    none."""
    stub = os.path.join(os.path.dirname(__file__), "..", "..", "lessons", "assignments",
                        f"{assignment.key}.py")
    try:
        with open(stub, encoding="utf-8") as f:
            expected = _functions_below_marker(f.read())
        got = _functions_below_marker(source) if expected else None
    except (OSError, SyntaxError, ValueError):
        return False
    if not expected:
        return False
    return got is None or any(got.get(name) != dump for name, dump in expected.items())


# --------------------------------------------------------------------------- copy detection

#: copydetect's defaults: k-grams of 25 tokens, a match of 30 tokens is always found
NOISE_TOKENS, GUARANTEE_TOKENS = 25, 30
#: pairs at least this similar are flagged (the larger of the two shares of copied tokens)
DEFAULT_SIMILARITY = 0.6
#: and only when they share at least this many tokens beyond the stub (short files are alike)
MIN_SHARED_TOKENS = 60


def available():
    """Whether copydetect is installed (``pip install copydetect``)."""
    try:
        import copydetect  # noqa: F401
    except ImportError:
        return False
    return True


def _fingerprint(code, boilerplate=()):
    from copydetect import CodeFingerprint

    return CodeFingerprint("submission.py", NOISE_TOKENS, GUARANTEE_TOKENS - NOISE_TOKENS + 1,
                           boilerplate=list(boilerplate), language="python",
                           fp=io.StringIO(code))


def similar_pairs(codes, boilerplate="", references=None, threshold=DEFAULT_SIMILARITY):
    """Pairs of nearly identical submissions.

    ``codes``: {student: code}; ``boilerplate``: the stub handed out (its k-grams never count);
    ``references``: {name: code} of solutions to compare every submission with too.
    Pairs sharing fewer than :data:`MIN_SHARED_TOKENS` tokens are left out (short files are
    alike by necessity). Returns a list of (student, other, similarity) sorted by similarity
    (highest first), where
    ``other`` is another student or ``"reference:NAME"``, and similarity in [0, 1] is the larger
    of the two shares of tokens found in the other file. Raises ``ImportError`` naming the
    ``pip install`` when copydetect is absent.
    """
    try:
        from copydetect import compare_files
    except ImportError:
        raise ImportError("copy detection needs copydetect: pip install copydetect") from None
    base = _fingerprint(boilerplate).hashes if boilerplate else ()
    prints = {}
    for name, code in codes.items():
        try:
            prints[name] = _fingerprint(code, base)
        except Exception:  # noqa: BLE001 - a file copydetect cannot tokenise is not compared
            continue
    refs = {}
    for name, code in (references or {}).items():
        refs[f"reference:{name}"] = _fingerprint(code, base)
    names = sorted(prints)
    pairs = []
    for i, a in enumerate(names):
        others = [(b, prints[b]) for b in names[i + 1:]] + list(refs.items())
        for b, fp in others:
            shared, (s1, s2), _ = compare_files(prints[a], fp)
            similarity = float(max(s1, s2) if not b.startswith("reference:") else s1)
            if similarity >= threshold and shared >= MIN_SHARED_TOKENS:
                pairs.append((a, b, similarity))
    return sorted(pairs, key=lambda p: (-p[2], p[0], p[1]))
