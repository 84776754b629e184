"""The autograd core: every differentiable op against finite differences (float64)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyddpm import ops
from tinyddpm.tensor import Tensor, no_grad
from tinyddpm.testing import gradcheck

rng = np.random.default_rng(0)


def randn(*shape):
    return rng.standard_normal(shape)


def positive(*shape):
    return rng.random(shape) + 0.5


# (name, function, inputs): shapes chosen to exercise broadcasting, incl. batch size 1
BINARY = [
    ("add", ops.add, (randn(3, 4), randn(4))),
    ("add_scalar_shape", ops.add, (randn(1, 3, 1), randn(2, 1, 5))),
    ("sub", ops.sub, (randn(2, 3), randn(2, 1))),
    ("mul", ops.mul, (randn(1, 4), randn(3, 1))),
    ("div", ops.div, (randn(3, 4), positive(4))),
    ("maximum", ops.maximum, (randn(3, 4), randn(3, 4))),
    ("minimum", ops.minimum, (randn(3, 4), randn(1, 4))),
    ("matmul", ops.matmul, (randn(3, 4), randn(4, 5))),
    ("matmul_batched", ops.matmul, (randn(2, 3, 4), randn(4, 2))),
    ("matmul_vec_left", ops.matmul, (randn(4), randn(4, 3))),
    ("matmul_vec_right", ops.matmul, (randn(2, 3, 4), randn(4))),
]

UNARY = [
    ("neg", ops.neg, randn(3, 4)),
    ("exp", ops.exp, randn(3, 4)),
    ("log", ops.log, positive(3, 4)),
    ("sqrt", ops.sqrt, positive(3, 4)),
    ("abs", ops.abs, randn(3, 4)),
    ("relu", ops.relu, randn(3, 4)),
    ("sigmoid", ops.sigmoid, 5 * randn(3, 4)),
    ("tanh", ops.tanh, randn(3, 4)),
    ("silu", ops.silu, 3 * randn(3, 4)),
    ("power_2", lambda x: ops.power(x, 2), randn(3, 4)),
    ("power_frac", lambda x: ops.power(x, 0.5), positive(3, 4)),
    ("power_neg", lambda x: ops.power(x, -1.5), positive(3, 4)),
    ("sum_all", lambda x: ops.sum(x), randn(3, 4)),
    ("sum_axis", lambda x: ops.sum(x, axis=1), randn(3, 4, 2)),
    ("sum_axes_keep", lambda x: ops.sum(x, axis=(0, 2), keepdims=True), randn(3, 4, 2)),
    ("mean_all", lambda x: ops.mean(x), randn(3, 4)),
    ("mean_axis_neg", lambda x: ops.mean(x, axis=-1), randn(3, 4)),
    ("mean_keep", lambda x: ops.mean(x, axis=(1, 2), keepdims=True), randn(2, 3, 4)),
    ("max_all", lambda x: ops.max(x), randn(3, 4)),
    ("max_axis", lambda x: ops.max(x, axis=0), randn(3, 4)),
    ("max_keep", lambda x: ops.max(x, axis=(1,), keepdims=True), randn(2, 3, 4)),
    ("reshape", lambda x: ops.reshape(x, (4, 3)), randn(3, 4)),
    ("transpose", lambda x: ops.transpose(x, (2, 0, 1)), randn(2, 3, 4)),
    ("transpose_default", lambda x: ops.transpose(x), randn(2, 3)),
    ("slice_crop", lambda x: x[:, 2:-2, 2:-2, :], randn(2, 7, 7, 1)),
    ("index_int_array", lambda x: x[np.array([0, 2, 0])], randn(3, 4)),
    ("pad", lambda x: ops.pad(x, ((0, 0), (3, 3), (1, 2), (0, 0))), randn(1, 2, 3, 2)),
]


@pytest.mark.parametrize("name,fn,inputs", BINARY, ids=[b[0] for b in BINARY])
def test_binary_op_gradients(name, fn, inputs):
    assert gradcheck(fn, *inputs)


@pytest.mark.parametrize("name,fn,x", UNARY, ids=[u[0] for u in UNARY])
def test_unary_op_gradients(name, fn, x):
    assert gradcheck(fn, x)


def test_concatenate_and_gather_gradients():
    assert gradcheck(lambda a, b, c: ops.concatenate([a, b, c], axis=-1),
                     randn(2, 3, 1), randn(2, 3, 4), randn(2, 3, 2))
    assert gradcheck(lambda a, b: ops.concatenate([a, b], axis=0), randn(1, 3), randn(2, 3))
    # gather with repeated rows: gradients must accumulate
    assert gradcheck(lambda table: ops.gather(table, np.array([3, 0, 3, 3])), randn(5, 4))


def test_gather_rejects_bad_indices():
    with pytest.raises(TypeError, match="integers"):
        ops.gather(Tensor(randn(5, 4)), np.array([0.5]))
    with pytest.raises(IndexError, match="out of range"):
        ops.gather(Tensor(randn(5, 4)), np.array([5]))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=4), st.data())
def test_broadcast_gradients_random_shapes(shape, data):
    """Any shape against any broadcast-compatible shape: the gradients un-broadcast correctly."""
    other = [data.draw(st.sampled_from([n, 1])) for n in shape]
    other = other[data.draw(st.integers(0, len(other) - 1)):]  # also drop leading axes
    a = np.random.default_rng(1).standard_normal(shape)
    b = np.random.default_rng(2).random(other) + 0.5
    for fn in (ops.add, ops.sub, ops.mul, ops.div):
        assert gradcheck(fn, a, b)
        assert gradcheck(fn, b, a)


def test_composite_expression_and_accumulation():
    x = Tensor(randn(3, 4), requires_grad=True)
    y = (x * x + x).sum()  # x used three times: d/dx = 2x + 1
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * x.data + 1)
    y = (x * 3).sum()
    y.backward()  # accumulates into .grad
    np.testing.assert_allclose(x.grad, 2 * x.data + 1 + 3)


def test_backward_with_explicit_gradient_and_errors():
    x = Tensor(randn(2, 3), requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match="single number"):
        y.backward()
    g = randn(2, 3)
    y.backward(g)
    np.testing.assert_allclose(x.grad, 2 * g)
    with pytest.raises(ValueError, match="shape"):
        (x * 2).backward(np.ones(3))
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(randn(2)).sum().backward()


def test_no_grad_and_detach():
    x = Tensor(randn(3), requires_grad=True)
    with no_grad():
        y = x * 2
    assert not y.requires_grad and y._ctx is None
    z = (x * 2).detach()
    assert not z.requires_grad and z._ctx is None
    np.testing.assert_allclose(z.data, 2 * x.data)


def test_deep_graph_does_not_recurse():
    x = Tensor(np.ones(3), requires_grad=True)
    y = x
    for _ in range(5000):  # deeper than Python's recursion limit
        y = y + 1
    y.sum().backward()
    np.testing.assert_allclose(x.grad, np.ones(3))


def test_operators_and_dtypes():
    a = Tensor(np.array([1.0, 2.0], np.float32))
    assert (a + 1).dtype == np.float32 and (2 * a).dtype == np.float32
    np.testing.assert_allclose((1 - a).data, [0, -1])
    np.testing.assert_allclose((2 / a).data, [2, 1])
    np.testing.assert_allclose((a ** 2).data, [1, 4])
    np.testing.assert_allclose((np.ones(2) + a).data, [2, 3])
    assert Tensor([1, 2]).dtype == np.float32  # ints become float32
    with pytest.raises(TypeError):
        Tensor(np.array(["a"]))


def test_sigmoid_is_stable_for_large_inputs():
    with np.errstate(over="raise"):
        y = ops.sigmoid(Tensor(np.array([-1000.0, 0.0, 1000.0]))).data
    np.testing.assert_allclose(y, [0.0, 0.5, 1.0])


def test_gradcheck_catches_a_wrong_backward():
    from tinyddpm.tensor import Function

    class WrongSquare(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            return g * ctx.saved[0]  # should be 2x

    with pytest.raises(AssertionError, match="wrong gradient for input 0"):
        gradcheck(WrongSquare.apply, randn(3))
