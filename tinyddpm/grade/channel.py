"""What comes back from the child: its result files, read trusting nothing (names, sizes,
types, nesting; arrays with ``allow_pickle=False``), and the words for a call's failure."""
from __future__ import annotations

import json
import os
import re

import numpy as np

from .framework import Opaque, num
from .sandbox import FILE_SIZE_LIMIT

#: Largest total of the arrays read back from one submission (bytes).
RESULTS_LIMIT = 256 * 2 ** 20


def clean(text, limit=300):
    """Student-controlled text made safe to show: printable characters only, at most ``limit``."""
    text = "".join(ch if ch.isprintable() else "?" for ch in str(text))
    return text if len(text) <= limit else text[:limit - 3] + "..."


class Unreadable(Exception):
    """What the child wrote cannot be read back: a broken or forged result file."""


class Reader:
    """Reads what the child wrote, trusting nothing: names, sizes, types, depth."""

    def __init__(self, out):
        self.out, self.bytes = out, 0

    def json(self, name):
        path = os.path.join(self.out, name)
        if not os.path.isfile(path) or os.path.islink(path):
            return None
        if os.path.getsize(path) > 2 * 2 ** 20:
            raise Unreadable(f"{name} is too large")
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except (ValueError, OSError, RecursionError) as exc:
            raise Unreadable(f"{name}: {type(exc).__name__}") from None

    def value(self, node, folder, depth=0):
        if depth > 8 or not isinstance(node, dict):
            raise Unreadable("malformed value")
        t = node.get("t")
        if t in ("array", "scalar"):
            name = node.get("f")
            if not isinstance(name, str) or not re.fullmatch(r"\d{1,6}\.npy", name):
                raise Unreadable("malformed array name")
            path = os.path.join(folder, name)
            if not os.path.isfile(path) or os.path.islink(path):
                raise Unreadable("missing array file")
            self.bytes += os.path.getsize(path)
            if self.bytes > RESULTS_LIMIT:
                raise Unreadable("the arrays returned are too large")
            try:
                a = np.load(path, allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise Unreadable(f"array file: {type(exc).__name__}") from None
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
            items = [self.value(n, folder, depth + 1) for n in node["items"][:10_000]]
            return tuple(items) if t == "tuple" else items
        if t == "dict" and isinstance(node.get("items"), list):
            out = {}
            for pair in node["items"][:10_000]:
                if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
                    raise Unreadable("malformed dict")
                out[clean(pair[0], 100)] = self.value(pair[1], folder, depth + 1)
            return out
        if t == "other":
            return Opaque(clean(node.get("name", "object"), 60))
        raise Unreadable("malformed value")


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
