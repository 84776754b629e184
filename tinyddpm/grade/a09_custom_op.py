"""Assignment 9: an elementwise op of the student's choice, forward and backward
(``lessons/assignments/09_custom_op.py``): the forward against NumPy formulas written here, the
backward against the exact derivative and against a gradient check of the student's own
forward (central differences in float64)."""
import numpy as np

from .framework import Assignment, Fail, array, call, close, register

A9 = register(Assignment(9, "custom_op", "An op of your choice, with a gradient check",
                         "Building the Model (the engine)", ["op_name", "forward", "backward"],
                         45))


def _sigmoid(x):
    return np.exp(-np.logaddexp(0, -x))


_C = np.sqrt(2 / np.pi)
OPS = {   # name: (f, f')
    "sigmoid": (_sigmoid, lambda x: _sigmoid(x) * (1 - _sigmoid(x))),
    "softplus": (lambda x: np.logaddexp(0, x), _sigmoid),
    "silu": (lambda x: x * _sigmoid(x), lambda x: _sigmoid(x) * (1 + x * (1 - _sigmoid(x)))),
    "gelu_tanh": (lambda x: 0.5 * x * (1 + np.tanh(_C * (x + 0.044715 * x ** 3))),
                  lambda x: 0.5 * (1 + np.tanh(_C * (x + 0.044715 * x ** 3)))
                  + 0.5 * x * (1 - np.tanh(_C * (x + 0.044715 * x ** 3)) ** 2)
                  * _C * (1 + 3 * 0.044715 * x ** 2)),
    "log_cosh": (lambda x: np.abs(x) + np.log1p(np.exp(-2 * np.abs(x))) - np.log(2),
                 np.tanh),
}
H = 1e-5


def x(seed=0, shape=(3, 4, 5), scale=3.0, dtype=np.float64):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(dtype)


def normalise(name):
    return name.strip().lower().replace("-", "_").replace(" ", "_") if isinstance(name, str) \
        else name


def chosen(r, i=0, recognise=None):
    """The op named by OP (case and dashes aside); where OP names none of them, the op
    ``recognise(name) -> bool`` recognises from the student's values (the op_named check charges
    the name, once)."""
    name = normalise(r[i])
    if name in OPS:
        return name
    for candidate in OPS if recognise else ():
        if recognise(candidate):
            return candidate
    if name is None:
        raise Fail("OP is None: set it to the name of the op you chose, one of "
                   + ", ".join(repr(k) for k in OPS))
    raise Fail(f"OP = {r[i]!r} is not one of " + ", ".join(repr(k) for k in OPS))


def matches(got, want):
    return isinstance(got, np.ndarray) and got.shape == want.shape and \
        np.allclose(got, want, rtol=1e-6, atol=1e-8)


@A9.check("op_named", 1, "OP names one of the ops offered", lambda: [call("op_name")])
def _(r):
    chosen(r)


@A9.check("forward", 2, "forward(x) = f(x) for the op chosen (x of shape (3, 4, 5))",
          lambda: [call("op_name"), call("forward", x(1))])
def _(r):
    name = chosen(r, recognise=lambda k: matches(r[1], OPS[k][0](x(1))))
    close(array(r[1], "forward(x)", x(1).shape), OPS[name][0](x(1)), "forward(x)", rtol=1e-6,
          atol=1e-8, context=f"({name})")


@A9.check("backward", 3, "backward(x, grad) = grad * f'(x), with the exact f'",
          lambda: [call("op_name"), call("backward", x(2), x(3, scale=1.0))])
def _(r):
    g = x(3, scale=1.0)
    name = chosen(r, recognise=lambda k: matches(r[1], g * OPS[k][1](x(2))))
    close(array(r[1], "backward(x, grad)", x(2).shape), g * OPS[name][1](x(2)),
          "backward(x, grad)", rtol=1e-6, atol=1e-8, context=f"({name})", mistakes=[
              (OPS[name][1](x(2)), "that is f'(x): multiply by grad (the chain rule)"),
              (g * OPS[name][0](x(2)), "that is grad * f(x): the derivative is missing")])


def require_a_forward(r, i, what):
    """The points for ``what`` go with a forward that computes one of the ops offered."""
    if not any(matches(r[i], OPS[k][0](x(1))) for k in OPS):
        raise Fail(f"not scored: {what} counts only once forward(x) computes one of the ops "
                   "offered (see the forward check)")


@A9.check("gradient_check", 2, "backward agrees with central differences of your own forward",
          lambda: [call("forward", x(1)), call("forward", x(4) + H), call("forward", x(4) - H),
                   call("backward", x(4), np.ones_like(x(4)))])
def _(r):
    require_a_forward(r, 0, "the gradient check")
    up, down = array(r[1], "forward(x + h)", x(4).shape), array(r[2], "forward(x - h)",
                                                                 x(4).shape)
    back = array(r[3], "backward(x, 1)", x(4).shape)
    # a forward or a backward that is exactly one op's (and the other wrong) is the forward or
    # backward check's mistake, charged there once
    numeric = (up.astype(np.float64) - down) / (2 * H)
    close(back, numeric, "backward(x, 1)", rtol=1e-4, atol=1e-6,
          context="(compared with (forward(x + h) - forward(x - h)) / 2h, h = 1e-5, "
                  "your forward; a gradient check of your op would have caught it)")


@A9.check("large_inputs", 1, "finite forward and backward at x = -1000, -50, 50, 1000",
          lambda: [call("forward", x(1)),
                   call("forward", np.array([-1000.0, -50.0, 50.0, 1000.0])),
                   call("backward", np.array([-1000.0, -50.0, 50.0, 1000.0]), np.ones(4))])
def _(r):
    require_a_forward(r, 0, "stability")
    for i, what in enumerate(("forward", "backward"), start=1):
        out = array(r[i], f"{what}([-1000, -50, 50, 1000])", (4,))
        if not np.all(np.isfinite(out)):
            raise Fail(f"{what}([-1000, -50, 50, 1000]) gave {out.tolist()}\nhint: np.exp of a "
                       "large number overflows to inf (and inf / inf is NaN): rewrite f with "
                       "np.logaddexp, np.log1p(np.exp(-np.abs(x))) or np.tanh, which stay finite")


@A9.check("dtype", 1, "float32 in, float32 out, both functions",
          lambda: [call("forward", x(1)), call("forward", x(5, dtype=np.float32)),
                   call("backward", x(5, dtype=np.float32), x(6, dtype=np.float32))])
def _(r):
    require_a_forward(r, 0, "the dtype")
    array(r[1], "forward(float32 x)", dtype=np.float32)
    array(r[2], "backward(float32 x, float32 grad)", dtype=np.float32)
