"""tinyddpm.checks (lesson 12's checks of the student's engine): each passes on a correct
implementation and fails, naming the mistake, on the usual wrong ones."""
import math

import numpy as np
import pytest

from tinyddpm import checks
from tinyddpm.kernels import conv2d_geometry


# --------------------------------------------------------------------------- a correct engine
class Value:
    def __init__(self, data, _prev=(), _op=""):
        self.data, self.grad, self._prev, self._op = float(data), 0.0, tuple(_prev), _op
        self._backward = lambda: None

    def _make(self, data, prev, op, local):
        out = type(self)(data, prev, op)

        def _backward():
            for node, d in zip(prev, local):
                node.grad += d * out.grad
        out._backward = _backward
        return out

    def __add__(self, other):
        return self._make(self.data + other.data, (self, other), "+", (1.0, 1.0))

    def __mul__(self, other):
        return self._make(self.data * other.data, (self, other), "*", (other.data, self.data))

    def __pow__(self, k):
        return self._make(self.data ** k, (self,), "**", (k * self.data ** (k - 1),))

    def tanh(self):
        t = math.tanh(self.data)
        return self._make(t, (self,), "tanh", (1 - t * t,))

    def exp(self):
        e = math.exp(self.data)
        return self._make(e, (self,), "exp", (e,))

    def relu(self):
        return self._make(max(self.data, 0.0), (self,), "relu", (float(self.data > 0),))

    def backward(self):
        order, visited, stack = [], set(), [(self, False)]
        while stack:
            v, expanded = stack.pop()
            if expanded:
                order.append(v)
            elif v not in visited:
                visited.add(v)
                stack.append((v, True))
                stack.extend((p, False) for p in v._prev)
        self.grad = 1.0
        for v in reversed(order):
            v._backward()


# --------------------------------------------------------------------------- typical mistakes
class Overwriting(Value):
    """_backward assigns the gradient instead of adding it."""

    def __mul__(self, other):
        out = Overwriting(self.data * other.data, (self, other), "*")

        def _backward():
            self.grad = other.data * out.grad
            other.grad = self.data * out.grad
        out._backward = _backward
        return out


class NoChainRule(Value):
    """tanh's _backward forgets to multiply by out.grad."""

    def tanh(self):
        t = math.tanh(self.data)
        out = NoChainRule(t, (self,), "tanh")

        def _backward():
            self.grad += 1 - t * t
        out._backward = _backward
        return out


class ForwardOrder(Value):
    def backward(self):
        order, visited, stack = [], set(), [(self, False)]
        while stack:
            v, expanded = stack.pop()
            if expanded:
                order.append(v)
            elif v not in visited:
                visited.add(v)
                stack.append((v, True))
                stack.extend((p, False) for p in v._prev)
        self.grad = 1.0
        for v in order:                       # not reversed
            v._backward()


class BreadthFirst(Value):
    """No topological sort: the closures run in a walk from the root."""

    def backward(self):
        self.grad = 1.0
        queue, seen = [self], {self}
        while queue:
            v = queue.pop(0)
            v._backward()
            for p in v._prev:
                if p not in seen:
                    seen.add(p)
                    queue.append(p)


class NoVisitedSet(Value):
    """A depth-first walk of every path: nodes reached twice run twice."""

    def backward(self):
        self.grad = 1.0
        stack = [self]
        while stack:
            v = stack.pop()
            v._backward()
            stack.extend(v._prev)


class Recursive(Value):
    """micrograd's recursive topological sort: fine on small graphs, not on deep ones."""

    def backward(self):
        order, visited = [], set()

        def visit(v):
            if v not in visited:
                visited.add(v)
                for p in v._prev:
                    visit(p)
                order.append(v)
        visit(self)
        self.grad = 1.0
        for v in reversed(order):
            v._backward()


class NoRootGrad(Value):
    """The right order, but root.grad is never set to 1."""

    def backward(self):
        order, visited, stack = [], set(), [(self, False)]
        while stack:
            v, expanded = stack.pop()
            if expanded:
                order.append(v)
            elif v not in visited:
                visited.add(v)
                stack.append((v, True))
                stack.extend((p, False) for p in v._prev)
        for v in reversed(order):
            v._backward()


