"""Solutions to lesson 12's exercises (12_build_the_engine.ipynb)."""
# %% Exercise 1
def topological_order(root):
    """Every node of the graph ending at root, once, each after all of its inputs (root last)."""
    order, visited, stack = [], set(), [(root, False)]
    while stack:
        v, expanded = stack.pop()
        if expanded:                         # its inputs are all in order: now it
            order.append(v)
        elif v not in visited:
            visited.add(v)
            stack.append((v, True))          # comes back after its inputs
            stack.extend((p, False) for p in v._prev)
    return order


def backward(self):
    """d self / d node for every node of the graph ending at self, in node.grad."""
    order = topological_order(self)
    self.grad = 1.0                          # d self / d self
    for v in reversed(order):
        v._backward()
# %% Exercise 2
def unbroadcast(grad, shape):
    """Sum grad down to shape: the backward of NumPy broadcasting."""
    extra = grad.ndim - len(shape)                       # axes added in front
    stretched = tuple(extra + i for i, n in enumerate(shape)
                      if n == 1 and grad.shape[extra + i] != 1)
    grad = grad.sum(axis=tuple(range(extra)) + stretched, keepdims=True)
    return grad.reshape(shape)                           # drop the leading axes
# %% Exercise 3
def im2col(x, kh, kw, stride, pads):
    """(N, H, W, C) -> (N * Ho * Wo, kh * kw * C): row (n, oh, ow) = its receptive field."""
    top, bottom, left, right = pads
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    n, hp, wp, c = xp.shape
    ho, wo = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    cols = np.empty((n, ho, wo, kh, kw, c), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j, :] = xp[:, i:i + stride * ho:stride, j:j + stride * wo:stride, :]
    return cols.reshape(n * ho * wo, kh * kw * c)
# %% Exercise 4
def relu(self):
    out = Value(max(self.data, 0.0), (self,), "relu")

    def _backward():                     # dz/dx = 1 where x > 0, else 0
        self.grad += (self.data > 0) * out.grad
    out._backward = _backward
    return out

Value.relu = relu
# %% Exercise 5
def array_sum(self, axis=None, keepdims=False):
    out = Array(self.data.sum(axis=axis, keepdims=keepdims), (self,), "sum")

    def _backward():                     # each summed element gets the output's gradient
        g = out.grad
        if axis is not None and not keepdims:
            g = np.expand_dims(g, axis)  # the summed axes back, as size 1
        self.grad += np.broadcast_to(g, self.data.shape)
    out._backward = _backward
    return out

Array.sum = array_sum
# %% Exercise 6
def conv2d_kernel_grad(x, dy, kh, kw, stride=1, padding="valid"):
    c_in, c_out = x.shape[3], dy.shape[3]
    _, pads = td.kernels.conv2d_geometry(x.shape, (kh, kw), stride, padding)
    cols = im2col(x, kh, kw, stride, pads)              # (N * Ho * Wo, kh * kw * C_in)
    return (cols.T @ dy.reshape(-1, c_out)).reshape(kh, kw, c_in, c_out)
