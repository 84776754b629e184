"""Assignment 4: BatchNorm's backward pass in training mode
(``lessons/assignments/04_batchnorm_backward.py``), checked against the autograd backward of
:func:`tinyddpm.functional.batch_norm_train` in float64."""
import numpy as np

from .framework import Assignment, Fail, array, call, close, register, tuple_of

A4 = register(Assignment(4, "batchnorm_backward", "The backward pass of BatchNorm (training mode)",
                         "Building the Model", ["batchnorm_forward", "batchnorm_backward"], 60))
EPS = 1e-3


def case(shape, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[-1]
    x = (rng.standard_normal(shape) * rng.uniform(0.5, 2, c) + rng.uniform(-1, 1, c)).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, c).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    return x, gamma, dy


def reference(x, gamma, dy):
    """(dx, dgamma, dbeta) from the engine: functional.batch_norm_train's backward, float64."""
    from .. import functional as F
    from ..tensor import Tensor

    shape = x.shape
    as4d = (lambda a: a.reshape(a.shape[0], 1, 1, a.shape[-1])) if x.ndim == 2 else (lambda a: a)
    xt = Tensor(as4d(x.astype(np.float64)), requires_grad=True)
    gt = Tensor(gamma.astype(np.float64), requires_grad=True)
    bt = Tensor(np.zeros_like(gamma, dtype=np.float64), requires_grad=True)
    F.batch_norm_train(xt, gt, bt, eps=EPS).backward(as4d(dy.astype(np.float64)))
    return xt.grad.reshape(shape), gt.grad, bt.grad


def constant_statistics_dx(x, gamma, dy):
    """dx when the batch mean and variance are treated as constants."""
    return dy * gamma / np.sqrt(x.var(axis=tuple(range(x.ndim - 1))) + EPS)


def dx_over(x, gamma, dy, axes, ddof=0):
    """dx with the statistics taken over ``axes`` (a known mistake when not all but the last),
    the variance with ``ddof`` (1: the unbiased variance, another known mistake)."""
    mean = x.mean(axis=axes, keepdims=True)
    std = np.sqrt(x.var(axis=axes, keepdims=True, ddof=ddof) + EPS)
    x_hat, g = (x - mean) / std, dy * gamma
    return (g - g.mean(axis=axes, keepdims=True)
            - x_hat * (g * x_hat).mean(axis=axes, keepdims=True)) / std


def partial_sum(a, x):
    """Whether ``a`` is a sum over leading axes only (shape x.shape[k:], 0 < k < x.ndim - 1):
    statistics over the wrong axes, the dx check's mistake."""
    return isinstance(a, np.ndarray) and any(a.shape == x.shape[k:] for k in range(1, x.ndim - 1))


def student(value, x):
    """(dx, dgamma, dbeta); dgamma and dbeta summed over too few axes (the dx check's mistake,
    charged there) are summed over the rest too."""
    dx, dgamma, dbeta = tuple_of(value, 3, "batchnorm_backward", ("dx", "dgamma", "dbeta"))
    c = x.shape[-1]
    dgamma, dbeta = (a.reshape(-1, c).sum(axis=0) if partial_sum(a, x) else a
                     for a in (dgamma, dbeta))
    return array(dx, "dx", x.shape), array(dgamma, "dgamma", (c,)), array(dbeta, "dbeta", (c,))


def dgamma_over(x, dy, axes, ddof=0):
    mean = x.mean(axis=axes, keepdims=True)
    x_hat = (x - mean) / np.sqrt(x.var(axis=axes, keepdims=True, ddof=ddof) + EPS)
    return (dy * x_hat).reshape(-1, x.shape[-1]).sum(axis=0)


def all_but_last(x):
    return tuple(range(x.ndim - 1))


WRONG_AXES = ((0,), (0, 1))      # statistics over too few axes (a 4-d x)


def backward(x, gamma, dy):
    return call("batchnorm_backward", dy, x, gamma)


CASES = {"returns": case((4, 3, 3, 2)), "dtype": case((4, 3, 3, 5), np.float32),
         "dbeta": case((4, 5, 5, 3), seed=1), "dgamma": case((4, 5, 5, 3), seed=2),
         "dx": case((4, 5, 5, 3), seed=3), "dense": case((16, 4), seed=4)}


@A4.check("returns", 1, "batchnorm_backward(dy, x, gamma) returns (dx, dgamma, dbeta)",
          lambda: [backward(*CASES["returns"])])
