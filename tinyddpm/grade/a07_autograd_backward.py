"""Assignment 7: the backward pass of a scalar autograd engine in topological order
(``lessons/assignments/07_autograd_backward.py``), checked against central differences of the
same programs, evaluated here in float64 (an implementation independent of the student's)."""
import math

import numpy as np

from .framework import Assignment, Counted, Fail, call, close, register, tuple_of

A7 = register(Assignment(7, "autograd_backward", "The backward pass, in topological order",
                         "Building the Model (the engine)", ["topological_order", "backward"],
                         45))

FUNCTIONS = {"add": lambda a, b: a + b, "mul": lambda a, b: a * b,
             "tanh": lambda a, b: math.tanh(a), "exp": lambda a, b: math.exp(min(a, 700.0))}

PROGRAMS = {   # name: (program, inputs)
    "tanh": ([("tanh", 0, 0)], [0.7]),
    "chain": ([("mul", 0, 1), ("add", 3, 2)], [2.0, -3.0, 0.5]),
    "square": ([("mul", 0, 0)], [1.5]),
    "diamond": ([("mul", 0, 1), ("mul", 3, 2), ("add", 3, 4)], [2.0, -3.0, 0.5]),
    "shared": ([("tanh", 0, 0), ("mul", 2, 1), ("exp", 2, 2), ("add", 3, 4), ("mul", 5, 2),
                ("add", 6, 3)], [0.3, -1.2]),
    "unused": ([("mul", 0, 0)], [0.5, 4.0]),
}


def deep(n=3000):
    """A chain of n steps, x <- 0.5 x + 0.5 tanh(x): :func:`tinyddpm.checks.chain_program`."""
    from ..checks import chain_program

    return chain_program(n)


def evaluate(program, inputs):
    """Every node's value (inputs first), in float64."""
    nodes = [float(v) for v in inputs]
    for op, i, j in program:
        nodes.append(FUNCTIONS[op](nodes[i], nodes[j]))
    return nodes


def reference(program, inputs, h=1e-6):
    """The root's value and its derivatives by the inputs, by central differences."""
    value = evaluate(program, inputs)[-1]
    grads = []
    for k in range(len(inputs)):
        up, down = list(inputs), list(inputs)
        up[k] += h
        down[k] -= h
        grads.append((evaluate(program, up)[-1] - evaluate(program, down)[-1]) / (2 * h))
    return value, np.array(grads)


def run_call(name):
    program, inputs = deep() if name == "deep" else PROGRAMS[name]
    return call("run", [list(step) for step in program], list(inputs))


def result(r, i, name):
    out = tuple_of(r[i], 3, "run (the helper at the end of your file)",
                   ("value", "grads", "positions"))
    value, grads, positions = out
    try:
        grads = np.asarray(grads, dtype=np.float64)
        positions = np.asarray(positions, dtype=np.int64)
        value = float(value)
    except (TypeError, ValueError):
        raise Fail("run returned something that is not numbers: did you edit the helper at the "
                   "end of the file? Edit only topological_order and backward") from None
    return value, grads, positions


# --------------------------------------------------------------------------- known mistakes
# The backward pass replayed here over other orders of the nodes, to recognise a mistake and
# charge it once: a missing root.grad = 1 (root_grad's), the nodes in forward order, a
# breadth-first walk from the root, a node visited more than once (node_used_twice's), the
# student's own order when it is not topological (topological_order's).

def _inputs_of(program, n_inputs, k):
    op, a, b = program[k - n_inputs]
    return [a, b] if op in ("add", "mul") else [a]


def replay(program, inputs, order, root_grad=1.0):
    """The inputs' gradients when each node's local chain rule runs in ``order`` (node
    numbers; repeats allowed), starting from the root's gradient ``root_grad``."""
    values = evaluate(program, inputs)
    n = len(inputs)
    grads = [0.0] * len(values)
    grads[-1] = root_grad
    for k in order:
        if k < n:
            continue
        op, a, b = program[k - n]
        g = grads[k]
        if op == "add":
            grads[a] += g
            grads[b] += g
        elif op == "mul":
            grads[a] += values[b] * g
            grads[b] += values[a] * g
        elif op == "tanh":
            grads[a] += (1 - values[k] ** 2) * g
        else:
            grads[a] += values[k] * g
    return np.array(grads[:n])


