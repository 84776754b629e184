"""Matrix products on the same threads as the numba loops: one thread pool, not two.

NumPy's OpenBLAS keeps its own worker threads, which spin for a while after each product, right
when a numba loop wants the same cores; on 2 cores the two pools fight (measured: a parallel
numba ReLU after a 2-thread product took 8 ms instead of 0.05 ms). So tinyddpm uses one pool,
numba's: on import it sets NumPy's OpenBLAS to one thread, and :func:`matmul` splits a product
into row blocks, one per numba thread, each a single-threaded ``cblas_sgemm`` call into that same
OpenBLAS (``C = A @ B``: rows of A and C; ``C = A^T @ B``: the summed-over rows, then the partial
products are added). The arithmetic is still all OpenBLAS's.

Side effect: after ``import tinyddpm``, NumPy's own ``@`` runs on one thread. Where NumPy's
OpenBLAS cannot be found (another BLAS, another platform), or ``TINYDDPM_NUMPY_BLAS=1`` is set,
nothing is changed: :func:`matmul` is NumPy's ``@`` and the numba loops run on one thread
(:data:`SHARED_POOL` is False), the arrangement that avoids the fight the other way round.
"""
import ctypes
import glob
import os

import numba
import numpy as np
from numba import njit, prange

from .. import _threads
from .._threads import work_parts  # one part per core, however many threads run now

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_MIN_FLOPS_TO_SPLIT = 1 << 18  # below this a product runs on one thread (splitting costs more)


def _find_openblas():
    """(sgemm, dgemm, set_num_threads) of the OpenBLAS NumPy is linked with, or None."""
    if os.environ.get("TINYDDPM_NUMPY_BLAS") == "1":
        return None
    root = os.path.dirname(os.path.dirname(np.__file__))
    candidates = (glob.glob(os.path.join(root, "numpy.libs", "libscipy_openblas*"))
                  + glob.glob(os.path.join(os.path.dirname(np.__file__), ".dylibs",
                                           "libscipy_openblas*")))
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix, index in (("scipy_", "64_", ctypes.c_int64), ("", "64_", ctypes.c_int64),
                                      ("scipy_", "", ctypes.c_int), ("", "", ctypes.c_int)):
            try:
                sgemm = getattr(lib, f"{prefix}cblas_sgemm{suffix}")
                dgemm = getattr(lib, f"{prefix}cblas_dgemm{suffix}")
                set_threads = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}")
            except AttributeError:
                continue
            for fn, real in ((sgemm, ctypes.c_float), (dgemm, ctypes.c_double)):
                fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, index, index, index, real,
                               ctypes.c_void_p, index, ctypes.c_void_p, index, real,
                               ctypes.c_void_p, index]
                fn.restype = None
            set_threads.argtypes, set_threads.restype = [ctypes.c_int], None
            return sgemm, dgemm, set_threads
    return None


_OPENBLAS = _find_openblas()
SHARED_POOL = _OPENBLAS is not None
if SHARED_POOL:
    _OPENBLAS[2](1)
else:
    _threads.disable()  # one numba thread, whatever the load
    numba.set_num_threads(1)


@njit(inline="always", cache=True)
def part_rows(m, parts, p):
    """Rows [lo, hi) of part ``p`` when ``m`` rows are split into ``parts`` runs of
    ceil(m / parts) rows (the last shorter, trailing ones empty): one part per numba thread."""
    step = -(-m // parts)
    lo = min(m, p * step)
    return lo, min(m, lo + step)


@njit(parallel=True, cache=True)
def _gemm_rows(gemm, a, b, c, trans_b, parts, bias):
    """c = a @ b (or a @ b^T) [+ bias]: each of ``parts`` threads computes a block of c's rows.
    A bias (one value per column; empty for none) is written first and the product added to it
    (BLAS's beta = 1), so adding it costs no extra pass over c."""
    m, k = a.shape
    n = c.shape[1]
    size = a.itemsize
    for p in prange(parts):
        lo, hi = part_rows(m, parts, p)
        if hi > lo:
            beta = 0.0
            if bias.size:
                beta = 1.0
                for r in range(lo, hi):
                    c[r, :] = bias
            gemm(_ROW_MAJOR, _NO_TRANS, _TRANS if trans_b else _NO_TRANS, hi - lo, n, k, 1.0,
                 a.ctypes.data + lo * k * size, k, b.ctypes.data, b.shape[1], beta,
                 c.ctypes.data + lo * n * size, n)


@njit(parallel=True, cache=True)
def _gemm_reduce(gemm, a, b, partial):
    """partial[p] = a[rows_p]^T @ b[rows_p]; the caller adds them (c = a^T @ b)."""
    m, k = a.shape
    n = b.shape[1]
    parts = partial.shape[0]
    size = a.itemsize
    for p in prange(parts):
        lo, hi = part_rows(m, parts, p)
        if hi > lo:
            gemm(_ROW_MAJOR, _TRANS, _NO_TRANS, k, n, hi - lo, 1.0,
                 a.ctypes.data + lo * k * size, k, b.ctypes.data + lo * n * size, n, 0.0,
                 partial.ctypes.data + p * k * n * size, n)
        else:
            partial[p] = 0


def bias_vector(bias, dtype):
    """``bias`` as a contiguous array of ``dtype``; None becomes an empty array, which the numba
    loops here and in ``conv.py`` read as "no bias"."""
    return np.empty(0, dtype) if bias is None else np.ascontiguousarray(bias, dtype=dtype)


def matmul(a, b, trans_a=False, trans_b=False, bias=None):
    """``a @ b``, ``a.T @ b`` (``trans_a``) or ``a @ b.T`` (``trans_b``) of 2-D arrays, plus
    ``bias`` (one value per column of the result) if given.

    float32 and float64 products run on numba's threads (see the module's docstring); anything
    else, or a BLAS this module does not know, is NumPy's ``@``.
    """
    if trans_a and trans_b:
        raise ValueError("matmul: trans_a and trans_b together are not supported")
    if (not SHARED_POOL or a.dtype != b.dtype or a.dtype not in (np.float32, np.float64)
            or a.ndim != 2 or b.ndim != 2 or (bias is not None and trans_a)):
        c = (a.T if trans_a else a) @ (b.T if trans_b else b)
        if bias is not None:
            c += bias
        return c
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    gemm = _OPENBLAS[0] if a.dtype == np.float32 else _OPENBLAS[1]
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    n = b.shape[0] if trans_b else b.shape[1]
    if (b.shape[1] if trans_b else b.shape[0]) != k:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not match "
                         f"(trans_a={trans_a}, trans_b={trans_b})")
    parts = work_parts() if 2 * m * n * k >= _MIN_FLOPS_TO_SPLIT else 1
    if trans_a:
        partial = np.empty((max(1, min(parts, a.shape[0])), m, n), a.dtype)
        _gemm_reduce(gemm, a, b, partial)
        return partial[0] if partial.shape[0] == 1 else partial.sum(axis=0)
    c = np.empty((m, n), a.dtype)
    bias = bias_vector(bias, a.dtype)
    if bias.size not in (0, n):
        raise ValueError(f"matmul: bias of shape {bias.shape} for a result with {n} columns")
    if m and n:
        _gemm_rows(gemm, a, b, c, trans_b, max(1, min(parts, m)), bias)
    return c
