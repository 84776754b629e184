"""How the grader's child confines itself before any student code runs (standard library only:
the child cannot import tinyddpm).

* :func:`set_limits`: resource limits (address space, CPU time, processes, file size, open
  files, no core files) that the student's code cannot raise again.
* :func:`landlock`: the Linux Landlock LSM (kernel 5.13+), unprivileged: the student's code may
  read only the standard library, NumPy and its own folder, write only its results folder,
  execute no program, and (where the kernel's Landlock ABI has them) neither use TCP nor signal
  or connect to processes outside its own sandbox.
* :func:`drop_root_powers`: graded as root, the child keeps uid 0 for reading Python where it is
  installed (often /root) but loses every capability, for good (so Landlock decides what files
  it may touch, and the kernel's limits apply to it as to any user).
* :func:`become_user`: the fallback for root without Landlock: switch to a fresh unprivileged
  uid after importing the modules a student may need (Python's folder may be unreadable to it).
"""
import ctypes
import os
import resource

_libc = ctypes.CDLL(None, use_errno=True)
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446   # the same on every architecture
_PR_SET_NO_NEW_PRIVS, _PR_CAPBSET_DROP, _PR_SET_SECUREBITS, _PR_CAP_AMBIENT = 38, 24, 28, 47

# Landlock's filesystem rights (linux/landlock.h)
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_REMOVE_DIR, _REMOVE_FILE, _MAKE_DIR, _MAKE_REG = 1 << 4, 1 << 5, 1 << 7, 1 << 8
_REFER, _TRUNCATE, _IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_FILE_RIGHTS = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV


def set_limits(limits):
    """Soft and hard limits from {"as", "cpu", "nproc", "fsize", "nofile"} (bytes, seconds,
    processes, bytes, files); the CPU's hard limit is 2 s above its soft one (SIGXCPU first)."""
    table = (("as", resource.RLIMIT_AS, 0), ("cpu", resource.RLIMIT_CPU, 2),
             ("nproc", resource.RLIMIT_NPROC, 0), ("fsize", resource.RLIMIT_FSIZE, 0),
             ("nofile", resource.RLIMIT_NOFILE, 0), ("core", resource.RLIMIT_CORE, 0))
    for key, which, grace in table:
        value = 0 if key == "core" else limits.get(key)
        if value is None:
            continue
        _, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard - grace) if hard > grace else hard
        resource.setrlimit(which, (value, value + grace if hard == resource.RLIM_INFINITY
                                   else min(value + grace, hard)))


def landlock_abi():
    """The kernel's Landlock ABI version (0 where there is none)."""
    try:
        abi = _libc.syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    except (AttributeError, OSError):
        return 0
    return abi if abi > 0 else 0


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _check(result, what):
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def landlock(read, write, abi):
    """Restrict this process (and every process it starts) to reading ``read`` (paths: folders
    and what lies beneath them, or files) and reading and writing ``write``. Raises OSError."""
    fs = (1 << 13) - 1 | (_REFER if abi >= 2 else 0) | (_TRUNCATE if abi >= 3 else 0) \
        | (_IOCTL_DEV if abi >= 5 else 0)
    attr = _RulesetAttr(fs, 0b11 if abi >= 4 else 0, 0b11 if abi >= 6 else 0)  # TCP; signals
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = _check(_libc.syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
                                   ctypes.c_uint32(0)), "landlock_create_ruleset")
    readable = _READ_FILE | _READ_DIR
    writable = readable | _WRITE_FILE | _REMOVE_FILE | _MAKE_DIR | _MAKE_REG | \
        (_TRUNCATE if abi >= 3 else 0)
    try:
        for paths, rights in ((read, readable), (write, writable)):
            for path in paths:
                try:
                    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    continue
                try:
                    allowed = rights if os.path.isdir(path) else rights & _FILE_RIGHTS
                    rule = _PathBeneath(allowed & fs, fd)
                    _check(_libc.syscall(_ADD_RULE, ruleset, 1, ctypes.byref(rule),
                                         ctypes.c_uint32(0)), f"landlock_add_rule {path}")
                finally:
                    os.close(fd)
        _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        _check(_libc.syscall(_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)),
               "landlock_restrict_self")
    finally:
        os.close(ruleset)


def drop_root_powers():
    """Keep uid 0 but lose every capability for good: locked secure bits (uid 0 gives no
    capabilities, even through exec), an empty bounding set, no ambient, effective, permitted or
    inheritable capabilities. Raises OSError."""
    secure = 0b11101111      # NOROOT, NO_SETUID_FIXUP, NO_CAP_AMBIENT_RAISE, all locked; no KEEP_CAPS
    _check(_libc.prctl(_PR_SET_SECUREBITS, secure, 0, 0, 0), "securebits")
    try:
        last = int(open("/proc/sys/kernel/cap_last_cap").read())
    except (OSError, ValueError):
        last = 63
    for cap in range(last + 1):
        _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
    _libc.prctl(_PR_CAP_AMBIENT, 4, 0, 0, 0)             # PR_CAP_AMBIENT_CLEAR_ALL

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    _check(_libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)()), "capset")
    with open("/proc/self/status") as f:
        eff = next(line for line in f if line.startswith("CapEff:"))
    if int(eff.split()[1], 16):
        raise OSError(0, "capabilities are still effective")


def become_user(uid, gid, preload):
    """Import ``preload`` (module names), then switch to ``uid``/``gid`` for good."""
    import importlib

    for name in preload:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def readable_python(paths, skip=("site-packages", "dist-packages")):
    """The entries of the standard library folders in ``paths`` (sys.path), without the
    site-packages beneath them (another package there could be the reference)."""
    out = []
    for path in paths:
        if os.path.isdir(path) and os.path.basename(path).startswith("python"):
            out += [os.path.join(path, name) for name in os.listdir(path) if name not in skip]
        elif os.path.exists(path):
            out.append(path)
    return out
