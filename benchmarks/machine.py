"""What both benchmarks measure about the machine: the matmul roofline, load, BLAS threads."""
import os
import statistics
import time
from pathlib import Path

import numpy as np


def matmul_roofline(repeats=10):
    """NumPy float32 1024 x 1024 @ 1024 x 1024, GFLOP/s (median of ``repeats``, after 3 warm-ups).

    In a process that has imported tinyddpm, NumPy's own ``@`` runs on one thread (see
    ``tinyddpm/kernels/blas.py``), so the product then goes through ``tinyddpm.kernels.matmul``,
    the same OpenBLAS split over every core: the roofline stays the whole machine's.
    """
    import sys
    blas = sys.modules.get("tinyddpm.kernels.blas")
    product = blas.matmul if blas is not None and blas.SHARED_POOL else np.matmul
    rng = np.random.default_rng(0)
    a = rng.standard_normal((1024, 1024), dtype=np.float32)
    b = rng.standard_normal((1024, 1024), dtype=np.float32)
    for _ in range(3):  # wake the BLAS threads and the allocator up
        product(a, b)
    times = []
    for _ in range(max(repeats, 10)):
        start = time.perf_counter()
        product(a, b)
        times.append(time.perf_counter() - start)
    return 2 * 1024 ** 3 / statistics.median(times) / 1e9


def busy_cores(seconds=0.5):
    """How many cores other processes kept busy over ``seconds`` (Linux /proc/stat), or None."""
    def sample():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait
    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    total = total1 - total0
    return (1 - (idle1 - idle0) / total) * (os.cpu_count() or 1) if total else None


def blas_threads():
    """['libopenblas: 2', ...] as threadpoolctl sees NumPy's BLAS, or None."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return sorted({f"{Path(i['filepath']).name.split('.')[0]}: {i['num_threads']}"
                   for i in threadpool_info() if i["user_api"] == "blas"})