def test_check_value_passes_a_correct_value():
    assert "correct" in checks.check_value(Value)
    assert "relu" in checks.check_value(Value, ops=("relu",))


def test_check_value_names_an_overwritten_gradient():
    with pytest.raises(AssertionError, match=r"(?s)check_value\(mul\).*overwritten instead of "
                                             r"accumulated.*\+="):
        checks.check_value(Overwriting, ops=("mul",))


class LeakyRelu(Value):
    """relu passing the gradient where x < 0 too."""

    def relu(self):
        out = LeakyRelu(max(self.data, 0.0), (self,), "relu")

        def _backward():
            self.grad += out.grad
        out._backward = _backward
        return out


def test_check_value_names_a_wrong_relu():
    with pytest.raises(AssertionError, match=r"(?s)relu_negative.*derivative is 0 where x < 0"):
        checks.check_value(LeakyRelu, ops=("relu",))


def test_check_value_names_a_missing_chain_rule_and_a_missing_op():
    with pytest.raises(AssertionError, match=r"(?s)check_value\(tanh\).*not multiplied by "
                                             r"out.grad"):
        checks.check_value(NoChainRule, ops=("tanh",))
    with pytest.raises(AssertionError, match=r"check_value\(log\).*AttributeError"):
        checks.check_value(Value, ops=("log",))
    with pytest.raises(ValueError, match="unknown operation"):
        checks.check_value(Value, ops=("cosh",))


def test_check_backward_passes_a_correct_backward():
    assert "correct" in checks.check_backward(Value)


@pytest.mark.parametrize("wrong, hint", [
    (Overwriting, r"overwrites a grad \(use \+=, not =\)"),
    (ForwardOrder, r"run them in reverse"),
    (BreadthFirst, r"a walk from the root is not a topological order"),
    (NoVisitedSet, r"ran more than once.*set of visited nodes"),
    (Recursive, r"your own stack"),
    (NoRootGrad, r"self.grad = 1"),
], ids=["overwritten", "forward_order", "no_topological_sort", "no_visited_set", "recursion",
        "no_root_grad"])
def test_check_backward_names_each_mistake(wrong, hint):
    with pytest.raises(AssertionError, match=f"(?s)check_backward\\(.*\nhint: .*{hint}"):
        checks.check_backward(wrong)


# --------------------------------------------------------------------------- arrays
def unbroadcast(grad, shape):
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(extra + i for i, n in enumerate(shape)
                                       if n == 1 and grad.shape[extra + i] != 1)
    return grad.sum(axis=axes, keepdims=True).reshape(shape)


def unbroadcast_leading_only(grad, shape):
    return grad.sum(axis=tuple(range(grad.ndim - len(shape))))


def unbroadcast_no_keepdims(grad, shape):
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(extra + i for i, n in enumerate(shape)
                                       if n == 1 and grad.shape[extra + i] != 1)
    return grad.sum(axis=axes)


def unbroadcast_float64(grad, shape):
    return unbroadcast(grad, shape).astype(np.float64)


def test_check_unbroadcast():
    assert "correct" in checks.check_unbroadcast(unbroadcast)
    with pytest.raises(AssertionError, match=r"(?s)\(2, 1, 4\).*leading axes are summed, but "
                                             r"not the axes where shape has 1.*keepdims"):
        checks.check_unbroadcast(unbroadcast_leading_only)
    with pytest.raises(AssertionError, match=r"(?s)axes of size 1 were dropped.*keepdims"):
        checks.check_unbroadcast(unbroadcast_no_keepdims)
    with pytest.raises(AssertionError, match=r"float32 grad came back as float64"):
        checks.check_unbroadcast(unbroadcast_float64)


