"""Solutions to lesson 3's exercises (03_autograd_engine.ipynb)."""
# %% Exercise 1
class Square(Function):
    """y = x ** 2;  dy/dx = 2 x."""
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 2

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return 2 * x * g

# %% Exercise 2
x_val = 1.5
a_val = x_val * x_val
dL_dx_by_hand = (2 * a_val + x_val) * 2 * x_val + a_val   # dL/da * da/dx + the direct use of x
x = td.Tensor(x_val, requires_grad=True)
a = x * x
L = a * a + a * x
L.backward()
print("x.grad after one backward():", x.grad, "| by hand:", dL_dx_by_hand)
L.backward()
grad_after_two = x.grad.item()

# %% Exercise 3
def huber_grad(e, delta=1.0):
    return np.clip(e, -delta, delta)   # e where |e| <= delta, delta * sign(e) beyond
