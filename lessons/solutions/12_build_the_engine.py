"""Solutions to lesson 12's exercises (12_build_the_engine.ipynb)."""
# %% Exercise 1
def relu(self):
    out = Value(max(self.data, 0.0), (self,), "relu")

    def _backward():                     # dz/dx = 1 where x > 0, else 0
        self.grad += (self.data > 0) * out.grad
    out._backward = _backward
    return out

Value.relu = relu
# %% Exercise 2
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
# %% Exercise 3
def conv2d_kernel_grad(x, dy, kh, kw, stride=1, padding="valid"):
    c_in, c_out = x.shape[3], dy.shape[3]
    _, pads = td.kernels.conv2d_geometry(x.shape, (kh, kw), stride, padding)
    cols = im2col(x, kh, kw, stride, pads)              # (N * Ho * Wo, kh * kw * C_in)
    return (cols.T @ dy.reshape(-1, c_out)).reshape(kh, kw, c_in, c_out)