class Array(Value):
    def __init__(self, data, _prev=(), _op=""):
        self.data = np.asarray(data, dtype=np.float64)
        self.grad = np.zeros_like(self.data)
        self._prev, self._op = tuple(_prev), _op
        self._backward = lambda: None

    def _make(self, data, prev, op, local):
        out = type(self)(data, prev, op)

        def _backward():
            for node, d in zip(prev, local):
                node.grad += unbroadcast(d * out.grad, node.data.shape)
        out._backward = _backward
        return out

    def __add__(self, other):
        return self._make(self.data + other.data, (self, other), "+", (1.0, 1.0))

    def __mul__(self, other):
        return self._make(self.data * other.data, (self, other), "*", (other.data, self.data))

    def sum(self, axis=None, keepdims=False):
        out = type(self)(self.data.sum(axis=axis, keepdims=keepdims), (self,), "sum")

        def _backward():
            g = out.grad if axis is None or keepdims else np.expand_dims(out.grad, axis)
            self.grad += np.broadcast_to(g, self.data.shape)
        out._backward = _backward
        return out


class ArrayNoUnbroadcast(Array):
    def _make(self, data, prev, op, local):
        out = type(self)(data, prev, op)

        def _backward():
            for node, d in zip(prev, local):
                node.grad = node.grad + d * out.grad
        out._backward = _backward
        return out


class ArraySumNoExpand(Array):
    def sum(self, axis=None, keepdims=False):
        out = type(self)(self.data.sum(axis=axis, keepdims=keepdims), (self,), "sum")

        def _backward():
            self.grad += np.broadcast_to(out.grad, self.data.shape)
        out._backward = _backward
        return out


def test_check_array():
    assert "correct" in checks.check_array(Array, ops=("add", "mul", "sum"))
    with pytest.raises(AssertionError, match=r"(?s)a bias \(3,\).*\(unbroadcast\)"):
        checks.check_array(ArrayNoUnbroadcast)
    with pytest.raises(AssertionError, match=r"(?s)check_array\(x.sum\(axis=.*np.expand_dims"):
        checks.check_array(ArraySumNoExpand, ops=("sum",))


# --------------------------------------------------------------------------- convolutions
def im2col(x, kh, kw, stride, pads):
    t, b, l, r = pads
    xp = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)))
    n, hp, wp, c = xp.shape
    ho, wo = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    cols = np.empty((n, ho, wo, kh, kw, c))
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j] = xp[:, i:i + stride * ho:stride, j:j + stride * wo:stride]
    return cols.reshape(n * ho * wo, -1)


def im2col_channels_first(x, kh, kw, stride, pads):
    cols = im2col(x, kh, kw, stride, pads)
    return cols.reshape(len(cols), kh, kw, -1).transpose(0, 3, 1, 2).reshape(len(cols), -1)


def im2col_j_first(x, kh, kw, stride, pads):
    cols = im2col(x, kh, kw, stride, pads)
    return cols.reshape(len(cols), kh, kw, -1).transpose(0, 2, 1, 3).reshape(len(cols), -1)


def im2col_no_padding(x, kh, kw, stride, pads):
    t, b, l, r = pads
    full = im2col(np.pad(x, ((0, 0), (0, t + b), (0, l + r), (0, 0))), kh, kw, stride,
                  (0, 0, 0, 0))
    return full


def test_check_im2col():
    assert "correct" in checks.check_im2col(im2col)
    with pytest.raises(AssertionError, match=r"(?s)two images, three channels.*order "
                                             r"\(channel, i, j\).*\(i, j, channel\)"):
        checks.check_im2col(im2col_channels_first)
    with pytest.raises(AssertionError, match=r"(?s)order \(j, i, channel\)"):
        checks.check_im2col(im2col_j_first)
    with pytest.raises(AssertionError, match=r"(?s)padding same.*hint: pad x with zeros"):
        checks.check_im2col(im2col_no_padding)


def conv2d(x, kernel, bias, stride=1, padding="valid"):
    kh, kw, c_in, c_out = kernel.shape
    (ho, wo), pads = conv2d_geometry(x.shape, kernel.shape, stride, padding)
    y = im2col(x, kh, kw, stride, pads) @ kernel.reshape(-1, c_out) + bias
    return y.reshape(x.shape[0], ho, wo, c_out)