def reachable(program, n_inputs):
    seen, stack = set(), [n_inputs + len(program) - 1]
    while stack:
        k = stack.pop()
        if k not in seen:
            seen.add(k)
            if k >= n_inputs:
                stack += _inputs_of(program, n_inputs, k)
    return seen


def alternatives(program, inputs, positions=None):
    """{mistake: the inputs' gradients it gives} for the known mistakes."""
    n = len(inputs)
    root = n + len(program) - 1
    nodes = sorted(reachable(program, n))
    out = {"no_root_grad": np.zeros(n), "forward_order": replay(program, inputs, nodes)}
    queue, seen, bfs = [root], {root}, []
    while queue:
        k = queue.pop(0)
        bfs.append(k)
        for p in (_inputs_of(program, n, k) if k >= n else []):
            if p not in seen:
                seen.add(p)
                queue.append(p)
    out["breadth_first"] = replay(program, inputs, bfs)
    if len(program) < 50:            # a graph walked with no visited set: each path once
        post = []

        def visit(k):
            for p in (_inputs_of(program, n, k) if k >= n else []):
                visit(p)
            post.append(k)
        visit(root)
        out["no_visited_set"] = replay(program, inputs, post[::-1])
    if positions is not None and len(positions) == n + len(program) + 1 and \
            all(positions[k] >= 0 for k in reachable(program, n)):
        # the student's own order, when it holds every node (a wrong order, charged at
        # topological_order; an order that leaves nodes out loses their gradients everywhere)
        own = sorted((int(pos), k) for k, pos in enumerate(positions[:-1]) if pos >= 0)
        out["own_order"] = replay(program, inputs, [k for _, k in own][::-1])
    return out


HINTS = {"forward_order": "the _backward functions ran in topological order, inputs first: "
                          "run them in reverse, for node in reversed(topological_order(root))",
         "breadth_first": "a node's _backward ran before all of its users had added to its "
                          "grad (a walk from the root is not enough): call them in "
                          "reversed(topological_order(root))",
         "no_visited_set": "a node's _backward ran more than once (reached along two paths): "
                           "keep a set of visited nodes, so each appears once in the order"}


def compare_grads(r, i, name, charged=(), hints=()):
    """The inputs' gradients against central differences; the mistakes in ``charged`` (another
    check's) pass, those in ``hints`` fail with their hint."""
    program, inputs = deep() if name == "deep" else PROGRAMS[name]
    _, grads, positions = result(r, i, name)
    _, want = reference(program, inputs)
    if grads.shape != want.shape:
        raise Fail(f"run gave {grads.size} input gradients for {len(inputs)} inputs")
    known = alternatives(program, inputs, positions)
    mistakes = [(known[k], HINTS[k]) for k in hints if k in known and k in HINTS]
    mistakes += [(np.zeros_like(want), "every gradient is 0: set root.grad = 1, then call "
                                       "each node's _backward, for node in "
                                       "reversed(topological_order(root))")]
    close(grads, want, "the gradient of each input", rtol=1e-5, atol=1e-6,
          context=f"({name} graph)", mistakes=mistakes,
          accept=[(known[k], CHARGED_AT[k]) for k in charged if k in known])


ORDER_MISTAKES = ("forward_order", "breadth_first", "no_visited_set")
# the graphs whose order topological_order checks: every small graph another check runs, so that
# an order the gradient checks accept as "the student's own order" was charged here
ORDER_GRAPHS = ("diamond", "unused", "shared", "square", "chain", "tanh")
# A backward pass that leaves every gradient 0 (no root.grad = 1, or no _backward called) is
# wrong everywhere, so no check accepts it: only an order's mistakes are charged once.
EVERY = (*ORDER_MISTAKES, "own_order")
CHARGED_AT = {"forward_order": "node_used_twice", "breadth_first": "node_used_twice",
              "no_visited_set": "node_used_twice", "own_order": "topological_order"}


