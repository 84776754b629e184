"""What every command line of the package shares: ``--help`` that shows each option's default,
argument types that check their range where the value enters (argparse then prints one
``error:`` line naming the option and exits 2), and shell-quoted commands to print.
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import textwrap


class UsageError(Exception):
    """A user's mistake found after parsing (options that do not go together): the entry point
    prints ``error: <message>`` and exits 2, without a traceback."""


class HelpFormatter(argparse.HelpFormatter):
    """Descriptions and epilogs wrapped a paragraph at a time, with indented lines (examples)
    kept as written; each option's help ends with ``(default: X)``, unless the default is None
    or False (an option that is off, or whose help says what happens without it) or the help
    already names its default."""

    def _fill_text(self, text, width, indent):
        out, paragraph = [], []

        def flush():
            if paragraph:
                out.append(textwrap.fill(" ".join(paragraph), width, initial_indent=indent,
                                         subsequent_indent=indent))
                paragraph.clear()
        for line in text.strip("\n").splitlines():
            if not line.strip() or line.startswith(" ") or line.endswith(":"):
                flush()
                out.append(indent + line)
            else:
                paragraph.append(line.strip())
        flush()
        return "\n".join(out)

    def _get_help_string(self, action):
        text = action.help or ""
        off = action.default is None or action.default is False  # (0 == False, but shown)
        if (action.option_strings and not off and action.default != argparse.SUPPRESS
                and "default" not in text):
            shown = " ".join(map(str, action.default)) if isinstance(action.default, list) \
                else "%(default)s"
            text += f" (default: {shown})"
        return text


def parser(prog, description, epilog=None):
    """An ``ArgumentParser`` with the package's help layout."""
    return argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                   formatter_class=HelpFormatter)


def whole_number(low=None, high=None):
    """An argparse type: an int in [low, high] (either end open when None)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {_range(low, high)}, got {value}")
        return value
    parse.__name__ = "whole number"
    return parse


def whole_numbers(count=None, low=None, choices=None, empty=None, example="16,32,64"):
    """An argparse type: comma-separated whole numbers, e.g. ``16,32,64``, as a tuple; ``count``
    of them if given, each >= ``low`` or among ``choices``, none repeated where ``choices`` is
    given; ``empty`` (e.g. ``"none"``) stands for no numbers at all. ``example``: shown in the
    message for text that is no such list."""
    def parse(text):
        if empty is not None and text.strip().lower() == empty:
            return ()
        try:
            values = tuple(int(part) for part in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated whole numbers such as {example}"
                + (f" (or {empty})" if empty else "") + f", got {text!r}") from None
        if count is not None and len(values) != count:
            raise argparse.ArgumentTypeError(f"expected {count} numbers, got {len(values)}: "
                                             f"{text!r}")
        if low is not None and min(values) < low:
            raise argparse.ArgumentTypeError(f"each must be >= {low}, got {text!r}")
        if choices is not None and (set(values) - set(choices) or len(set(values)) < len(values)):
            raise argparse.ArgumentTypeError(
                f"each must be one of {', '.join(map(str, choices))}, once"
                + (f" (or {empty})" if empty else "") + f"; got {text!r}")
        return values
    parse.__name__ = "list of whole numbers"
    return parse


def real_number(low=None, high=None, low_open=False, high_open=False):
    """An argparse type: a finite float in [low, high] (``low_open``/``high_open``: excluded)."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if not math.isfinite(value) or too_low or too_high:
            raise argparse.ArgumentTypeError(
                " ".join(filter(None, ["must be a finite number",
                                       _range(low, high, low_open, high_open)])) + f", got {text}")
        return value
    parse.__name__ = "number"
    return parse


def _range(low, high, low_open=False, high_open=False):
    def show(v):
        return f"{v:,}" if isinstance(v, int) else f"{v:g}"
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{show(low)}, {show(high)}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {show(low)}"
    if high is not None:
        return f"{'<' if high_open else '<='} {show(high)}"
    return ""


def command(*words):
    """A command line to print for the user to copy: each word quoted for a POSIX shell."""
    return " ".join(shlex.quote(str(w)) for w in words)


def available_memory():
    """Bytes of memory free for a new job (Linux's MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
