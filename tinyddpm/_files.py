"""Writing files so that nothing is lost.

* :func:`atomic_write`: every file the package writes (checkpoints, sample arrays, PNG grids,
  GIFs, the classifier asset) goes to a temporary file in the same folder, is flushed to disk and
  only then renamed over the target, so a crash or a full disk never leaves a half-written file
  and never destroys the previous one. A failure is one :class:`WriteError` line naming the file
  and the reason ("the disk is full", "permission denied").
* :func:`check_output`: before any work, the place an output will go is tried for real (a
  temporary file created and removed there), so a read-only folder is found before an epoch of
  training or an hour of sampling, not after.
* :class:`FileLock`: an advisory lock (``<path>.lock``, holding the owner's pid and command) so
  that two training runs cannot share one checkpoint. The operating system releases it when the
  owner dies, so a lock left by a killed run is taken over, with a notice.
"""
from __future__ import annotations

import errno
import os
import sys
import tempfile
import time

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, a warning instead
    fcntl = None


class WriteError(OSError):
    """A file could not be written (disk full, no permission, read-only file system, ...); the
    message names the file and the reason, and any previous version of it is unchanged."""


def _write_error(cause, message):
    """A WriteError whose text is ``message`` alone (no "[Errno N]" before it)."""
    error = WriteError(message)
    error.errno = cause.errno
    return error


class LockedError(RuntimeError):
    """Another running process holds the lock on a file this process wants to write."""


_REASONS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
            errno.EACCES: "permission denied", errno.EPERM: "permission denied",
            errno.EROFS: "the file system is read-only", errno.ENOENT: "the folder does not exist",
            errno.ENOTDIR: "a part of the path is not a folder", errno.EISDIR: "it is a folder"}


def reason(error):
    """Why an OSError happened, in words ("the disk is full")."""
    return _REASONS.get(getattr(error, "errno", None)) or getattr(error, "strerror", None) or \
        str(error)


def _temp_prefix(path):
    return f".{os.path.basename(path)}.tmp-"


def atomic_write(path, write, binary=True):
    """Call ``write(f)`` on a temporary file next to ``path``, flush it to disk, rename it over
    ``path``. Returns ``path``.

    Raises
    ------
    WriteError
        The file could not be written; the message says which and why, and a previous file at
        ``path`` is left as it was. (Temporary files that earlier runs, killed while writing,
        left beside ``path`` are removed first.)
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=f"{_temp_prefix(path)}{os.getpid()}-", dir=folder)
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it normal permissions
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise _write_error(e, f"could not write {path!r}: {reason(e)}"
                           + ("; the previous file is unchanged" if os.path.exists(path) else "")
                           ) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
    return path


def remove_stale_temps(path):
    """Remove the temporary files of ``path`` that a writer killed mid-write left behind: ours
    carry the writer's pid (removed when that process is gone); those of older versions of the
    package (``.tmp-*.npz``) when over an hour old."""
    folder = os.path.dirname(os.path.abspath(path))
    prefix = _temp_prefix(path)
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        full = os.path.join(folder, name)
        try:
            if name.startswith(prefix):
                pid = int(name[len(prefix):].split("-", 1)[0])
                if not _alive(pid):
                    os.remove(full)
            elif name.startswith(".tmp-") and name.endswith(".npz") and \
                    time.time() - os.path.getmtime(full) > 3600:
                os.remove(full)
        except (ValueError, OSError):
            continue


def _alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output(path, option, suffixes=None, need_bytes=0, example="samples"):
    """Before any work: ``path`` (given as ``option``) names a file, with one of ``suffixes``,
    in an existing folder where a file can really be created, with ``need_bytes`` free; an
    existing file there must be replaceable. ``example``: a file name to suggest.

    Raises
    ------
    ValueError
        With a message naming ``option`` and the fix (the CLI shows it as one ``error:`` line).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if in_assets(path):
        raise ValueError(f"{option} {path!r} is in tinyddpm's folder of shipped files, which no "
                         "command writes into: choose another place")
    if os.path.isdir(path):
        example = os.path.join(path, example + (suffixes[0] if suffixes else ""))
        raise ValueError(f"{option} {path!r} is a folder: give a file name, e.g. {example!r}")
    if suffixes and os.path.splitext(path)[1].lower() not in suffixes:
        raise ValueError(f"{option} {path!r}: the file name must end in {' or '.join(suffixes)}")
    if not os.path.isdir(folder):
        raise ValueError(f"{option} {path!r}: the folder {folder!r} does not exist; create it "
                         "first")
    try:
        fd, probe = tempfile.mkstemp(prefix=f"{_temp_prefix(path)}{os.getpid()}-", dir=folder)
        os.close(fd)
        os.remove(probe)
    except OSError as e:  # the folder exists: ENOENT here means no file can be made in it
        why = "no file can be created there" if e.errno == errno.ENOENT else reason(e)
        raise ValueError(f"{option} {path!r}: cannot write in {folder!r}: {why}; choose "
                         "another place") from None
    if os.path.exists(path):
        if not os.path.isfile(path):
            raise ValueError(f"{option} {path!r} exists and is not a regular file")
        probe = f"{os.path.join(folder, _temp_prefix(path))}{os.getpid()}-link"
        try:  # a file that may not be replaced (immutable, append-only) refuses a new link
            os.link(path, probe)
            os.remove(probe)
        except PermissionError as e:
            raise ValueError(f"{option} {path!r}: the file exists and cannot be replaced: "
                             f"{reason(e)}; choose another place") from None
        except OSError:  # no hard links on this file system: nothing to learn here
            pass
    if need_bytes:
        import shutil

        free = shutil.disk_usage(folder).free
        if free < need_bytes:
            raise ValueError(f"{option} {path!r}: {free / 2**20:,.1f} MiB free in {folder!r}, "
                             f"and this needs about {need_bytes / 2**20:,.1f} MiB; free some "
                             "space or choose another place")
    return path


ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")