def test_check_conv2d():
    assert "correct" in checks.check_conv2d(conv2d)
    with pytest.raises(AssertionError, match="the bias is missing"):
        checks.check_conv2d(lambda x, k, b, s, p: conv2d(x, k, 0 * b, s, p))
    with pytest.raises(AssertionError, match="the kernel is flipped"):
        checks.check_conv2d(lambda x, k, b, s, p: conv2d(x, k[::-1, ::-1].copy(), b, s, p))


def col2im(cols, x_shape, kh, kw, stride, pads, assign=False):
    n, h, w, c = x_shape
    t, b, l, r = pads
    ho, wo = (h + t + b - kh) // stride + 1, (w + l + r - kw) // stride + 1
    cols = cols.reshape(n, ho, wo, kh, kw, c)
    xp = np.zeros((n, h + t + b, w + l + r, c))
    for i in range(kh):
        for j in range(kw):
            window = (slice(None), slice(i, i + stride * ho, stride),
                      slice(j, j + stride * wo, stride))
            if assign:
                xp[window] = cols[:, :, :, i, j]
            else:
                xp[window] += cols[:, :, :, i, j]
    return xp[:, t:t + h, l:l + w]


def test_check_col2im():
    assert "correct" in checks.check_col2im(col2im, im2col)
    assert "correct" in checks.check_col2im(col2im)
    with pytest.raises(AssertionError, match=r"(?s)<im2col\(x\), C>.*hint: .*\+="):
        checks.check_col2im(lambda *args: col2im(*args, assign=True))


def input_grad(x_shape, kernel, dy, stride=1, padding="valid"):
    kh, kw, _, c_out = kernel.shape
    _, pads = conv2d_geometry(x_shape, kernel.shape, stride, padding)
    return col2im(dy.reshape(-1, c_out) @ kernel.reshape(-1, c_out).T, x_shape, kh, kw, stride,
                  pads)


def kernel_grad(x, dy, kh, kw, stride=1, padding="valid"):
    _, pads = conv2d_geometry(x.shape, (kh, kw), stride, padding)
    c_out = dy.shape[3]
    return (im2col(x, kh, kw, stride, pads).T @ dy.reshape(-1, c_out)).reshape(
        kh, kw, x.shape[3], c_out)


