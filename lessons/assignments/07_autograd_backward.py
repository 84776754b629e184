"""Assignment 7: the backward pass of an autograd engine, in topological order.

(The engine: lessons 3 and 12; lesson 12 builds a scalar engine step by step.)

Fill in `topological_order` and `backward` below, then check your work with the autograder:

    python -m tinyddpm.grade 7 07_autograd_backward.py

You may run this file directly too (`python 07_autograd_backward.py`) to print a few values.
Edit only these two functions. Nothing but the standard library is needed.

Background. `Value` below is a scalar that remembers how it was made (micrograd's, and
`tinyddpm.Tensor` in small): its inputs (`_prev`) and `_backward`, the local chain rule, which
adds the node's gradient, times the local derivative, to each input's `.grad`. For
y = a * b: a.grad += b * y.grad and b.grad += a * y.grad. (`+=`, not `=`: a node used by several
others, like x in x * x, receives a gradient from each of them, and they add up.)

`backward(root)` computes d root / d node for every node of the graph: set root.grad = 1, then
call each node's `_backward` once, and only after every node that uses it has passed its gradient
down. That order is the reverse of a **topological order**: a list of the nodes in which every
node comes after all of its inputs. A depth-first search gives one:

    visit(node): if node was not visited yet: mark it, visit each of its _prev, then append node

Why not simply walk from the root? In a graph like d = a * b; e = d + d * c, the node d is used
twice: calling d._backward before both of its users have added to d.grad would pass on half a
gradient; calling it twice would count it twice.

Graphs can be deep (a long chain of steps): Python's recursion stops at about 1,000 nested
calls, so an iterative depth-first search (with your own stack) is the safe choice.
"""
import math


class Value:
    """A scalar node: ``data`` (float), ``grad`` (float, d root / d this node, 0 until backward),
    ``_prev`` (the nodes it was made from) and ``_backward`` (adds to the inputs' grads)."""

    def __init__(self, data, _prev=(), op=""):
        self.data, self.grad, self._prev, self.op = float(data), 0.0, tuple(_prev), op
        self._backward = lambda: None

    def __add__(self, other):
        out = Value(self.data + other.data, (self, other), "+")

        def _backward():
            self.grad += out.grad
            other.grad += out.grad
        out._backward = _backward
        return out

    def __mul__(self, other):
        out = Value(self.data * other.data, (self, other), "*")

        def _backward():
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad
        out._backward = _backward
        return out

    def tanh(self):
        t = math.tanh(self.data)
        out = Value(t, (self,), "tanh")

        def _backward():
            self.grad += (1 - t * t) * out.grad
        out._backward = _backward
        return out

    def exp(self):
        e = math.exp(min(self.data, 700.0))
        out = Value(e, (self,), "exp")

        def _backward():
            self.grad += e * out.grad
        out._backward = _backward
        return out

    def __repr__(self):
        return f"Value({self.data:.4g}, grad={self.grad:.4g}, op={self.op!r})"


def topological_order(root):
    """Every node of the graph that ends at ``root`` (root and everything it was made from),
    each exactly once, every node after all of its inputs (``_prev``); root last.

    Returns a list of Value.
    """
    raise NotImplementedError("a depth-first search: append a node after its inputs")


def backward(root):
    """Fill in ``.grad`` of every node of the graph ending at ``root``: d root / d node.

    root.grad = 1, then each node's ``_backward()`` once, in reverse topological order.
    Returns nothing.
    """
    raise NotImplementedError("root.grad = 1, then _backward() in reversed "
                              "topological_order(root)")


# ---------------------------------------------------------------------------- do not edit below
# The grader (and you) build graphs with `run`: a small program over the nodes made so far.

def run(program, inputs):
    """Build a graph and run your backward.

    program: a list of (op, i, j): op is "add", "mul", "tanh" or "exp", applied to node i (and
    node j for add and mul; j is ignored otherwise); nodes are numbered inputs first, then one
    per instruction; the last node is the root. inputs: a list of floats.
    Returns (root's value, the inputs' grads, each node's position in topological_order(root),
    -1 for a node that is not there).
    """
    nodes = [Value(x) for x in inputs]
    for op, i, j in program:
        a, b = nodes[int(i)], nodes[int(j)]
        nodes.append({"add": lambda: a + b, "mul": lambda: a * b, "tanh": a.tanh,
                      "exp": a.exp}[op]())
    root = nodes[-1]
    order = topological_order(root)
    backward(root)
    where = {}
    for k, node in enumerate(order):
        where.setdefault(id(node), k)
    return (root.data, [n.grad for n in nodes[:len(inputs)]],
            [where.get(id(n), -1) for n in nodes] + [len(order)])


if __name__ == "__main__":
    # d = a * b; e = d + d * c: d is used twice
    value, grads, _ = run([("mul", 0, 1), ("mul", 3, 2), ("add", 3, 4)], [2.0, -3.0, 0.5])
    print("e =", value, " de/da, de/db, de/dc =", grads, " (expected e = -9.0; -4.5, 3.0, -6.0)")
