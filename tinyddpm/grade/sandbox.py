"""The sandbox a student's code runs in, from the grader's side: the child's folder and request,
how it is confined, and how it is stopped.

:func:`run_child`

1. writes the student's code (a ``.py`` file's text, or a notebook's cells, ``cell_K.py``) into
   a fresh temporary folder, with the inputs of every call the checks ask for (``request.json``
   and ``.npy`` files), a ``lib/`` folder through which NumPy alone can be imported, and the
   child's own scripts (:mod:`._child`, :mod:`._confine`);
2. runs ``python -I -S _child.py FOLDER`` in its own session and process group, inside a new PID
   namespace where ``unshare`` allows it (when the child ends, the kernel ends every process it
   started), with no pipe to this process, confined as :func:`sandbox_mode` says, and with the
   resource limits it sets on itself before any student code runs;
3. watches it: a check that runs past its time limit without the child's alarm stopping it, or a
   file past its file limit, gets the child killed; at the end the whole group is killed (and,
   without a namespace, every process still carrying this run's token), so the class run's time
   is bounded whatever the student does.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np

from .framework import FakeModel, RecordingRng, Rng

#: Seconds each check (and the import of the student's file) may run.
DEFAULT_TIME_LIMIT = 10.0
#: Seconds a whole submission may run (all its checks, and Python's start-up).
DEFAULT_FILE_LIMIT = 60.0
#: Seconds the child may go without finishing a check beyond its time limit before the grader
#: stops it (the alarm inside should have); and for Python's start-up and the import.
STALL_GRACE, STARTUP_GRACE = 2.0, 10.0
#: Address space of the student's process, in MB.
DEFAULT_MEMORY_LIMIT = 2048
#: Processes (and threads) the student's code may start beyond those its user already runs:
#: few, since each may take the whole memory limit.
PROCESS_LIMIT = 4
#: What the child may write in all (its results folder): files and bytes.
OUTPUT_FILES_LIMIT, OUTPUT_LIMIT = 20_000, 512 * 2 ** 20
#: Largest file the student's process may write (bytes): its results, or anything else.
FILE_SIZE_LIMIT = 64 * 2 ** 20
#: Open files the student's process may hold.
OPEN_FILES_LIMIT = 64

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_child.py")


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


_pdeathsig = None
_stop = threading.Event()      # set: every running child is stopped (the grader is interrupted)


def stop_all():
    """Stop every child now running (from any thread), and those started until reset_stop()."""
    _stop.set()


def reset_stop():
    _stop.clear()


def _die_with_us():
    """``setpriv --pdeathsig KILL --`` where util-linux has it: the child is killed when the
    grader dies, even by SIGKILL (with the PID namespace, everything it started goes too)."""
    global _pdeathsig
    if _pdeathsig is None:
        tool = shutil.which("setpriv")
        _pdeathsig = []
        if tool and sys.platform.startswith("linux"):
            try:
                ok = subprocess.run([tool, "--pdeathsig", "KILL", "--", "true"],
                                    capture_output=True, timeout=10).returncode == 0
            except (OSError, subprocess.SubprocessError):
                ok = False
            _pdeathsig = [tool, "--pdeathsig", "KILL", "--"] if ok else []
    return list(_pdeathsig)


def _processes_of(uid):
    """The threads ``uid`` runs now (what the kernel's process limit counts)."""
    count = 0
    for pid in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/status") as f:
                    fields = dict(line.split(":", 1) for line in f if ":" in line)
                if int(fields["Uid"].split()[0]) == uid:
                    count += int(fields.get("Threads", "1").split()[0])
            except (OSError, KeyError, ValueError, IndexError):
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


# =========================================================================== the request

class Inputs:
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



def run_child(assignment, source, work, time_limit, file_limit, memory_limit, cells=None):
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
    encode = Inputs(work)
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
    # the run's token marks its processes; TINYDDPM_GRADE_RUN prefixes it (to find a class
    # run's processes from outside, as the tests do)
    token = os.environ.get("TINYDDPM_GRADE_RUN", "")[:32] + secrets.token_hex(8)
    env = {"PATH": "/usr/bin:/bin", "HOME": work, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "TINYDDPM_GRADE_TOKEN": token}
    cmd = _die_with_us() + namespace_prefix() + [sys.executable, "-I", "-S",
                                                 os.path.join(work, "_child.py"), work]
    start = time.monotonic()
    with open(os.path.join(work, "stderr.txt"), "wb") as stderr:  # the child's own start-up
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=stderr,
                                start_new_session=True, close_fds=True)
    stopped = ""
    progress, last, weighed = 0, start, start
    try:
        while True:
            try:
                proc.wait(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                pass
            if _stop.is_set():
                stopped = "interrupted"
                break
            now = time.monotonic()
            done = len(os.listdir(out))  # a file for the start, each notebook cell, the import,
            if done != progress:         # each check
                progress, last = done, now
            if now - start > file_limit:
                stopped = "file"
                break
            # a check (or the import) past its time limit that the alarm did not stop
            if now - last > time_limit + (STARTUP_GRACE if progress < 2 else STALL_GRACE):
                stopped = "stall"
                break
            if now - weighed > 0.5:      # what it wrote, in all: the limit is per file
                weighed = now
                if _too_much(out):
                    stopped = "disk"
                    break
    finally:
        _kill_everything(proc, token)
    return proc.returncode, time.monotonic() - start, stopped


def _too_much(folder):
    """Whether the child wrote more than OUTPUT_FILES_LIMIT files or OUTPUT_LIMIT bytes."""
    files = size = 0
    stack = [folder]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            files += 1
            if files > OUTPUT_FILES_LIMIT:
                return True
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    size += entry.stat(follow_symlinks=False).st_size
            except OSError:
                pass
    return size > OUTPUT_LIMIT
