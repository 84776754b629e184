"""Gradient checking: compare ``backward()`` with central finite differences, in float64.

    df/dx_i ~ (f(x + h e_i) - f(x - h e_i)) / (2 h)

Used by the test suite and meant for students writing their own ops.
"""
from __future__ import annotations

import numpy as np

from .tensor import Tensor


def gradcheck(fn, *inputs, wrt=(), eps=1e-6, atol=1e-6, rtol=1e-5, seed=0, max_elements=None):
    """Check the gradients of ``fn(*inputs)`` against central differences.

    Parameters
    ----------
    fn : callable taking Tensors and returning a Tensor.
    inputs : arrays or Tensors; each becomes a float64 Tensor with ``requires_grad=True``.
        Non-float arrays (e.g. integer indices) are passed through unchanged.
    wrt : extra tensors to check (e.g. a layer's parameters, already float64).
    eps : finite-difference step h.
    max_elements : check at most this many elements per tensor (chosen at random).

    The output is reduced with fixed random weights R, L = sum(fn(...) * R), so every output
    element's gradient is exercised. Returns True, or raises AssertionError naming the input,
    the element, the analytic and the numerical value.
    """
    rng = np.random.default_rng(seed)
    tensors = []
    for x in inputs:
        data = x.data if isinstance(x, Tensor) else np.asarray(x)
        if data.dtype.kind == "f":
            tensors.append(Tensor(data.astype(np.float64), requires_grad=True))
        else:
            tensors.append(x)
    checked = [t for t in tensors if isinstance(t, Tensor)] + list(wrt)
    for t in wrt:
        if t.dtype != np.float64:
            raise TypeError("gradcheck: tensors in wrt must be float64 (use module.astype(np.float64))")
    out = fn(*tensors)
    weights = rng.standard_normal(out.shape)

    def objective():
        return float(np.sum(fn(*tensors).data * weights))

    for t in checked:
        t.grad = None
    out.backward(weights)
    for index, t in enumerate(checked):
        analytic = np.zeros_like(t.data) if t.grad is None else t.grad
        flat = t.data.reshape(-1)  # a view: perturbing it perturbs the tensor
        positions = np.arange(flat.size)
        if max_elements is not None and flat.size > max_elements:
            positions = rng.choice(flat.size, max_elements, replace=False)
        for pos in positions:
            original = flat[pos]
            flat[pos] = original + eps
            up = objective()
            flat[pos] = original - eps
            down = objective()
            flat[pos] = original
            numeric = (up - down) / (2 * eps)
            got = analytic.reshape(-1)[pos]
            if not np.isclose(got, numeric, atol=atol, rtol=rtol):
                where = np.unravel_index(pos, t.shape)
                name = f"input {index}" if index < len(checked) - len(wrt) else \
                    f"wrt[{index - (len(checked) - len(wrt))}] {t.name or ''}".strip()
                raise AssertionError(f"gradcheck: wrong gradient for {name} of shape {t.shape} at "
                                     f"element {tuple(int(i) for i in where)}: backward() gives "
                                     f"{got:.8g}, finite differences give {numeric:.8g}")
    return True
