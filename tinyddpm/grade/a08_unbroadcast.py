"""Assignment 8: the backward of broadcasting (``lessons/assignments/08_unbroadcast.py``),
checked against :func:`tinyddpm.ops.unbroadcast`."""
import numpy as np

from .framework import Assignment, Counted, Fail, array, call, close, register

A8 = register(Assignment(8, "unbroadcast", "The backward pass of broadcasting",
                         "Building the Model (the engine)", ["unbroadcast"], 30))


def grad(shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def reference(g, shape):
    from ..ops import unbroadcast
    return unbroadcast(g, tuple(shape))


def leading_only(g, shape):
    """A known mistake: only the leading axes summed (size-1 axes not)."""
    extra = g.ndim - len(shape)
    return g.sum(axis=tuple(range(extra)))


CASES = {   # name: (grad's shape, target shape)
    "same": ((2, 3, 4), (2, 3, 4)), "leading": ((2, 3, 4), (4,)),
    "size_one": ((2, 3, 4), (2, 1, 4)), "both": ((5, 2, 3, 4), (3, 1)),
    "scalar": ((2, 3), ()), "bias_4d": ((4, 5, 5, 3), (3,)),
    "per_image": ((4, 5, 5, 3), (4, 1, 1, 3)), "float32": ((3, 4), (1, 4)),
}


def case_call(name):
    g_shape, shape = CASES[name]
    return call("unbroadcast", grad(g_shape, seed=len(name),
                                    dtype=np.float32 if name == "float32" else np.float64), shape)


def compare(r, i, name, accept=()):
    g_shape, shape = CASES[name]
    g = grad(g_shape, seed=len(name), dtype=np.float32 if name == "float32" else np.float64)
    out = r[i]
    if isinstance(out, np.generic):
        raise Fail(f"unbroadcast(grad of shape {g_shape}, {shape}) returned a NumPy scalar "
                   f"({type(out).__name__}), not an array\nhint: a sum over every axis gives a "
                   "scalar: return np.asarray(...).reshape(shape)")
    if isinstance(out, np.ndarray) and out.shape != tuple(shape) and \
            out.shape == np.shape(leading_only(g, shape)):
        raise Fail(f"unbroadcast(grad of shape {g_shape}, {shape}) has shape {out.shape}: the "
                   f"leading axes are summed, but not the axes where shape has 1\nhint: sum "
                   "those too, with keepdims=True, so the result has exactly `shape`")
    if isinstance(out, np.ndarray) and out.shape != tuple(shape) and \
            out.size == int(np.prod(shape)):
        raise Fail(f"unbroadcast(grad of shape {g_shape}, {shape}) has shape {out.shape}, not "
                   f"{tuple(shape)}\nhint: sum the size-1 axes with keepdims=True (or reshape "
                   "to shape at the end)")
    out = array(out, f"unbroadcast(grad of shape {g_shape}, {shape})", shape)
    close(out, reference(g, shape), "the result", rtol=1e-5, atol=1e-6,
          context=f"for grad of shape {g_shape} -> {shape}", accept=accept)


@A8.check("same_shape", 1, "grad already of the shape: returned as it is",
          lambda: [case_call("same")])
def _(r):
    compare(r, 0, "same")


@A8.check("leading_axes", 2, "axes broadcasting added in front are summed: (2, 3, 4) -> (4,)",
          lambda: [case_call("leading"), case_call("bias_4d")])
def _(r):
    compare(r, 0, "leading")
    compare(r, 1, "bias_4d")


@A8.check("size_one_axes", 2, "axes of size 1 in shape are summed and kept: (2, 3, 4) -> "
                              "(2, 1, 4), (4, 5, 5, 3) -> (4, 1, 1, 3)",
          lambda: [case_call("size_one"), case_call("per_image")])
def _(r):
    compare(r, 0, "size_one")
    compare(r, 1, "per_image")


@A8.check("both", 3, "leading and size-1 axes together: (5, 2, 3, 4) -> (3, 1)",
          lambda: [case_call("both")])
def _(r):
    g_shape, shape = CASES["both"]
    g = grad(g_shape, seed=len("both"))
    out, want = r[0], reference(g, shape)
    # the size-1 axes summed without keepdims, or not at all: size_one_axes' mistakes
    if isinstance(out, np.ndarray) and (
            (out.shape == want.squeeze().shape and np.allclose(out, want.squeeze(), rtol=1e-5,
                                                               atol=1e-6))
            or (out.shape == leading_only(g, shape).shape
                and np.allclose(out, leading_only(g, shape), rtol=1e-5, atol=1e-6))):
        raise Counted("size_one_axes")
    compare(r, 0, "both")


@A8.check("scalar", 1, "to shape () (a scalar): everything summed",
          lambda: [case_call("scalar")])
def _(r):
    g_shape, shape = CASES["scalar"]
    out = r[0]
    if isinstance(out, np.generic):       # a NumPy scalar holds the same number: fine here
        close(np.asarray(out), reference(grad(g_shape, seed=len("scalar")), shape),
              "the result", rtol=1e-5, atol=1e-6, context=f"for grad of shape {g_shape} -> ()")
        return
    compare(r, 0, "scalar")


@A8.check("dtype", 1, "float32 stays float32", lambda: [case_call("float32")])
def _(r):
    out = r[0]
    array(out, "unbroadcast(float32 grad, (1, 4))", dtype=np.float32)