def in_assets(path):
    """Whether ``path`` (existing or not, through links) lies in the package's folder of shipped
    files, tinyddpm/assets, which only the maintainers' export writes."""
    return os.path.dirname(os.path.realpath(path)) == os.path.realpath(ASSETS)


class FileLock:
    """An advisory lock on ``path`` (a checkpoint), held in ``<path>.lock``.

    ``acquire()`` raises :class:`LockedError` at once when another live process holds it,
    naming that process; the lock file records this process's pid and command. Locks are
    per process and re-entrant: one process may take a lock it holds again (the CLI and its
    ``ModelCheckpoint`` both do). The lock goes away when ``release()`` is called as often as
    ``acquire()``, or when the process ends, however it ends.
    """

    _held = {}  # lock path -> [fd, count] for the locks this process holds

    def __init__(self, path):
        self.path = os.fspath(path)
        self.lock_path = os.path.abspath(self.path) + ".lock"

    def acquire(self, what="another tinyddpm run"):
        held = FileLock._held.get(self.lock_path)
        if held:
            held[1] += 1
            return self
        if fcntl is None:  # pragma: no cover
            print(f"tinyddpm: no file locks on this system; make sure no other run writes "
                  f"{self.path}", file=sys.stderr)
            FileLock._held[self.lock_path] = [None, 1]
            return self
        while True:
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as e:
                raise _write_error(e, f"could not create the lock {self.lock_path!r}: "
                                   f"{reason(e)}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = ": ".join(_read(fd).splitlines()[:2])
                os.close(fd)
                raise LockedError(f"{self.path!r} is in use by {what} ({owner or 'pid unknown'})"
                                  f": wait until it finishes, or choose another file") from None
            try:  # the file may have been removed by its last owner before we locked it
                same = os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _read(fd).split("\n", 1)[0]
        if previous and not previous.startswith(f"pid {os.getpid()} "):
            print(f"tinyddpm: took over the lock on {self.path} left by {previous}, a run that "
                  "ended without releasing it (killed?)", file=sys.stderr)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                 f"{' '.join(sys.argv) or 'python'}\n".encode())
        FileLock._held[self.lock_path] = [fd, 1]
        return self

    def release(self):
        held = FileLock._held.get(self.lock_path)
        if not held:
            return
        held[1] -= 1
        if held[1] > 0:
            return
        del FileLock._held[self.lock_path]
        if held[0] is not None:
            try:
                os.remove(self.lock_path)
            except OSError:
                pass
            os.close(held[0])  # closing the descriptor releases the lock

    @classmethod
    def release_all(cls):
        """Release every lock this process holds (the command line does, on its way out)."""
        for lock_path in list(cls._held):
            cls._held[lock_path][1] = 1
            FileLock(lock_path[:-len(".lock")]).release()

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _read(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 1000).decode(errors="replace")
    return "".join(c for c in text if c.isprintable() or c == "\n").strip()
