"""Checks for the engine a student builds in lesson 12 (``lessons/12_build_the_engine.ipynb``).

Each ``check_*`` function runs a battery of small cases on the student's code and compares it with
an independent answer: central differences of the same formulas, or the package's own
implementation (:func:`tinyddpm.ops.unbroadcast`, ``tinyddpm.Tensor``, ``kernels.im2col``,
``kernels.reference.conv2d``, ``kernels.conv2d_backward``). It returns a short summary string
when every case passes, and otherwise raises ``AssertionError`` naming the case, the expected
and the obtained values, and, for the usual mistakes, what to change::

    from tinyddpm.checks import check_value
    print(check_value(Value))

What the student's code looks like (micrograd's names):

* ``Value(data)``: a scalar node with ``.data``, ``.grad`` (0 to start with), ``._prev`` (the
  nodes it was made from), ``._backward`` (a closure that adds the node's gradient times the
  local derivative to each input's ``.grad``) and ``.backward()``;
* ``Array(data)``: the same over NumPy arrays, with broadcasting;
* ``unbroadcast(grad, shape)``, ``im2col(x, kh, kw, stride, pads)``,
  ``conv2d(x, kernel, bias, stride, padding)`` and the gradients of a convolution.
"""
from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading

import numpy as np

__all__ = ["check_value", "check_backward", "check_array", "check_unbroadcast", "check_im2col",
           "check_conv2d", "check_col2im", "check_conv2d_input_grad", "check_conv2d_kernel_grad",
           "answered", "calls_tinyddpm", "reference_topological_order", "reference_backward",
           "reference_im2col"]


# ---------------------------------------------------------------------------------------------
# the lesson's exercises: answered or not, written or borrowed, and the versions it goes on with
# ---------------------------------------------------------------------------------------------
def _empty():
    ...


def _empty_documented():
    """A docstring and nothing else."""
    ...


def answered(fn):
    """False only for a function whose body is just a docstring and/or ``...`` (the lesson's
    placeholder), True for anything else, a body that forgets ``return`` included: that one is
    answered, and the check says it returned None.

    Compares ``fn.__code__.co_code`` with that of an empty function (with and without a
    docstring: a docstring shifts the index of the constant None), and requires the constant
    returned to be None and no name to be used.
    """
    code = getattr(fn, "__code__", None)
    if code is None:
        return True
    for empty in (_empty, _empty_documented):
        model = empty.__code__
        if (code.co_code == model.co_code and not code.co_names
                and len(code.co_consts) == len(model.co_consts) and code.co_consts[-1] is None
                and all(isinstance(c, str) for c in code.co_consts[:-1])):
            return False
    return True


def _names(code):
    """The global, attribute and enclosing-scope names ``code`` and the functions defined in
    it refer to."""
    names = set(code.co_names) | set(code.co_freevars)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _names(const)
    return names


def calls_tinyddpm(fn, *names):
    """True when ``fn``'s code refers to tinyddpm (``td``, ``tinyddpm``, ``checks``, an import
    of ``tinyddpm.…``) and to one of ``names`` (say "unbroadcast" for ``td.ops.unbroadcast``):
    an exercise answered by calling the package's own version rather than writing it."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return False
    used = _names(code)
    package = any(n in ("td", "tinyddpm", "checks") or n.startswith("tinyddpm.") for n in used)
    return package and (not names or any(n in used for n in names))


def reference_topological_order(root):
    """Every node of the graph ending at ``root``, each once, each after all of its inputs
    (``_prev``), root last: tinyddpm's ``tensor._topological_order`` written over ``_prev``, an
    iterative depth-first search (each node pushed twice: to expand it, then, after its inputs,
    to append it), so that a deep graph does not reach Python's recursion limit."""
    order, visited, stack = [], set(), [(root, False)]
    while stack:
        v, expanded = stack.pop()
        if expanded:
            order.append(v)
        elif id(v) not in visited:
            visited.add(id(v))
            stack.append((v, True))
            stack.extend((p, False) for p in v._prev)
    return order


def reference_backward(self):
    """A ``Value``-style ``backward()`` (tinyddpm's ``Tensor.backward`` for ``Value``): set
    ``self.grad = 1``, then call each node's ``_backward`` in reverse
    :func:`reference_topological_order` (the root first). Lesson 12 goes on with it
    (``Value.backward = checks.reference_backward``) until exercise 1 is answered correctly."""
    self.grad = 1.0
    for v in reversed(reference_topological_order(self)):
        v._backward()


