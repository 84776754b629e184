### BEGIN SOLUTION
"""SOLUTION of assignment 9: a correct answer, for teachers and tests (not shipped in the package).

(The student's file lessons/assignments/09_custom_op.py is made from this one: python -m tinyddpm.grade.assign.)
"""
### END SOLUTION
"""Assignment 9: an op of your choice, forward and backward, checked by a gradient check.

(The engine: lessons 3 and 12; lesson 12 builds a scalar engine step by step.)

Choose one activation function below, set OP to its name, fill in `forward` and `backward`, then
check your work with the autograder:

    python -m tinyddpm.grade 9 09_custom_op.py

You may run this file directly too (`python 09_custom_op.py`) to run a gradient check yourself.
Edit only this file. NumPy is all you need.

Background. Every op of an autograd engine is two functions side by side (tinyddpm/ops.py):
`forward` computes y = f(x) elementwise, and `backward` receives dL/dy (``grad``, y's shape)
and returns dL/dx = dL/dy * f'(x) (the chain rule; elementwise ops need no sum). A **gradient
check** tests the pair against each other: for a small h,

    f'(x) ~ (f(x + h) - f(x - h)) / (2 h)        (central difference, error ~ h^2)

The grader runs one on your own `forward`, compares your `backward` with the exact derivative,
and tries very large inputs (|x| = 1000), where a formula written naively overflows
(np.exp(1000) is inf) and returns NaN: use a form that stays finite.

The choices (name: f(x)):

    "sigmoid":  1 / (1 + exp(-x))
    "softplus": log(1 + exp(x))
    "silu":     x * sigmoid(x)                      (also called swish; DDPM U-Nets use it)
    "gelu_tanh": 0.5 x (1 + tanh( sqrt(2/pi) (x + 0.044715 x^3) ))
    "log_cosh": log(cosh(x))
"""
import numpy as np

### BEGIN SOLUTION
OP = "softplus"
### END SOLUTION
### STUB OP = None        # one of "sigmoid", "softplus", "silu", "gelu_tanh", "log_cosh"


def op_name():
    """The name of the op you chose (do not edit)."""
    return OP


def forward(x):
    """y = f(x), elementwise. x: ndarray (any shape, float32 or float64). Returns an ndarray of
    x's shape and dtype, finite for finite x (also |x| = 1000)."""
    ### BEGIN SOLUTION
    return (np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))).astype(x.dtype)
    ### END SOLUTION
    ### STUB raise NotImplementedError("f(x), in a form that cannot overflow")


def backward(x, grad):
    """dL/dx = grad * f'(x), elementwise. x: the forward's input; grad: dL/dy, x's shape.
    Returns an ndarray of x's shape and dtype."""
    ### BEGIN SOLUTION
    sigmoid = np.exp(-np.logaddexp(0, -x))                      # softplus' = sigmoid
    return (grad * sigmoid).astype(x.dtype)
    ### END SOLUTION
    ### STUB raise NotImplementedError("grad * f'(x)")


if __name__ == "__main__":
    x = np.linspace(-3, 3, 7)
    h = 1e-6
    numeric = (forward(x + h) - forward(x - h)) / (2 * h)
    print("OP =", OP)
    print("backward:  ", backward(x, np.ones_like(x)))
    print("numeric:   ", numeric)
    print("max difference:", np.max(np.abs(backward(x, np.ones_like(x)) - numeric)))