def _(r):
    for name, a in zip(("dx", "dgamma", "dbeta"),
                       tuple_of(r[0], 3, "batchnorm_backward", ("dx", "dgamma", "dbeta"))):
        array(a, name)


@A4.check("shapes_dtypes", 1, "dx has x's shape, dgamma and dbeta (C,) (sums over too few axes: "
                             "the dx check's); float32 stays float32",
          lambda: [backward(*CASES["dtype"])])
def _(r):
    x = CASES["dtype"][0]
    dx, dgamma, dbeta = tuple_of(r[0], 3, "batchnorm_backward", ("dx", "dgamma", "dbeta"))
    array(dx, "dx", x.shape, np.float32)
    for name, a in (("dgamma", dgamma), ("dbeta", dbeta)):
        if partial_sum(a, x):
            array(a, name, dtype=np.float32)     # summed over too few axes: the dx check's
            continue
        array(a, name, (5,), np.float32)


@A4.check("dbeta", 1, "dbeta = sum of dy over N, H, W", lambda: [backward(*CASES["dbeta"])])
def _(r):
    x, gamma, dy = CASES["dbeta"]
    _, _, dbeta = student(r[0], x)
    close(dbeta, reference(x, gamma, dy)[2], "dbeta", rtol=1e-6, atol=1e-8)


@A4.check("dgamma", 2, "dgamma = sum of dy * x_hat over N, H, W",
          lambda: [backward(*CASES["dgamma"])])
def _(r):
    x, gamma, dy = CASES["dgamma"]
    _, dgamma, _ = student(r[0], x)
    close(dgamma, reference(x, gamma, dy)[1], "dgamma", rtol=1e-6, atol=1e-8, mistakes=[
        ((dy * x).sum(axis=(0, 1, 2)), "use the normalised x_hat = (x - mean) / sqrt(var + eps), "
                                       "not x")],
        accept=[(dgamma_over(x, dy, axes), "dx") for axes in WRONG_AXES]  # dx's mistakes
        + [(dgamma_over(x, dy, all_but_last(x), ddof=1), "dx")])


@A4.check("dx", 4, "dx, through the batch mean and variance too", lambda: [backward(*CASES["dx"])])
def _(r):
    x, gamma, dy = CASES["dx"]
    dx, _, _ = student(r[0], x)
    close(dx, reference(x, gamma, dy)[0], "dx", rtol=1e-5, atol=1e-8, mistakes=[
        (constant_statistics_dx(x, gamma, dy), "this treats the batch mean and variance as "
                                               "constants; they depend on x too (two more terms)"),
        *[(dx_over(x, gamma, dy, axes), f"the mean and variance are taken over axes {axes} "
           "only: take them (and the sums for dgamma and dbeta) over every axis but the last, "
           "axis=tuple(range(x.ndim - 1)), here N, H and W") for axes in WRONG_AXES],
        (dx_over(x, gamma, dy, all_but_last(x), ddof=1), "the variance is the unbiased one "
         "(ddof=1): BatchNorm normalises with the batch's own variance, np.var's default "
         "ddof=0")])


@A4.check("dense_input", 1, "x of shape (N, C) (after a Dense layer): statistics over axis 0",
          lambda: [backward(*CASES["dense"])])
def _(r):
    x, gamma, dy = CASES["dense"]
    try:
        dx, dgamma, dbeta = student(r[0], x)
    except Fail as exc:
        if "axis" in str(exc) and "out of bounds" in str(exc):
            raise Fail(f"{exc}\nhint: x may have 2 axes (N, C) as well as 4 (N, H, W, C): use "
                       "axis=tuple(range(x.ndim - 1)) rather than (0, 1, 2)") from None
        raise
    ref = reference(x, gamma, dy)
    # the 4-d checks charge constant statistics and x instead of x_hat: not again here
    accepted = ([constant_statistics_dx(x, gamma, dy), dx_over(x, gamma, dy, (0,), ddof=1)],
                [(dy * x).sum(axis=0), dgamma_over(x, dy, (0,), ddof=1)], [])
    for name, a, want, accept in zip(("dx", "dgamma", "dbeta"), (dx, dgamma, dbeta), ref,
                                     accepted):
        close(a, want, name, rtol=1e-5, atol=1e-8, context="for x of shape (16, 4)",
              accept=[(a, "the 4-d checks") for a in accept])