def reference_im2col(x, kh, kw, stride, pads):
    """``tinyddpm.kernels.im2col`` with lesson 12's signature (the output size computed from
    ``pads``): the version the lesson goes on with until exercise 3 is answered correctly."""
    from .kernels import im2col

    top, bottom, left, right = pads
    out_hw = ((x.shape[1] + top + bottom - kh) // stride + 1,
              (x.shape[2] + left + right - kw) // stride + 1)
    return im2col(x, kh, kw, stride, pads, out_hw)


def _fmt(x):
    if isinstance(x, np.ndarray):
        return np.array2string(x, precision=5, threshold=12, separator=", ")
    if isinstance(x, float):
        return f"{x:.6g}"
    return repr(x)


def _close(got, want, rtol=1e-5, atol=1e-6):
    try:
        got = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return got.shape == np.shape(want) and bool(np.allclose(got, want, rtol=rtol, atol=atol))


#: seconds a single case of the student's code may take (where ``signal.alarm`` is usable)
TIME_LIMIT = 10


class _TimeUp(BaseException):
    """Raised by the alarm in the student's code (a BaseException: ``except Exception`` in
    their code does not swallow it)."""


@contextlib.contextmanager
def _time_limit(what, seconds=None):
    """Stop the student's code after ``seconds`` where ``signal.alarm`` is usable (Unix, the
    main thread, no alarm already set); elsewhere, no limit."""
    seconds = TIME_LIMIT if seconds is None else seconds
    usable = (hasattr(signal, "SIGALRM") and seconds
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    def stop(signum, frame):
        raise _TimeUp()

    try:
        old = signal.signal(signal.SIGALRM, stop)
    except (ValueError, OSError):          # not the main thread of the interpreter
        yield
        return
    if signal.alarm(seconds):              # someone else's alarm: leave it alone, no limit
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        yield
        return
    try:
        yield
    except _TimeUp:
        raise AssertionError(f"{what} took more than {seconds} s (an endless loop?)") from None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _call(what, signature, fn, *args, names=()):
    """``fn(*args)`` for the case ``what``, the student's errors turned into an AssertionError
    that names the case and the expected signature (the original error chained); checks that
    the arrays named in ``names`` (one name per argument, "" for none) are left unchanged."""
    if not callable(fn):
        raise AssertionError(f"{what}: {fn!r} is not a function; expected {signature}")
    kept = [(name, a, a.copy()) for name, a in zip(names, args)
            if name and isinstance(a, np.ndarray)]
    try:
        with _time_limit(what):
            got = fn(*args)
    except AssertionError as exc:
        if str(exc).startswith(what):       # our own time limit
            raise
        raise AssertionError(f"{what}: your code raised AssertionError: {exc}\n"
                             f"(expected signature: {signature})") from exc
    except Exception as exc:
        raise AssertionError(f"{what}: your code raised {type(exc).__name__}: {exc}\n"
                             f"(expected signature: {signature})") from exc
    for name, a, before in kept:
        if a.shape != before.shape or not np.array_equal(a, before, equal_nan=True):
            raise AssertionError(f"{what}: your function changed its argument {name} in place; "
                                 "work on a copy (np.pad, .copy(), a + b instead of a += b)")
    return got


def _run(what, step, *args):
    """``step(*args)`` (a step of the student's engine: an op, ``_backward``, ``backward``),
    its errors reported as an AssertionError naming the case (the original chained)."""
    try:
        with _time_limit(what):
            return step(*args)
    except AssertionError:
        raise
    except Exception as exc:
        raise AssertionError(f"{what}: {type(exc).__name__}: {exc}") from exc


def _same_type(Value, out, what):
    """The subclass trap: ops of a base class build base-class results, so the methods a
    subclass overrides never run on them."""
    if isinstance(Value, type) and hasattr(out, "_backward") and not isinstance(out, Value):
        raise AssertionError(
            f"{what}: your ops return <{type(out).__name__}>, not <{Value.__name__}>: the "
            f"operators were inherited and build {type(out).__name__} objects, so what "
            f"{Value.__name__} overrides never runs on them; make results with "
            f"type(self)(...), or patch the method on the class itself "
            f"({type(out).__name__}.backward = ...) and check that class")


def _worst(got, want):
    """' (largest difference at index: got g, expected w)' for arrays of the same shape."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape or got.size == 0:
        return ""
    diff = np.abs(got - want)
    diff = np.where(np.isnan(diff), np.inf, diff)
    index = np.unravel_index(int(np.argmax(diff)), got.shape)
    index = tuple(int(i) for i in index)
    return (f" (largest difference {float(diff[index]):.3g} at {index}: got {got[index]:.6g}, "
            f"expected {want[index]:.6g})")


def _numeric_derivative(f, x, h=1e-6):
    return (f(x + h) - f(x - h)) / (2 * h)


# ---------------------------------------------------------------------------------------------
# step 1: the scalar Value, one operation at a time
# ---------------------------------------------------------------------------------------------
def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


#: name: (how to call it on Values a, b; the same on floats; the inputs)
_VALUE_OPS = {
    "add": (lambda a, b: a + b, lambda x, y: x + y, (1.5, -2.0)),
    "mul": (lambda a, b: a * b, lambda x, y: x * y, (1.5, -2.0)),
    "pow": (lambda a, b: a ** 3, lambda x: x ** 3, (1.5, None)),
    "pow_negative": (lambda a, b: a ** -1, lambda x: x ** -1, (1.5, None)),
    "pow_half": (lambda a, b: a ** 0.5, lambda x: x ** 0.5, (1.5, None)),
    "tanh": (lambda a, b: a.tanh(), math.tanh, (0.7, None)),
    "exp": (lambda a, b: a.exp(), math.exp, (0.7, None)),
    "log": (lambda a, b: a.log(), math.log, (0.7, None)),
    "sigmoid": (lambda a, b: a.sigmoid(), _sigmoid, (0.7, None)),
    "relu": (lambda a, b: a.relu(), lambda x: max(x, 0.0), (1.3, None)),
    "relu_negative": (lambda a, b: a.relu(), lambda x: max(x, 0.0), (-0.7, None)),
}
_GROUPS = {"pow": ("pow", "pow_negative", "pow_half"), "relu": ("relu", "relu_negative")}


def check_value(Value, ops=("add", "mul", "pow", "tanh", "exp")):
    """Check the forward value and the local ``_backward`` of each operation of ``Value``.

    ``ops``: any of "add", "mul", "pow" (``x ** 3``, ``x ** -1``, ``x ** 0.5``: a constant
    exponent), "tanh", "exp", "log", "sigmoid", "relu" (at a
    positive and a negative input). For each one on fresh inputs: the output is a ``Value`` whose
    ``data`` is the operation's value and whose ``_prev`` holds the inputs; then, with
    ``out.grad = 0.7`` and the inputs' grads already at 0.3 and -0.2 (as if another user had
    passed its gradient first), one call of ``out._backward()`` must *add* 0.7 times the local
    derivative (central differences of the formula) to each input's grad.
    """
    names = [n for op in ops for n in _GROUPS.get(op, (op,))]
    unknown = [n for n in names if n not in _VALUE_OPS]
    if unknown:
        raise ValueError(f"check_value: unknown operation {unknown[0]!r}; "
                         f"choose among {sorted(_VALUE_OPS)}")
    for name in names:
        call, formula, (x, y) = _VALUE_OPS[name]
        two = y is not None
        f = formula if two else (lambda u, v, formula=formula: formula(u))
        a = _run(f"check_value({name}): Value({x})", Value, x)
        b = _run(f"check_value({name}): Value({y})", Value, y) if two else None
        try:
            with _time_limit(f"check_value({name})"):
                out = call(a, b)
        except AssertionError:
            raise
        except Exception as exc:
            raise AssertionError(f"check_value({name}): calling it on Value({x})"
                                 f"{f' and Value({y})' if two else ''} raised "
                                 f"{type(exc).__name__}: {exc}") from exc
        assert out is not None and hasattr(out, "_backward"), (
            f"check_value({name}): it returned {out!r}, not a Value (did you `return out`?)")
        _same_type(Value, out, f"check_value({name})")
        want = f(x, y)
        assert _close(out.data, want), (
            f"check_value({name}): forward value {_fmt(out.data)}, expected {_fmt(want)}")
        prev = list(out._prev)
        inputs = [a, b] if two else [a]
        for k, v in enumerate(inputs):
            assert any(p is v for p in prev), (
                f"check_value({name}): out._prev does not hold input {k} (the Value itself): "
                "pass the inputs when making out, e.g. Value(data, (self, other))")
        before = [0.3, -0.2][:len(inputs)]
        for v, g in zip(inputs, before):
            v.grad = g
        out.grad = 0.7
        _run(f"check_value({name}): out._backward()", out._backward)
        local = [_numeric_derivative(lambda u: f(u, y), x)]
        if two:
            local.append(_numeric_derivative(lambda v: f(x, v), y))
        for k, (v, g0, d) in enumerate(zip(inputs, before, local)):
            want, got = g0 + 0.7 * d, v.grad
            if _close(got, want, rtol=1e-4):
                continue
            which = ("a", "b")[k] if two else "x"
            hint = ""
            if _close(got, 0.7 * d, rtol=1e-4):
                hint = ("the gradient was overwritten instead of accumulated: use "
                        f"{which}.grad += ..., not =, since a node used twice gets a gradient "
                        "from each of its users")
            elif _close(got, g0 + d, rtol=1e-4):
                hint = ("the local derivative was not multiplied by out.grad (the chain rule: "
                        "dL/dx = dL/dout * dout/dx)")
            elif _close(got, g0, rtol=1e-4):
                hint = f"_backward did not change {which}.grad: is out._backward set to it?"
            elif name == "relu_negative":
                hint = "relu's derivative is 0 where x < 0: nothing passes there"
            raise AssertionError(
                f"check_value({name}): after out._backward() with out.grad = 0.7, "
                f"{which}.grad = {_fmt(got)}, expected {g0} + 0.7 * {d:.6g} = {want:.6g}"
                + (f"\nhint: {hint}" if hint else ""))
    return f"check_value: {', '.join(names)} correct"


# ---------------------------------------------------------------------------------------------
# step 1: backward() over a whole graph
# ---------------------------------------------------------------------------------------------
def _apply(op, nodes, i, j):
    a, b = nodes[i], nodes[j]
    return {"add": lambda: a + b, "mul": lambda: a * b, "tanh": lambda: a.tanh()}[op]()


def _evaluate(program, inputs):
    nodes = list(inputs)
    for op, i, j in program:
        a, b = nodes[i], nodes[j]
        nodes.append({"add": a + b, "mul": a * b, "tanh": math.tanh(a)}[op])
    return nodes[-1]


def chain_program(n):
    """A deep graph as a program over node numbers (inputs first): x <- 0.5 x + 0.5 tanh(x),
    n times (3 nodes a step), with inputs [x, 0.5] = [0.8, 0.5]. Also the grader's (assignment
    7's deep graph)."""
    program, x = [], 0
    for _ in range(n):
        k = 2 + len(program)
        program += [("tanh", x, x), ("add", x, k), ("mul", k + 1, 1)]
        x = k + 2
    return program, [0.8, 0.5]


#: name: (description, program over node numbers (inputs first), inputs)
_GRAPHS = {
    "chain": ("a * b + c", [("mul", 0, 1), ("add", 3, 2)], [2.0, -3.0, 0.5]),
    "square": ("x * x (x used twice by one node)", [("mul", 0, 0)], [1.5]),
    "double": ("a + a", [("add", 0, 0)], [1.5]),
    "diamond": ("d = a * b; e = d + d * c (d used by two nodes)",
                [("mul", 0, 1), ("mul", 3, 2), ("add", 3, 4)], [2.0, -3.0, 0.5]),
    "shared": ("t = tanh(x); u = t * y; v = tanh(t); w = (u + v) * t + u",
               [("tanh", 0, 0), ("mul", 2, 1), ("tanh", 2, 2), ("add", 3, 4), ("mul", 5, 2),
                ("add", 6, 3)], [0.3, -1.2]),
    "unused": ("x * x, with a second input y the root does not use", [("mul", 0, 0)],
               [0.5, 4.0]),
}


def _build(Value, program, inputs):
    nodes = [Value(x) for x in inputs]
    for op, i, j in program:
        nodes.append(_apply(op, nodes, i, j))
    return nodes


def _replay(nodes, closures, n_inputs):
    """The inputs' grads when the student's own _backward closures run in a reverse
    topological order (the reverse of the order the nodes were made in)."""
    for v in nodes:
        v.grad = 0.0
    nodes[-1].grad = 1.0
    for v in reversed(nodes):
        closures[id(v)]()
    return np.array([nodes[k].grad for k in range(n_inputs)], dtype=np.float64)


def _trace(nodes):
    """Wrap each node's _backward to record the calls; returns (the calls, the originals)."""
    calls, closures = [], {}
    for v in nodes:
        closures[id(v)] = inner = v._backward

        def traced(v=v, inner=inner):
            calls.append(v)
            inner()
        v._backward = traced
    return calls, closures


def _order_hint(nodes, calls):
    """What is wrong with the order in which backward() called the operations' _backward."""
    ops = [v for v in nodes if v._prev]
    count = {}
    for v in calls:
        count[id(v)] = count.get(id(v), 0) + 1
    if any(count.get(id(v), 0) > 1 for v in ops):
        return ("a node's _backward ran more than once (it is reached along two paths): keep a "
                "set of visited nodes so that each node is in the order once")
    if any(count.get(id(v), 0) == 0 for v in ops):
        return ("a node's _backward never ran: the order must hold every node of the graph "
                "(follow _prev from the root)")
    first = {}
    for k, v in enumerate(calls):
        first.setdefault(id(v), k)
    users_first = all(first[id(v)] < first[id(p)] for v in ops for p in v._prev if p._prev)
    if users_first:
        return None
    inputs_first = all(first[id(v)] > first[id(p)] for v in ops for p in v._prev if p._prev)
    if inputs_first:
        return ("the _backward closures ran in topological order (inputs first): run them in "
                "reverse, for node in reversed(topo)")
    return ("a node's _backward ran before all of its users had added to its grad (a walk "
            "from the root is not a topological order): build topo with a depth-first search, "
            "appending each node after its inputs, and run reversed(topo)")


def check_backward(Value, depth=5000):
    """Check ``root.backward()`` on whole graphs against central differences of the same
    formulas (in float64).

    Graphs: a * b + c; x * x and a + a (a node used twice by one node: its grad is the sum of
    the two contributions, hence ``+=`` in ``_backward``); a diamond d = a * b; e = d + d * c
    (d's ``_backward`` may run only after both of its users have added to ``d.grad``: reverse
    topological order); a graph where a node feeds four others; an input the root does not use
    (its grad stays 0); and a chain of ``depth`` steps (3 * ``depth`` + 2 nodes, a path of
    2 * ``depth`` + 1: a recursive topological sort stops at Python's recursion limit,
    ``sys.getrecursionlimit()``, 1,000 in Python and 3,000 in Jupyter). The chain runs with the
    limit at Python's default, 1,000 (restored afterwards): a recursive sort with
    ``sys.setrecursionlimit(100000)`` would otherwise pass here and still crash, deeper or in a
    thread (whose C stack is smaller), where the limit cannot save it.
    The calls of the nodes' ``_backward`` are recorded, so that a wrong answer comes with what
    went wrong: a closure run twice (no visited set), never, or before one of its node's users
    (forward order, a walk from the root); or, in a right order, closures that give wrong
    grads (``=`` instead of ``+=``).
    """
    for name, (what, program, inputs) in _GRAPHS.items():
        nodes = _run(f"check_backward({name}: {what}): building the graph", _build, Value,
                     program, inputs)
        for v in nodes:
            _same_type(Value, v, f"check_backward({name}: {what})")
        root = nodes[-1]
        if not callable(getattr(root, "backward", None)):
            raise AssertionError(
                f"check_backward: {type(root).__name__} has no method backward(): put yours on "
                f"the class ({type(root).__name__}.backward = backward)")
        calls, closures = _trace(nodes)
        _run(f"check_backward({name}: {what}): root.backward()", root.backward)
        got = np.array([nodes[k].grad for k in range(len(inputs))], dtype=np.float64)
        want = np.array([_numeric_derivative(
            lambda u, k=k: _evaluate(program, inputs[:k] + [u] + inputs[k + 1:]), inputs[k])
            for k in range(len(inputs))])
        if _close(got, want, rtol=1e-5, atol=1e-6):
            continue
        message = (f"check_backward({name}: {what}): the inputs' grads are {_fmt(got)}, "
                   f"central differences give {_fmt(want)}")
        hint = None
        if _close(got, np.zeros_like(want)):
            hint = "every grad is 0: backward() must set self.grad = 1 before the closures run"
        if hint is None:
            hint = _order_hint(nodes, calls)
        if hint is None:
            right_order = _replay(nodes, closures, len(inputs))
            if not _close(right_order, want, rtol=1e-5, atol=1e-6):
                hint = ("even in a right order the _backward closures give "
                        f"{_fmt(right_order)}: a closure overwrites a grad (use +=, not =) or "
                        "has a wrong derivative; run check_value(Value) first")
        raise AssertionError(message + (f"\nhint: {hint}" if hint else ""))

    program, inputs = chain_program(depth)
    nodes = _build(Value, program, inputs)
    what = f"check_backward(deep chain of {len(nodes):,} nodes)"
    limit, default = sys.getrecursionlimit(), max(1000, _stack_depth() + 100)
    try:
        sys.setrecursionlimit(default)       # Python's default: a raised limit does not count
        with _time_limit(what):
            nodes[-1].backward()
        if sys.getrecursionlimit() != default:
            raise AssertionError(
                f"{what}: root.backward() changed the recursion limit to "
                f"{sys.getrecursionlimit():,} (sys.setrecursionlimit)\nhint: raising it only "
                "moves the crash to deeper graphs (or into a thread, whose C stack is smaller); "
                "build topo with your own stack (a list) instead of a recursive function")
    except RecursionError:
        raise AssertionError(
            f"check_backward(deep chain of {len(nodes):,} nodes): RecursionError\nhint: Python "
            f"stops at {default:,} nested calls (its default sys.getrecursionlimit(), which this "
            "check uses; raising it only moves the crash to deeper graphs); build topo with "
            "your own stack (a list) instead of a recursive function") from None
    except AssertionError:
        raise
    except Exception as exc:
        raise AssertionError(f"{what}: root.backward() raised {type(exc).__name__}: {exc}") \
            from exc
    finally:
        sys.setrecursionlimit(limit)
    got = np.array([nodes[0].grad, nodes[1].grad], dtype=np.float64)
    want = _chain_grads(depth, *inputs)
    assert _close(got, want, rtol=1e-6, atol=1e-9), (
        f"check_backward(deep chain of {len(nodes):,} nodes): grads {_fmt(got)}, "
        f"expected {_fmt(want)}")
    return (f"check_backward: {len(_GRAPHS)} graphs and a chain of {len(nodes):,} nodes "
            "correct")


def _stack_depth():
    """How many frames the current call stack holds."""
    frame, depth = sys._getframe(), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1
    return depth


def _chain_grads(depth, x, c):
    """d root / d (x, c) of :func:`chain_program`, by forward-mode differentiation in float64."""
    dx, dc = 1.0, 0.0
    for _ in range(depth):
        t = math.tanh(x)
        s = x + t
        ds = 1 + 1 - t * t
        dx, dc = c * ds * dx, c * ds * dc + s
        x = s * c
    return np.array([dx, dc])


# ---------------------------------------------------------------------------------------------
# step 3: the tensor version (broadcasting)
# ---------------------------------------------------------------------------------------------
_ARRAY_CASES = {   # (shape of x, shape of y): y broadcast against x
    "same shapes": ((2, 3), (2, 3)),
    "a bias (3,) added to (2, 3)": ((2, 3), (3,)),
    "a scalar ()": ((2, 3), ()),
    "(2, 1, 4) with (2, 3, 4)": ((2, 3, 4), (2, 1, 4)),
    "(4, 1) with (1, 5)": ((4, 1), (1, 5)),
    "(3,) with (2, 3), the small one first": ((3,), (2, 3)),
}
_SUM_HINT = ("every summed element receives the sum's gradient: put the axes that "
             "keepdims=False removed back as size 1 (np.expand_dims(out.grad, axis)), then "
             "np.broadcast_to(..., x.shape)")
_SUM_CASES = [(None, False), (0, False), ((0, 2), False), (1, True), (-1, False),
              ((0, 1, 2), True)]


def _tensor_grads(fn, arrays, weights):
    from .tensor import Tensor

    ts = [Tensor(a, requires_grad=True, dtype=np.float64) for a in arrays]
    out = fn(*ts)
    (out * Tensor(weights, dtype=np.float64)).sum().backward()
    return out.data, [t.grad for t in ts]


def check_array(Array, ops=("add", "mul")):
    """Check an ``Array`` (``Value`` over NumPy arrays: ``.data``, ``.grad``, ``._backward``,
    ``.backward()``) against ``tinyddpm.Tensor`` in float64.

    ``ops``: "add" and "mul" on the pairs of shapes of broadcasting (same shapes, a bias (3,)
    on (2, 3), a scalar, (2, 1, 4) on (2, 3, 4), (4, 1) with (1, 5), the small one first) and
    "sum" (``x.sum(axis, keepdims)`` for axis None, 0, (0, 2), 1 with keepdims, -1, all three
    with keepdims). Each result ``z`` is multiplied by a fixed random Array ``w`` and
    ``(z * w).backward()`` run; each input's grad must have the input's shape and equal
    ``tinyddpm.Tensor``'s gradient of sum(z * w).
    """
    rng = np.random.default_rng(0)
    cases = []
    for op in ops:
        if op in ("add", "mul"):
            for name, shapes in _ARRAY_CASES.items():
                cases.append((f"{op}, {name}", op, shapes, None))
            cases.append((f"x {'+' if op == 'add' else '*'} x (x used twice)", op + "_twice",
                          ((2, 3),), None))
        elif op == "sum":
            for axis, keepdims in _SUM_CASES:
                cases.append((f"x.sum(axis={axis}, keepdims={keepdims}) on (2, 3, 4)", "sum",
                              ((2, 3, 4),), (axis, keepdims)))
            cases.append(("x.sum() + x.sum() (x used twice)", "sum_twice", ((2, 3),), None))
        else:
            raise ValueError(f"check_array: unknown operation {op!r}; choose among "
                             "'add', 'mul', 'sum'")
    for name, op, shapes, args in cases:
        arrays = [rng.standard_normal(s) for s in shapes]
        if op == "sum":
            axis, keepdims = args
            fn = lambda x: x.sum(axis=axis, keepdims=keepdims)  # noqa: E731
        elif op.endswith("_twice"):
            fn = {"add_twice": lambda x: x + x, "mul_twice": lambda x: x * x,
                  "sum_twice": lambda x: x.sum() + x.sum()}[op]
        else:
            fn = {"add": lambda x, y: x + y, "mul": lambda x, y: x * y}[op]
        want_out, want_grads = _tensor_grads(fn, arrays, np.ones(1))
        weights = rng.standard_normal(np.shape(want_out))
        want_out, want_grads = _tensor_grads(fn, arrays, weights)
        mine = [Array(a.copy()) for a in arrays]
        try:
            with _time_limit(f"check_array({name})"):
                out = fn(*mine)
            if out is None:
                raise AssertionError(f"check_array({name}): it returned None (no `return out`?)")
            assert _close(out.data, want_out), (
                f"check_array({name}): forward gives {_fmt(np.asarray(out.data))} of shape "
                f"{np.shape(out.data)}, expected {_fmt(want_out)} of shape {want_out.shape}")
            _same_type(Array, out, f"check_array({name})")
            with _time_limit(f"check_array({name}): backward()"):
                (out * Array(weights)).backward()
        except ValueError as exc:
            hint = (_SUM_HINT if op.startswith("sum") else
                    "a broadcast result's gradient has the result's shape; sum it down to each "
                    "input's shape (unbroadcast) before adding it to the input's grad")
            raise AssertionError(f"check_array({name}): ValueError: {exc}\nhint: {hint}") \
                from exc
        except AssertionError:
            raise
        except Exception as exc:
            raise AssertionError(f"check_array({name}): {type(exc).__name__}: {exc}") from exc
        for k, (v, want) in enumerate(zip(mine, want_grads)):
            got = np.asarray(v.grad, dtype=np.float64)
            if got.shape != want.shape:
                hint = ("sum the gradient over the axes broadcasting stretched (unbroadcast)"
                        if got.size > want.size else
                        _SUM_HINT if op == "sum" else "")
                raise AssertionError(
                    f"check_array({name}): input {k} has shape {want.shape} but its grad has "
                    f"shape {got.shape}" + (f"\nhint: {hint}" if hint else ""))
            if _close(got, want):
                continue
            hint = ""
            if op.endswith("_twice") and _close(got, want / 2):
                hint = ("\nhint: x received only one of its two shares: the gradient was "
                        "overwritten instead of accumulated; use self.grad += ... (and "
                        "other.grad += ...), not =, in the backward of "
                        + ("sum" if op == "sum_twice" else op[:3]))
            raise AssertionError(
                f"check_array({name}): input {k}'s grad is {_fmt(got)}, tinyddpm.Tensor gives "
                f"{_fmt(want)}{_worst(got, want)}{hint}")
    return f"check_array: {', '.join(ops)} correct on {len(cases)} cases"


_UNBROADCAST_CASES = {   # name: (grad's shape, target shape)
    "same shape": ((2, 3, 4), (2, 3, 4)),
    "leading axes": ((2, 3, 4), (4,)),
    "a bias on images": ((4, 5, 5, 3), (3,)),
    "size-1 axes": ((2, 3, 4), (2, 1, 4)),
    "per-image size-1 axes": ((4, 5, 5, 3), (4, 1, 1, 3)),
    "leading and size-1 axes": ((5, 2, 3, 4), (3, 1)),
    "a scalar": ((2, 3), ()),
    "float32": ((3, 4), (1, 4)),
}


def check_unbroadcast(fn):
    """Check ``fn(grad, shape)``, the backward of broadcasting, against
    :func:`tinyddpm.ops.unbroadcast`: the gradient summed over the axes broadcasting added in
    front and over the axes where ``shape`` has 1 (kept as size 1), so that the result has
    exactly ``shape`` and the same dtype.

    Cases: the same shape; (2, 3, 4) -> (4,); (4, 5, 5, 3) -> (3,) (a bias on images);
    (2, 3, 4) -> (2, 1, 4); (4, 5, 5, 3) -> (4, 1, 1, 3); (5, 2, 3, 4) -> (3, 1); (2, 3) -> ()
    and a float32 grad.
    """
    from .ops import unbroadcast

    for k, (name, (g_shape, shape)) in enumerate(_UNBROADCAST_CASES.items()):
        dtype = np.float32 if name == "float32" else np.float64
        g = np.random.default_rng(k).standard_normal(g_shape).astype(dtype)
        want = np.asarray(unbroadcast(g.copy(), shape))
        what = f"check_unbroadcast({name}): unbroadcast(grad of shape {g_shape}, {shape})"
        got = _call(what, "unbroadcast(grad, shape)", fn, g.copy(), shape, names=("grad", ""))
        assert got is not None, f"{what} returned None (no `return`?)"
        got_shape = np.shape(got)
        if got_shape != tuple(shape):
            extra = len(g_shape) - len(shape)
            leading = g.sum(axis=tuple(range(extra)))
            if got_shape == leading.shape and got_shape != want.shape:
                hint = ("the leading axes are summed, but not the axes where shape has 1: sum "
                        "those too, with keepdims=True")
            elif int(np.prod(got_shape)) == want.size:
                hint = ("the right numbers, but the axes of size 1 were dropped: sum them with "
                        "keepdims=True (or reshape to shape at the end)")
            else:
                hint = "sum over the axes broadcasting stretched, and only those"
            raise AssertionError(f"{what} has shape {got_shape}, expected {tuple(shape)}"
                                 f"\nhint: {hint}")
        assert _close(got, want, rtol=1e-5, atol=1e-5), (
            f"{what} = {_fmt(np.asarray(got))}, expected {_fmt(want)}{_worst(got, want)}")
        if isinstance(got, np.ndarray):
            assert got.dtype == dtype, (
                f"{what}: a {dtype.__name__} grad came back as {got.dtype}: keep the dtype")
    return f"check_unbroadcast: {len(_UNBROADCAST_CASES)} cases correct"


# ---------------------------------------------------------------------------------------------
# step 4: a convolution as a matrix product
# ---------------------------------------------------------------------------------------------
_CONV_CASES = {   # name: (x shape (N, H, W, C), kernel shape (kh, kw, C_in, C_out), stride, padding)
    "one channel, 3x3, valid": ((1, 5, 5, 1), (3, 3, 1, 2), 1, "valid"),
    "two images, three channels": ((2, 5, 6, 3), (3, 3, 3, 4), 1, "valid"),
    "padding same": ((2, 5, 5, 2), (3, 3, 2, 3), 1, "same"),
    "stride 2, same (asymmetric padding)": ((1, 7, 6, 2), (3, 3, 2, 2), 2, "same"),
    "a 2x3 kernel": ((1, 5, 6, 2), (2, 3, 2, 2), 1, "valid"),
    "1x1": ((2, 3, 3, 4), (1, 1, 4, 2), 1, "valid"),
}


def _conv_case(k, name):
    from .kernels import conv2d_geometry

    x_shape, k_shape, stride, padding = _CONV_CASES[name]
    rng = np.random.default_rng(10 + k)
    x = rng.standard_normal(x_shape)
    kernel = rng.standard_normal(k_shape)
    bias = rng.standard_normal(k_shape[3])
    out_hw, pads = conv2d_geometry(x_shape, k_shape, stride, padding)
    return x, kernel, bias, stride, padding, pads, out_hw


def check_im2col(fn):
    """Check ``fn(x, kh, kw, stride, pads)`` against ``tinyddpm.kernels.im2col``.

    ``x`` is (N, H, W, C), ``pads`` = (top, bottom, left, right) zeros around the image; the
    result is (N * Ho * Wo, kh * kw * C): row ``(n * Ho + oh) * Wo + ow`` holds output pixel
    (n, oh, ow)'s receptive field, in the order (i, j, channel), which is how
    ``kernel.reshape(kh * kw * C_in, C_out)`` lays out a Keras kernel (kh, kw, C_in, C_out).
    Cases: as in :func:`check_conv2d`.
    """
    from .kernels import im2col

    for k, name in enumerate(_CONV_CASES):
        x, kernel, _, stride, padding, pads, out_hw = _conv_case(k, name)
        kh, kw, c, _ = kernel.shape
        want = im2col(x, kh, kw, stride, pads, out_hw)
        what = (f"check_im2col({name}): im2col(x of shape {x.shape}, {kh}, {kw}, stride "
                f"{stride}, pads {pads})")
        got = _call(what, "im2col(x, kh, kw, stride, pads)", fn, x.copy(), kh, kw, stride, pads,
                    names=("x",))
        assert got is not None, f"{what} returned None (no `return`?)"
        got = np.asarray(got)
        assert got.shape == want.shape, (
            f"{what} has shape {got.shape}, expected {want.shape} (N * Ho * Wo rows of "
            f"kh * kw * C; Ho, Wo = {out_hw})")
        if _close(got, want):
            continue
        rows, n_out = want.shape[0], kh * kw * c
        hint = None
        for order, axes in (("(channel, i, j)", (2, 0, 1)), ("(j, i, channel)", (1, 0, 2)),
                            ("(i, channel, j)", (0, 2, 1))):
            other = want.reshape(rows, kh, kw, c).transpose(0, *(1 + a for a in axes))
            if _close(got, other.reshape(rows, n_out)):
                hint = (f"each row holds the right pixels in the order {order}: lay them out as "
                        "(i, j, channel), i.e. patch[i, j, c] at column (i * kw + j) * C + c, "
                        "to match kernel.reshape(kh * kw * C_in, C_out)")
        n, _, _, _ = x.shape
        ho, wo = out_hw
        if hint is None:
            swapped = want.reshape(n, ho, wo, n_out).transpose(0, 2, 1, 3).reshape(rows, n_out)
            if ho == wo and _close(got, swapped):
                hint = "rows in the order (n, ow, oh): row (n * Ho + oh) * Wo + ow is (n, oh, ow)"
        if hint is None and np.allclose(np.sort(got, axis=1), np.sort(want, axis=1)):
            hint = "each row holds the right values in the wrong order: (i, j, channel)"
        if hint is None and stride > 1:
            hint = "output pixel (oh, ow) starts at input pixel (oh * stride, ow * stride)"
        if hint is None and any(pads):
            hint = "pad x with zeros: pads[0] rows on top, pads[1] below, pads[2] left, pads[3] right"
        bad = int(np.argmax(np.abs(got - want).max(axis=1)))
        raise AssertionError(f"{what}: row {bad} is {_fmt(got[bad])}, expected {_fmt(want[bad])}"
                             + (f"\nhint: {hint}" if hint else ""))
    return f"check_im2col: {len(_CONV_CASES)} cases correct"


def check_conv2d(fn):
    """Check ``fn(x, kernel, bias, stride, padding)`` (padding "valid" or "same", as Keras)
    against ``tinyddpm.kernels.reference.conv2d`` (the definition, looped) and the fast kernel
    ``tinyddpm.kernels.conv2d_forward``; the result is (N, Ho, Wo, C_out).

    Cases: one channel; several images and channels; "same" padding; stride 2 with the
    asymmetric "same" padding; a 2x3 kernel; a 1x1 kernel.
    """
    from .kernels import conv2d_forward, reference

    for k, name in enumerate(_CONV_CASES):
        x, kernel, bias, stride, padding, pads, out_hw = _conv_case(k, name)
        want = reference.conv2d(x, kernel, bias, stride, pads, out_hw)
        fast, _ = conv2d_forward(x, kernel, bias, stride, pads, out_hw)
        assert np.allclose(want, fast, atol=1e-9), "tinyddpm: the kernel and its reference differ"
        what = (f"check_conv2d({name}): conv2d(x {x.shape}, kernel {kernel.shape}, stride "
                f"{stride}, {padding!r})")
        got = _call(what, "conv2d(x, kernel, bias, stride, padding)", fn, x.copy(),
                    kernel.copy(), bias.copy(), stride, padding, names=("x", "kernel", "bias"))
        assert got is not None, f"{what} returned None (no `return`?)"
        got = np.asarray(got)
        assert got.shape == want.shape, f"{what} has shape {got.shape}, expected {want.shape}"
        if _close(got, want):
            continue
        hint = None
        if _close(got, want - bias):
            hint = "the bias is missing: add it to every output pixel"
        elif _close(got, reference.conv2d(x, kernel[::-1, ::-1], bias, stride, pads, out_hw)):
            hint = ("the kernel is flipped: a network's 'convolution' is a cross-correlation, "
                    "y = sum_ij x[oh*s + i, ow*s + j] @ kernel[i, j], with no flip")
        raise AssertionError(f"{what}: {_worst(got, want)[2:-1]} from the reference"
                             + (f"\nhint: {hint}" if hint else ""))
    return f"check_conv2d: {len(_CONV_CASES)} cases correct (reference and kernel)"


def check_col2im(fn, im2col=None):
    """Check ``fn(cols, x_shape, kh, kw, stride, pads)``, the adjoint of im2col: each row's
    values added back onto the pixels of the input they were read from (pixels read by several
    windows get the sum; the padding is dropped).

    Compared with ``tinyddpm.kernels.col2im``, and, as the definition of an adjoint,
    <im2col(x), C> = <x, col2im(C)> for random x and C (with ``im2col``, the student's own if
    given, else the package's).
    """
    from .kernels import col2im
    from .kernels import im2col as package_im2col

    for k, name in enumerate(_CONV_CASES):
        x, kernel, _, stride, padding, pads, out_hw = _conv_case(k, name)
        kh, kw, c, _ = kernel.shape
        rng = np.random.default_rng(100 + k)
        cols = rng.standard_normal((x.shape[0] * out_hw[0] * out_hw[1], kh * kw * c))
        want = col2im(cols, x.shape, kh, kw, stride, pads, out_hw)
        what = f"check_col2im({name}): col2im(cols {cols.shape}, {x.shape}, {kh}, {kw}, " \
               f"stride {stride}, pads {pads})"
        got = _call(what, "col2im(cols, x_shape, kh, kw, stride, pads)", fn, cols.copy(),
                    x.shape, kh, kw, stride, pads, names=("cols",))
        assert got is not None, f"{what} returned None (no `return`?)"
        got = np.asarray(got)
        assert got.shape == x.shape, f"{what} has shape {got.shape}, expected {x.shape}"
        cols_x = (_call(f"{what}: your im2col", "im2col(x, kh, kw, stride, pads)", im2col, x,
                        kh, kw, stride, pads) if im2col is not None
                  else package_im2col(x, kh, kw, stride, pads, out_hw))
        left, right = float(np.sum(cols_x * cols)), float(np.sum(x * got))
        if _close(got, want):
            continue
        hint = None
        if not np.isclose(got.sum(), want.sum()):
            hint = ("some values were lost: a pixel read by several windows gets the sum of "
                    "their values (add with +=, do not assign)")
        raise AssertionError(
            f"{what}: {_worst(got, want)[2:-1]} from "
            f"tinyddpm.kernels.col2im; <im2col(x), C> = {left:.6g} but <x, col2im(C)> = "
            f"{right:.6g}" + (f"\nhint: {hint}" if hint else ""))
    return f"check_col2im: {len(_CONV_CASES)} cases correct (the adjoint of im2col)"


def _conv_grads(x, kernel, dy, stride, pads, out_hw):
    from .kernels import conv2d_backward, conv2d_forward

    _, saved = conv2d_forward(x, kernel, None, stride, pads, out_hw)
    dx, dkernel, dbias = conv2d_backward(dy, x.shape, kernel, saved, stride, pads)
    return dx, dkernel, dbias


def _numeric_conv_grad(x, kernel, dy, stride, pads, out_hw, wrt, n=4, seed=0, at=None):
    """A few elements of d sum(conv(x, kernel) * dy) / d x (or kernel), by central differences
    of the reference convolution."""
    from .kernels import reference

    rng = np.random.default_rng(seed)
    target = x if wrt == "x" else kernel
    picks = ([at] if at is not None else
             [tuple(int(rng.integers(s)) for s in target.shape) for _ in range(n)])
    out = []
    for index in picks:
        values = []
        for h in (1e-6, -1e-6):
            t = target.copy()
            t[index] += h
            xx, kk = (t, kernel) if wrt == "x" else (x, t)
            values.append(np.sum(reference.conv2d(xx, kk, None, stride, pads, out_hw) * dy))
        out.append((index, (values[0] - values[1]) / 2e-6))
    return out


def _check_conv_grad(fn, wrt):
    label = {"x": "conv2d_input_grad", "kernel": "conv2d_kernel_grad"}[wrt]
    for k, name in enumerate(_CONV_CASES):
        x, kernel, _, stride, padding, pads, out_hw = _conv_case(k, name)
        kh, kw, _, c_out = kernel.shape
        dy = np.random.default_rng(200 + k).standard_normal((x.shape[0], *out_hw, c_out))
        dx, dkernel, _ = _conv_grads(x, kernel, dy, stride, pads, out_hw)
        if wrt == "x":
            want = dx
            what = f"check_conv2d_input_grad({name}): dx for x {x.shape}, kernel {kernel.shape}"
            what += f", stride {stride}, {padding!r}"
            got = _call(what, "conv2d_input_grad(x_shape, kernel, dy, stride, padding)", fn,
                        x.shape, kernel.copy(), dy.copy(), stride, padding,
                        names=("", "kernel", "dy"))
        else:
            want = dkernel
            what = f"check_conv2d_kernel_grad({name}): dkernel for x {x.shape}, kernel " \
                   f"{kernel.shape}"
            what += f", stride {stride}, {padding!r}"
            got = _call(what, "conv2d_kernel_grad(x, dy, kh, kw, stride, padding)", fn,
                        x.copy(), dy.copy(), kh, kw, stride, padding, names=("x", "dy"))
        assert got is not None, f"{what}: it returned None (no `return`?)"
        got = np.asarray(got)
        assert got.shape == want.shape, (
            f"{what} has shape {got.shape}, expected {want.shape} (the shape of "
            f"{'x' if wrt == 'x' else 'the kernel'})")
        numeric = _numeric_conv_grad(x, kernel, dy, stride, pads, out_hw, wrt, seed=k)
        for index, value in numeric:
            assert np.isclose(want[index], value, rtol=1e-5, atol=1e-6), \
                "tinyddpm: the kernel's gradient and central differences differ"
        if _close(got, want):
            continue
        hint = None
        rows = x.shape[0] * out_hw[0] * out_hw[1]
        if wrt == "kernel" and _close(got, want / rows):
            hint = "the sum over the output pixels is a mean: cols.T @ dy sums, do not divide"
        elif wrt == "kernel" and _close(got, want.reshape(-1, c_out).reshape(
                kernel.shape[2], kh, kw, c_out).transpose(1, 2, 0, 3)):
            hint = ("the rows of cols.T @ dy are in the order (i, j, channel), as im2col's "
                    "columns: reshape to (kh, kw, C_in, C_out) directly")
        elif wrt == "kernel" and _close(got, want[::-1, ::-1]):
            hint = "the kernel's gradient is flipped: dkernel[i, j] pairs x[oh*s + i, ow*s + j] " \
                   "with dy[oh, ow]"
        diff = np.abs(np.asarray(got, dtype=np.float64) - want)
        index = tuple(int(i) for i in np.unravel_index(
            int(np.argmax(np.where(np.isnan(diff), np.inf, diff))), want.shape))
        value = _numeric_conv_grad(x, kernel, dy, stride, pads, out_hw, wrt, at=index)[0][1]
        raise AssertionError(
            f"{what}: largest difference {diff[index]:.3g} from "
            f"tinyddpm.kernels.conv2d_backward, at {index}: got {got[index]:.6g}, central "
            f"differences {value:.6g}" + (f"\nhint: {hint}" if hint else ""))
    return f"check_{label}: {len(_CONV_CASES)} cases correct (kernel and central differences)"


def check_conv2d_input_grad(fn):
    """Check ``fn(x_shape, kernel, dy, stride, padding)`` = dL/dx of y = conv2d(x, kernel)
    given dy = dL/dy, against ``tinyddpm.kernels.conv2d_backward`` and central differences of
    the reference convolution (at a few elements). For y = cols @ K:
    dx = col2im(dy @ K^T). Cases: as in :func:`check_conv2d`.
    """
    return _check_conv_grad(fn, "x")


def check_conv2d_kernel_grad(fn):
    """Check ``fn(x, dy, kh, kw, stride, padding)`` = dL/dkernel of y = conv2d(x, kernel),
    shaped (kh, kw, C_in, C_out), given dy = dL/dy, against
    ``tinyddpm.kernels.conv2d_backward`` and central differences of the reference convolution
    (at a few elements). For y = cols @ K: dK = cols^T @ dy. Cases: as in :func:`check_conv2d`.
    """
    return _check_conv_grad(fn, "kernel")