@A7.check("root_grad", 1, "backward starts with root.grad = 1: d tanh(x)/dx",
          lambda: [run_call("tanh")])
def _(r):
    compare_grads(r, 0, "tanh", charged=(*ORDER_MISTAKES, "own_order"),
                  hints=("no_root_grad",))


@A7.check("chain", 2, "a * b + c: each input's gradient through two steps",
          lambda: [run_call("chain")])
def _(r):
    compare_grads(r, 0, "chain", charged=EVERY)


@A7.check("topological_order", 2, "every node of the graph once, each after its inputs, the "
                                  "root last",
          lambda: [run_call(name) for name in ORDER_GRAPHS])
def _(r):
    for i, name in enumerate(ORDER_GRAPHS):
        program, inputs = PROGRAMS[name]
        _, _, positions = result(r, i, name)
        length, positions = int(positions[-1]), positions[:-1]
        n = len(inputs) + len(program)
        nodes = reachable(program, len(inputs))
        missing = [k for k in range(n) if k in nodes and positions[k] < 0]
        if missing:
            raise Fail(f"topological_order leaves out node {missing[0]} of the {name} graph")
        if length != len(nodes):
            raise Fail(f"topological_order returned {length} nodes for the {name} graph, which "
                       f"has {len(nodes)}: each node once (keep a set of visited nodes)")
        stray = [k for k in range(n) if k not in nodes and positions[k] >= 0]
        if stray:
            raise Fail(f"topological_order includes node {stray[0]}, which the root does not "
                       "depend on: start from the root and follow _prev only")
        for k in sorted(nodes):
            for src in (_inputs_of(program, len(inputs), k) if k >= len(inputs) else []):
                if positions[src] > positions[k]:
                    raise Fail(f"in the {name} graph, node {k} comes before its input node "
                               f"{src}: a node must come after all of its inputs (append it "
                               "after visiting its _prev)")
        if positions[n - 1] != length - 1:
            raise Fail(f"the root is not last in topological_order ({name} graph)")


def repeats(r, i):
    """Whether topological_order gave the diamond graph's nodes more than once (no visited set:
    the topological_order check's)."""
    program, inputs = PROGRAMS["diamond"]
    _, _, positions = result(r, i, "diamond")
    return int(positions[-1]) > len(reachable(program, len(inputs)))


@A7.check("node_used_twice", 2, "a node used by two others gets both gradients, before passing "
                                "its own on (d = a b; e = d + d c; and x * x)",
          lambda: [run_call("diamond"), run_call("square"), run_call("shared")])
def _(r):
    if repeats(r, 0):   # no visited set: each node's _backward runs once per path
        raise Counted("topological_order")
    charged = ["own_order"]
    for i, name in enumerate(("diamond", "square", "shared")):
        compare_grads(r, i, name, charged=charged,
                      hints=[k for k in ORDER_MISTAKES if k not in charged])


@A7.check("unused_input", 1, "an input the root does not depend on keeps gradient 0",
          lambda: [run_call("unused")])
def _(r):
    compare_grads(r, 0, "unused", charged=EVERY)


@A7.check("deep_graph", 2, "a chain of 3,000 steps (9,002 nodes): no RecursionError",
          lambda: [run_call("diamond"), run_call("deep")])
def _(r):
    try:
        compare_grads(r, 1, "deep", charged=EVERY)
    except Fail as exc:
        if repeats(r, 0):  # no visited set: 2^3000 paths; the topological_order check's mistake
            raise Counted("topological_order") from None
        if "RecursionError" in str(exc):
            raise Fail(f"{exc}\nhint: Python stops at about 1,000 nested calls; walk the graph "
                       "with your own stack (a list) instead of recursion") from None
        if "time limit" in str(exc):
            raise Fail(f"{exc}\nhint: without a set of visited nodes, a node reached along "
                       "two paths is visited twice, and this graph has 2^3000 paths") from None
        raise
