"""Assignment 7: the backward pass of a scalar autograd engine in topological order
(``lessons/assignments/07_autograd_backward.py``), checked against central differences of the
same programs, evaluated here in float64 (an implementation independent of the student's)."""
import math

import numpy as np

from .framework import Assignment, Fail, call, close, register, tuple_of

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
    """A chain of n steps, x <- 0.5 x + 0.5 tanh(x) (two nodes a step, plus the constant)."""
    program, x = [], 0
    for _ in range(n):
        k = 2 + len(program)
        program += [("tanh", x, x), ("add", x, k), ("mul", k + 1, 1)]
        x = k + 2
    return program, [0.8, 0.5]


def evaluate(program, inputs):
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


def compare_grads(r, i, name, hint=""):
    program, inputs = deep() if name == "deep" else PROGRAMS[name]
    value, grads, _ = result(r, i, name)
    want_value, want = reference(program, inputs)
    if grads.shape != want.shape:
        raise Fail(f"run gave {grads.size} input gradients for {len(inputs)} inputs")
    mistakes = [(np.zeros_like(want), "every gradient is 0: set root.grad = 1 before calling the "
                                      "_backward functions")]
    if hint:
        mistakes.append((want * 2, hint))
    close(grads, want, "the inputs' gradients", rtol=1e-5, atol=1e-6, context=f"({name} graph)",
          mistakes=mistakes)


@A7.check("root_grad", 1, "backward starts with root.grad = 1: d tanh(x)/dx",
          lambda: [run_call("tanh")])
def _(r):
    compare_grads(r, 0, "tanh")


@A7.check("chain", 2, "a * b + c: each input's gradient through two steps",
          lambda: [run_call("chain")])
def _(r):
    compare_grads(r, 0, "chain")


@A7.check("topological_order", 2, "every node of the graph once, each after its inputs, the "
                                  "root last",
          lambda: [run_call("diamond"), run_call("unused")])
def _(r):
    for i, name in enumerate(("diamond", "unused")):
        program, inputs = PROGRAMS[name]
        _, _, positions = result(r, i, name)
        length, positions = int(positions[-1]), positions[:-1]
        n = len(inputs) + len(program)
        reachable = _reachable(program, len(inputs))
        missing = [k for k in range(n) if k in reachable and positions[k] < 0]
        if missing:
            raise Fail(f"topological_order leaves out node {missing[0]} of the {name} graph")
        if length != len(reachable):
            raise Fail(f"topological_order returned {length} nodes for the {name} graph, which "
                       f"has {len(reachable)}: each node once (keep a set of visited nodes)")
        stray = [k for k in range(n) if k not in reachable and positions[k] >= 0]
        if stray:
            raise Fail(f"topological_order includes node {stray[0]}, which the root does not "
                       "depend on: start from the root and follow _prev only")
        for k, (op, a, b) in enumerate(program, start=len(inputs)):
            if k in reachable:
                for src in {a, b} if op in ("add", "mul") else {a}:
                    if positions[src] > positions[k]:
                        raise Fail(f"in the {name} graph, node {k} comes before its input node "
                                   f"{src}: a node must come after all of its inputs (append it "
                                   "after visiting its _prev)")
        if positions[n - 1] != length - 1:
            raise Fail(f"the root is not last in topological_order ({name} graph)")


def _reachable(program, n_inputs):
    seen, stack = set(), [n_inputs + len(program) - 1]
    while stack:
        k = stack.pop()
        if k in seen:
            continue
        seen.add(k)
        if k >= n_inputs:
            op, a, b = program[k - n_inputs]
            stack += [a, b] if op in ("add", "mul") else [a]
    return seen


@A7.check("node_used_twice", 2, "a node used by two others gets both gradients, before passing "
                                "its own on (d = a b; e = d + d c; and x * x)",
          lambda: [run_call("diamond"), run_call("square"), run_call("shared")])
def _(r):
    hint = ("a node's _backward ran before all of its users had added to its grad, or twice: "
            "call each _backward once, in reversed(topological_order(root))")
    for i, name in enumerate(("diamond", "square", "shared")):
        compare_grads(r, i, name, hint=hint)


@A7.check("unused_input", 1, "an input the root does not depend on keeps gradient 0",
          lambda: [run_call("unused")])
def _(r):
    compare_grads(r, 0, "unused")


@A7.check("deep_graph", 2, "a chain of 3,000 steps (9,002 nodes): no RecursionError",
          lambda: [run_call("deep")])
def _(r):
    try:
        compare_grads(r, 0, "deep")
    except Fail as exc:
        if "RecursionError" in str(exc):
            raise Fail(f"{exc}\nhint: Python stops at about 1,000 nested calls; walk the graph "
                       "with your own stack (a list) instead of recursion") from None
        raise
