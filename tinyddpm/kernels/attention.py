"""Scaled dot-product attention on numba's threads, one (image, head) pair per thread.

    S = Q K^T / sqrt(d),   A = softmax(S) over each row,   Z = A V

Backward, with G = dL/dZ, one pass over the rows i of each pair:

    dA[i, j] = G[i] . V[j],   dS[i, j] = A[i, j] (dA[i, j] - sum_j' dA[i, j'] A[i, j']) / sqrt(d),
    dQ[i] = sum_j dS[i, j] K[j],   dK[j] += dS[i, j] Q[i],   dV[j] += A[i, j] G[i].

NumPy's version (``reference.attention``, used for dtypes these do not take) makes batched
products of tiny d-wide matrices and several passes over the (L, M) scores, all on one thread; at
14x14 in the improved U-Net it was a quarter of a training step. Here each loop runs along the M
keys (K and V transposed first, so they are contiguous and vectorise), the row maximum, the
normalisation and A V share passes, and the exponential stays NumPy's (vectorised; numba's is a
scalar call per score).
"""
import numpy as np
from numba import njit, prange


@njit(parallel=True, fastmath=True, cache=True)
def _shifted_scores(q, kt, scale):
    """S - max(S) per row, S = Q K^T scale; kt is K transposed, (B, d, M), so the inner loops
    run along the M keys (contiguous, vectorised)."""
    b, L, d = q.shape
    m = kt.shape[2]
    s = np.empty((b, L, m), dtype=q.dtype)
    for p in prange(b):
        qp, kp = q[p], kt[p]
        for i in range(L):
            row = s[p, i]
            for j in range(m):
                row[j] = 0
            for c in range(d):
                w = qp[i, c] * scale
                kc = kp[c]
                for j in range(m):
                    row[j] += w * kc[j]
            best = row[0]
            for j in range(m):
                best = max(best, row[j])
            for j in range(m):
                row[j] -= best
    return s


@njit(parallel=True, fastmath=True, cache=True)
def _normalise_and_mix(e, vt):
    """A = e / rowsum(e) in place, and Z = A V with vt = V transposed, (B, e, M)."""
    b, L, m = e.shape
    width = vt.shape[1]
    z = np.empty((b, L, width), dtype=e.dtype)
    for p in prange(b):
        vp = vt[p]
        for i in range(L):
            row = e[p, i]
            total = 0.0
            for j in range(m):
                total += row[j]
            inv = 1.0 / total
            for j in range(m):
                row[j] *= inv
            for c in range(width):
                vc = vp[c]
                acc = 0.0
                for j in range(m):
                    acc += row[j] * vc[j]
                z[p, i, c] = acc
    return z


@njit(parallel=True, fastmath=True, cache=True)
def _backward(g, q, kt, vt, a, scale):
    """dQ (B, L, d), dK^T (B, d, M), dV^T (B, e, M); every inner loop runs along the M keys."""
    b, L, d = q.shape
    m, width = a.shape[2], vt.shape[1]
    dq = np.empty_like(q)
    dkt = np.zeros((b, d, m), dtype=q.dtype)
    dvt = np.zeros((b, width, m), dtype=q.dtype)
    for p in prange(b):
        gp, qp, kp, vp = g[p], q[p], kt[p], vt[p]
        ds = np.empty(m, dtype=q.dtype)
        for i in range(L):
            row = a[p, i]
            for j in range(m):
                ds[j] = 0
            for c in range(width):              # dA[i] = G[i] V^T; dV^T[c] += G[i, c] A[i]
                gc = gp[i, c]
                vc, dvc = vp[c], dvt[p, c]
                for j in range(m):
                    ds[j] += gc * vc[j]
                    dvc[j] += gc * row[j]
            dot = 0.0
            for j in range(m):
                dot += ds[j] * row[j]
            for j in range(m):                  # dS[i] = A[i] (dA[i] - dot) scale
                ds[j] = row[j] * (ds[j] - dot) * scale
            for c in range(d):                  # dQ[i, c] = dS[i] . K[:, c]; dK^T[c] += ...
                qc = qp[i, c]
                kc, dkc = kp[c], dkt[p, c]
                acc = 0.0
                for j in range(m):
                    acc += ds[j] * kc[j]
                    dkc[j] += ds[j] * qc
                dq[p, i, c] = acc
    return dq, dkt, dvt


def _fits(*arrays):
    first = arrays[0]
    return (first.dtype in (np.float32, np.float64) and first.ndim >= 3
            and all(x.dtype == first.dtype and x.ndim == first.ndim for x in arrays))


def _flat(x):
    return np.ascontiguousarray(x).reshape(-1, x.shape[-2], x.shape[-1])


def _transposed(x3):
    return np.ascontiguousarray(x3.transpose(0, 2, 1))


def attention_forward(q, k, v):
    """Q (..., L, d), K (..., M, d), V (..., M, e) -> (Z (..., L, e), A (..., L, M)), the
    softmax weights kept for the backward. Shapes are checked by the caller (``ops.attention``).
    Falls back to NumPy (``reference.attention``) for dtypes or ranks it does not specialise."""
    scale = 1 / np.sqrt(q.shape[-1])
    if not _fits(q, k, v):
        from .reference import attention

        return attention(q, k, v)
    q3, k3, v3 = _flat(q), _flat(k), _flat(v)
    a = _shifted_scores(q3, _transposed(k3), scale)
    np.exp(a, out=a)            # NumPy's vectorised exp (numba's is scalar: 5x slower here)
    z = _normalise_and_mix(a, _transposed(v3))
    lead = q.shape[:-2]
    return z.reshape(*lead, *z.shape[1:]), a.reshape(*lead, *a.shape[1:])


def attention_backward(g, q, k, v, a):
    """(dQ, dK, dV) of :func:`attention_forward`, given dL/dZ ``g`` and its saved A."""
    if not _fits(g, q, k, v, a):
        from .reference import attention_backward as backward

        return backward(g, q, k, v, a)
    scale = 1 / np.sqrt(q.shape[-1])
    dq, dkt, dvt = _backward(_flat(g), _flat(q), _transposed(_flat(k)), _transposed(_flat(v)),
                             _flat(a), scale)
    dk, dv = dkt.transpose(0, 2, 1), dvt.transpose(0, 2, 1)
    return dq.reshape(q.shape), dk.reshape(k.shape), dv.reshape(v.shape)