def test_check_conv2d_gradients():
    assert "correct" in checks.check_conv2d_input_grad(input_grad)
    assert "correct" in checks.check_conv2d_kernel_grad(kernel_grad)
    with pytest.raises(AssertionError, match="central differences"):
        checks.check_conv2d_input_grad(
            lambda xs, k, dy, s, p: input_grad(xs, k[::-1, ::-1].copy(), dy, s, p))
    with pytest.raises(AssertionError, match="do not divide"):
        checks.check_conv2d_kernel_grad(
            lambda x, dy, kh, kw, s, p: kernel_grad(x, dy, kh, kw, s, p) / (dy.size // dy.shape[3]))
    with pytest.raises(AssertionError, match=r"order \(i, j, channel\)"):
        checks.check_conv2d_kernel_grad(
            lambda x, dy, kh, kw, s, p: kernel_grad(x, dy, kh, kw, s, p).reshape(
                -1, dy.shape[3]).reshape(x.shape[3], kh, kw, dy.shape[3]).transpose(1, 2, 0, 3))
    with pytest.raises(AssertionError, match="gradient is flipped"):
        checks.check_conv2d_kernel_grad(
            lambda x, dy, kh, kw, s, p: kernel_grad(x, dy, kh, kw, s, p)[::-1, ::-1])
    with pytest.raises(AssertionError, match="returned None"):
        checks.check_conv2d_kernel_grad(lambda *args: None)


# --------------------------------------------------------------------------- robustness
class ReturnsBase(Value):
    """Its operators are inherited and build plain Value objects."""

    def _make(self, data, prev, op, local):
        return Value._make(Value(0.0), data, prev, op, local)


class WalksFromTheRootSubclass(ReturnsBase):
    backward = BreadthFirst.backward


def test_checks_name_the_subclass_trap():
    """A subclass overriding backward whose ops build base-class results: the root's backward
    is the base class's, so the override is never tested; the check says so."""
    with pytest.raises(AssertionError, match=r"your ops return <Value>, not "
                                             r"<WalksFromTheRootSubclass>"):
        checks.check_backward(WalksFromTheRootSubclass)
    with pytest.raises(AssertionError, match=r"check_value\(mul\): your ops return <Value>"):
        checks.check_value(ReturnsBase, ops=("mul",))


def _raises(x, kh, kw, stride, pads):
    raise IndexError("index 7 is out of bounds")


def _mutates(grad, shape):
    out = unbroadcast(grad.copy(), shape)
    grad *= 0
    return out


def test_checks_wrap_a_raising_a_wrongly_signed_or_a_mutating_function():
    with pytest.raises(AssertionError, match=r"(?s)check_im2col\(one channel.*IndexError: index "
                                             r"7.*expected signature: im2col\(x, kh, kw, stride, "
                                             r"pads\)") as info:
        checks.check_im2col(_raises)
    assert isinstance(info.value.__cause__, IndexError)     # the original error, chained
    with pytest.raises(AssertionError, match=r"(?s)TypeError.*expected signature: "
                                             r"unbroadcast\(grad, shape\)"):
        checks.check_unbroadcast(lambda grad: grad)
    with pytest.raises(AssertionError, match=r"(?s)check_conv2d_kernel_grad\(.*expected "
                                             r"signature"):
        checks.check_conv2d_kernel_grad(          # x and dy swapped
            lambda x, dy, kh, kw, s, p: kernel_grad(dy, x, kh, kw, s, p))
    with pytest.raises(AssertionError, match="is not a function"):
        checks.check_im2col(None)
    with pytest.raises(AssertionError, match=r"changed its argument grad in place"):
        checks.check_unbroadcast(_mutates)
    with pytest.raises(AssertionError, match=r"check_value\(tanh\).*raised ZeroDivisionError"):
        checks.check_value(type("Broken", (Value,), {"tanh": lambda self: 1 / 0}),
                           ops=("tanh",))


def test_checks_stop_a_hanging_function(monkeypatch):
    import time

    monkeypatch.setattr(checks, "TIME_LIMIT", 1)
    with pytest.raises(AssertionError, match=r"check_unbroadcast\(same shape\).*took more "
                                             r"than 1 s"):
        checks.check_unbroadcast(lambda grad, shape: time.sleep(5))


class ArrayAddAssigns(Array):
    """= instead of += in +'s backward: a node used twice keeps one share."""

    def __add__(self, other):
        out = type(self)(self.data + other.data, (self, other), "+")

        def _backward():
            self.grad = unbroadcast(out.grad, self.data.shape)
            other.grad = unbroadcast(out.grad, other.data.shape)
        out._backward = _backward
        return out


class ArraySumAssigns(Array):
    def sum(self, axis=None, keepdims=False):
        out = type(self)(self.data.sum(axis=axis, keepdims=keepdims), (self,), "sum")

        def _backward():
            g = out.grad if axis is None or keepdims else np.expand_dims(out.grad, axis)
            self.grad = np.broadcast_to(g, self.data.shape).copy()
        out._backward = _backward
        return out


def test_check_array_uses_a_node_twice():
    with pytest.raises(AssertionError, match=r"(?s)check_array\(x \+ x \(x used twice\)\).*"
                                             r"hint: .*self.grad \+= "):
        checks.check_array(ArrayAddAssigns)
    with pytest.raises(AssertionError, match=r"(?s)x.sum\(\) \+ x.sum\(\).*hint: .*\+=.*sum"):
        checks.check_array(ArraySumAssigns, ops=("sum",))


def test_checks_report_the_largest_difference():
    def off_by_one_element(x, dy, kh, kw, s, p):
        g = kernel_grad(x, dy, kh, kw, s, p)
        g[-1, -1, -1, -1] += 1.0
        return g

    with pytest.raises(AssertionError, match=r"check_conv2d_kernel_grad\(one channel.*largest "
                                             r"difference 1 from .*at \(2, 2, 0, 1\)"):
        checks.check_conv2d_kernel_grad(off_by_one_element)
    def last_element_off(grad, shape):
        out = unbroadcast(grad, shape).copy()
        out.flat[-1] += 1.0
        return out

    with pytest.raises(AssertionError, match=r"(?s)check_unbroadcast\(same shape\).*largest "
                                             r"difference 1 at \(1, 2, 3\)"):
        checks.check_unbroadcast(last_element_off)


# --------------------------------------------------------------------------- lesson 12's cells
class ReferenceBackward(Value):
    backward = checks.reference_backward


def test_reference_backward_is_a_correct_iterative_backward():
    assert "correct" in checks.check_backward(ReferenceBackward)
    a, b = ReferenceBackward(2.0), ReferenceBackward(-3.0)
    d = a * b
    e = d + d * ReferenceBackward(0.5)
    order = checks.reference_topological_order(e)
    place = {id(v): k for k, v in enumerate(order)}
    assert len(order) == len(place) == 6 and order[-1] is e
    assert all(place[id(p)] < place[id(v)] for v in order for p in v._prev)


def test_answered_tells_a_placeholder_from_an_answer():
    def dots(grad, shape):
        ...

    def documented(grad, shape):
        """Only a docstring and the placeholder."""
        ...   # a comment

    def docstring_only(self):
        """Nothing else."""

    def no_return(grad, shape):
        grad.sum(axis=0)

    def returns(grad, shape):
        return grad

    def returns_a_constant():
        """A docstring."""
        return 5

    assert not checks.answered(dots)
    assert not checks.answered(documented)
    assert not checks.answered(docstring_only)
    for fn in (no_return, returns, returns_a_constant, print):
        assert checks.answered(fn), fn
    # an answer that forgets `return` reaches the check's own message
    with pytest.raises(AssertionError, match=r"returned None \(no `return`\?\)"):
        checks.check_unbroadcast(no_return)


def test_calls_tinyddpm_spots_the_package_s_own_version():
    import tinyddpm as td

    def borrowed(grad, shape):
        return td.ops.unbroadcast(grad, shape)

    def imported(grad, shape):
        from tinyddpm.ops import unbroadcast as theirs
        return theirs(grad, shape)

    def geometry_only(x, dy, kh, kw, stride=1, padding="valid"):
        _, pads = td.kernels.conv2d_geometry(x.shape, (kh, kw), stride, padding)
        return pads

    assert checks.calls_tinyddpm(borrowed, "unbroadcast")
    assert checks.calls_tinyddpm(imported, "unbroadcast")
    assert not checks.calls_tinyddpm(unbroadcast, "unbroadcast")
    assert not checks.calls_tinyddpm(geometry_only, "conv2d_backward")


class RecursiveRaisedLimit(Recursive):
    """The recursive sort, with the recursion limit raised out of the way."""

    def backward(self):
        import sys

        sys.setrecursionlimit(100000)
        Recursive.backward(self)


def test_check_backward_runs_the_deep_chain_at_the_default_recursion_limit():
    import sys

    before = sys.getrecursionlimit()
    try:
        sys.setrecursionlimit(100000)                 # in the answer cell, before the check
        with pytest.raises(AssertionError, match=r"(?s)deep chain.*RecursionError.*1,000.*your "
                                                 r"own stack"):
            checks.check_backward(Recursive, depth=2000)
        assert sys.getrecursionlimit() == 100000      # the student's own setting, restored
        with pytest.raises(AssertionError, match=r"(?s)deep chain.*changed the recursion limit "
                                                 r"to 100,000.*your own stack"):
            checks.check_backward(RecursiveRaisedLimit, depth=2000)   # inside backward()
    finally:
        sys.setrecursionlimit(before)
    checks.check_backward(Value, depth=2000)
    assert sys.getrecursionlimit() == before


class NoBackward(Value):
    backward = None


def test_check_backward_names_a_missing_backward():
    with pytest.raises(AssertionError, match=r"NoBackward has no method backward\(\)"):
        checks.check_backward(NoBackward)
