"""How many threads tinyddpm's kernels use: all the cores on a quiet machine, and a way of
waiting that gives the cores back when other processes want them.

numba runs the parallel kernels on an OpenMP thread pool (GNU libgomp). Between kernels an idle
OpenMP thread spins for a while before it sleeps. On a quiet machine that saves a wake-up per
kernel (passive waiting made a training step 38% slower here). On a shared one (a classroom
server, notebooks side by side) a spinning thread burns the time slice its descheduled partner
needs, and every kernel's barrier then waits whole time slices: with four competing busy
processes on 2 cores, DDIM-50 for 64 images took 35x its quiet time, a training step 13x
(``benchmarks/bench_contention.py``).

libgomp itself has the answer, documented with ``GOMP_SPINCOUNT``: when a team has more threads
than the process has CPUs, its threads spin only briefly (about 100 iterations) before they
sleep. So tinyddpm starts numba with one thread more than the cores, and

* on a quiet machine runs every kernel on as many threads as cores (normal spinning, full speed);
* when other processes keep at least half a core busy, runs them on cores + 1 threads, so the
  threads wait passively, and goes back once the others have been quiet for a while. The work
  is still split into one part per core (:func:`work_parts`): the extra thread only makes the
  team larger than the CPUs, and results do not depend on the mode.

:func:`adapt` decides, at most every ``CHECK_EVERY_S`` seconds, from ``/proc/stat``: the busy
time of the whole machine minus this process's own CPU time is what the others use. It is
called where the graph work starts (``Function.apply``, ``Tensor.backward``), on the thread
that runs the kernels (numba's thread count belongs to the calling thread). Measured with four
competitors: 3.3x the quiet time for sampling and 3.4x for training, against 35x and 13x.

Nothing changes where the user chose a thread count (``NUMBA_NUM_THREADS``), where numba's pool
had already started with another size, where ``TINYDDPM_ADAPTIVE_THREADS=0`` is set, or off
Linux (no ``/proc/stat``): numba's own default then applies.
"""
from __future__ import annotations

import os
import time

CHECK_EVERY_S = 0.25        # how often adapt() looks at the machine
BUSY_CORES = 0.5            # others busier than this: contended
QUIET_CORES = 0.25          # others below this: quiet again (hysteresis between the two)
_MAX_WINDOW_S = 2.0         # a longer gap between calls (the user paused): start a new window


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


CORES = _cores()


def _machine_ticks():
    """(busy, total) clock ticks of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    return sum(values) - values[3] - values[4], sum(values)  # idle and iowait are not busy


class _Adaptive:
    def __init__(self):
        self.enabled = False
        self.contended = False
        self.next_check = 0.0
        self.window = None

    def setup(self):
        """Before numba starts its pool: ask for one spare thread (see the module docstring)."""
        if (os.environ.get("TINYDDPM_ADAPTIVE_THREADS") == "0" or "NUMBA_NUM_THREADS" in os.environ
                or CORES < 2):
            return
        try:
            _machine_ticks()
        except (OSError, ValueError):
            return
        os.environ["NUMBA_NUM_THREADS"] = str(CORES + 1)
        import numba

        if numba.config.NUMBA_NUM_THREADS != CORES + 1:  # numba was imported before us
            try:
                numba.config.NUMBA_NUM_THREADS = CORES + 1
            except Exception:  # noqa: BLE001 - a pool that already started keeps its size
                os.environ.pop("NUMBA_NUM_THREADS")
                return
        self.enabled = True

    def threads(self):
        return CORES + 1 if self.contended else CORES

    def adapt(self):
        """Choose the thread count for the kernels this thread runs next (cheap: a clock read,
        and a look at /proc/stat every ``CHECK_EVERY_S``)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now < self.next_check:
            return
        self.next_check = now + CHECK_EVERY_S
        busy, total = _machine_ticks()
        ours = sum(os.times()[:2])
        window, self.window = self.window, (now, busy, total, ours)
        if window is None or now - window[0] > _MAX_WINDOW_S or total == window[2]:
            if window is None:
                self._apply()
            return
        machine = (busy - window[1]) / (total - window[2]) * CORES  # busy cores, all processes
        others = machine - (ours - window[3]) / (now - window[0])
        if self.contended and others < QUIET_CORES or not self.contended and others > BUSY_CORES:
            self.contended = not self.contended
        self._apply()

    def _apply(self):
        import numba

        if numba.get_num_threads() != self.threads():
            numba.set_num_threads(self.threads())


    def disable(self):
        self.enabled = False

    def work_parts(self):
        """How many parts a kernel splits a sum into: one per core while tinyddpm chooses the
        thread count, whatever that count is now, so results never depend on the load (the
        same partial sums, added in the same order, on 2 threads or 3); otherwise numba's
        thread count."""
        if self.enabled:
            return CORES
        import numba

        return numba.get_num_threads()


_state = _Adaptive()
setup = _state.setup
adapt = _state.adapt
disable = _state.disable
work_parts = _state.work_parts


def contended():
    """Whether the kernels currently run in the contended mode (cores + 1 passive threads)."""
    return _state.contended
