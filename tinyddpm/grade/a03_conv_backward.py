"""Assignment 3: a convolution's backward pass (``lessons/assignments/03_conv_backward.py``),
checked against the autograd backward of :func:`tinyddpm.functional.conv2d` in float64."""
import numpy as np

from .framework import Assignment, array, call, close, register, tuple_of

A3 = register(Assignment(3, "conv_backward", "The backward pass of a convolution",
                         "Building the Model", ["conv2d_forward", "conv2d_backward"], 60))


def case(n, h, w, c_in, kh, kw, c_out, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, c_in)).astype(dtype)
    k = rng.standard_normal((kh, kw, c_in, c_out)).astype(dtype)
    dy = rng.standard_normal((n, h - kh + 1, w - kw + 1, c_out)).astype(dtype)
    return x, k, dy


def reference(x, k, dy):
    """dx, dw from the engine: functional.conv2d's backward, in float64."""
    from .. import functional as F
    from ..tensor import Tensor

    xt = Tensor(x.astype(np.float64), requires_grad=True)
    kt = Tensor(k.astype(np.float64), requires_grad=True)
    F.conv2d(xt, kt, None, stride=1, padding="valid").backward(dy.astype(np.float64))
    return xt.grad, kt.grad


def overwritten_dx(x, k, dy):
    """dx when each kernel tap assigns (=) its part instead of adding (+=) to it."""
    dx = np.zeros(x.shape)
    ho, wo = dy.shape[1:3]
    for i in range(k.shape[0]):
        for j in range(k.shape[1]):
            dx[:, i:i + ho, j:j + wo, :] = dy @ k[i, j].T
    return dx


def student(value, x, k):
    dx, dw = tuple_of(value, 2, "conv2d_backward", ("dx", "dw"))
    return array(dx, "dx", x.shape), array(dw, "dw", k.shape)


def compare(r, c, which, label):
    x, k, dy = c
    dx, dw = student(r[0], x, k)
    ref_dx, ref_dw = reference(x, k, dy)
    if which in ("dx", "both"):
        close(dx, ref_dx, "dx", rtol=1e-6, atol=1e-8, context=label, mistakes=[
            (np.zeros_like(ref_dx), "dx is all zeros"),
            (overwritten_dx(x, k, dy), "dx is overwritten at each kernel tap: an input pixel "
                                       "receives gradient from several taps, so accumulate "
                                       "with += over the taps (dx[...] += dy @ w[i, j].T)")])
    if which in ("dw", "both"):
        close(dw, ref_dw, "dw", rtol=1e-6, atol=1e-8, context=label, mistakes=[
            (ref_dw[::-1, ::-1], "dw is flipped: dw[i, j] pairs dy with the input shifted by "
                                 "(+i, +j), as in the forward pass")])


def backward(*c):
    return call("conv2d_backward", *c)


CASES = {"returns": case(2, 5, 5, 2, 3, 3, 3), "dtype": case(2, 6, 5, 3, 3, 2, 4, np.float32),
         "1x1": case(2, 4, 4, 3, 1, 1, 5, seed=1), "dx": case(2, 6, 6, 3, 3, 3, 4, seed=2),
         "dw": case(2, 6, 6, 3, 3, 3, 4, seed=3), "non_square": case(3, 7, 5, 2, 2, 3, 3, seed=4)}


@A3.check("returns", 1, "conv2d_backward(x, w, dy) returns two arrays (dx, dw)",
          lambda: [backward(*CASES["returns"])])
def _(r):
    dx, dw = tuple_of(r[0], 2, "conv2d_backward", ("dx", "dw"))
    array(dx, "dx")
    array(dw, "dw")


@A3.check("shapes_dtypes", 1, "dx has x's shape and dw has w's; float32 in gives float32 out",
          lambda: [backward(*CASES["dtype"])])
def _(r):
    x, k, _ = CASES["dtype"]
    dx, dw = tuple_of(r[0], 2, "conv2d_backward", ("dx", "dw"))
    array(dx, "dx", x.shape, np.float32)
    array(dw, "dw", k.shape, np.float32)


@A3.check("dx_1x1", 1, "a 1x1 kernel: dx = dy @ w[0, 0].T",
          lambda: [backward(*CASES["1x1"])])
def _(r):
    compare(r, CASES["1x1"], "dx", "(1x1 kernel)")


@A3.check("dx", 3, "dx for a 3x3 kernel matches the engine's backward",
          lambda: [backward(*CASES["dx"])])
def _(r):
    compare(r, CASES["dx"], "dx", "(3x3 kernel)")


@A3.check("dw", 3, "dw for a 3x3 kernel matches the engine's backward",
          lambda: [backward(*CASES["dw"])])
def _(r):
    compare(r, CASES["dw"], "dw", "(3x3 kernel)")


@A3.check("non_square", 1, "a 2x3 kernel on a 7x5 image, C_in=2, C_out=3: dx and dw",
          lambda: [backward(*CASES["non_square"])])
def _(r):
    x, k, dy = CASES["non_square"]
    dx, dw = student(r[0], x, k)
    ref_dx, ref_dw = reference(x, k, dy)
    label = "(2x3 kernel, 7x5 image)"
    # the 3x3 checks charge dx overwritten per tap and a flipped dw: not again here
    close(dx, ref_dx, "dx", rtol=1e-6, atol=1e-8, context=label,
          accept=[(overwritten_dx(x, k, dy), "dx")])
    close(dw, ref_dw, "dw", rtol=1e-6, atol=1e-8, context=label,
          accept=[(ref_dw[::-1, ::-1], "dw")])
