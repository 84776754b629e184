"""The kernels' thread count: all the cores when the machine is quiet, one passive thread more
when other processes keep it busy (tinyddpm/_threads.py). Speed itself is measured by
benchmarks/bench_contention.py, not here."""
import os
import subprocess
import sys

import pytest

from tinyddpm import _threads


def _run(code, **env):
    full = {k: v for k, v in os.environ.items()
            if k not in ("NUMBA_NUM_THREADS", "TINYDDPM_ADAPTIVE_THREADS")}
    done = subprocess.run([sys.executable, "-c", code], env={**full, **env}, text=True,
                          capture_output=True, check=True, timeout=300)
    return done.stdout.split()


PROBE = """
import numba, numpy as np, tinyddpm as td
from tinyddpm import nn
nn.Conv2D(4, 3)(td.Tensor(np.ones((2, 8, 8, 1), np.float32)))
print(numba.config.NUMBA_NUM_THREADS, numba.get_num_threads())
"""


@pytest.mark.skipif(_threads.CORES < 2 or not os.path.exists("/proc/stat"),
                    reason="needs 2 cores and Linux's /proc/stat")
def test_a_spare_thread_is_started_and_the_cores_are_used_when_quiet():
    import tinyddpm.kernels.blas as blas
    if not blas.SHARED_POOL:
        pytest.skip("NumPy's OpenBLAS not found: the kernels run on one thread")
    pool, used = map(int, _run(PROBE))
    assert pool == _threads.CORES + 1
    assert used in (_threads.CORES, _threads.CORES + 1)  # +1 only if the machine is busy now


@pytest.mark.parametrize("env,expected", [({"NUMBA_NUM_THREADS": "1"}, ["1", "1"]),
                                          ({"TINYDDPM_ADAPTIVE_THREADS": "0"}, None)])
def test_the_users_choice_is_left_alone(env, expected):
    out = _run(PROBE, **env)
    if expected:
        assert out == expected
    else:  # numba's own default: every thread it starts, no spare one
        assert out[0] == out[1] != str(_threads.CORES + 1)


def test_others_busy_switch_to_the_passive_team_and_back(monkeypatch):
    state = _threads._Adaptive()
    state.enabled = True
    clock = {"now": 100.0, "busy": 0, "total": 0, "ours": 0.0}
    applied = []
    monkeypatch.setattr(_threads.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(_threads, "_machine_ticks", lambda: (clock["busy"], clock["total"]))
    monkeypatch.setattr(_threads.os, "times", lambda: (clock["ours"], 0.0, 0, 0, 0))
    monkeypatch.setattr(state, "_apply", lambda: applied.append(state.threads()))

    def tick(seconds, others_cores, our_cores):
        """``seconds`` pass, other processes use ``others_cores`` and this one ``our_cores``."""
        clock["now"] += seconds
        ticks = 100 * seconds * _threads.CORES  # USER_HZ ticks of all the cores
        clock["total"] += ticks
        clock["busy"] += ticks * min(1.0, (others_cores + our_cores) / _threads.CORES)
        clock["ours"] += our_cores * seconds
        state.adapt()

    tick(0.3, 0.0, 0.0)  # first call: the quiet team
    assert applied[-1] == _threads.CORES and not state.contended
    tick(0.1, 1.5, 0.5)  # too soon to look again
    assert not state.contended
    tick(0.3, 1.5, 0.5)  # others keep 1.5 cores busy: contended
    assert state.contended and applied[-1] == _threads.CORES + 1
    tick(0.3, 0.4, 1.6)  # between the two thresholds: stays
    assert state.contended
    tick(0.3, 0.0, 2.0)  # quiet again
    assert not state.contended and applied[-1] == _threads.CORES
    tick(0.3, 0.0, 2.0)
    tick(60, 2.0, 0.0)  # a long pause (the user was reading): a new window, no decision
    assert not state.contended


@pytest.mark.skipif(not _threads._state.enabled, reason="tinyddpm does not choose the threads here")
def test_results_do_not_depend_on_the_thread_count(monkeypatch):
    """A quiet and a busy machine run the kernels on cores or cores + 1 threads: the weights
    after training steps and the samples must be bit-identical either way (exact resume,
    reproducible seeds)."""
    import numba
    import numpy as np

    import tinyddpm as td

    monkeypatch.setattr(_threads._state, "next_check", float("inf"))  # no switching meanwhile
    rng = np.random.default_rng(0)
    inputs = {"X_noisy": rng.standard_normal((8, 28, 28, 1), dtype=np.float32),
              "time": rng.integers(1, 4001, 8)}
    noise = rng.standard_normal((8, 28, 28, 1), dtype=np.float32)
    results = []
    for threads in (_threads.CORES, _threads.CORES + 1):
        numba.set_num_threads(threads)
        model = td.build_diffusion_model(seed=0).compile(loss=td.Huber(), optimizer=td.Nadam())
        for _ in range(2):
            model.train_step(inputs, noise)
        results.append((model.state_dict(), td.generate_ddim(model, 4, steps=3, seed=0)))
    numba.set_num_threads(_threads.CORES)
    (a, x), (b, y) = results
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    np.testing.assert_array_equal(x, y)
