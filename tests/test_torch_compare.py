"""Cross-checks against PyTorch (optional: skipped when torch is not installed).

Every layer is built in float64 on a random NHWC input, its weights (random, biases and
BatchNorm's gamma/beta included) are copied into the equivalent torch computation in NCHW, and
the forward output, the input gradient and every parameter gradient for a random upstream
gradient must agree to ~1e-10. Layout conversions used here:

    activations   NHWC (tinyddpm)              <->  NCHW (torch)
    Conv2D        kernel (kh, kw, Cin, Cout)   ->   weight (Cout, Cin, kh, kw)
    Conv2DTranspose kernel (kh, kw, Cout, Cin) ->   weight (Cin, Cout, kh, kw)
    depthwise     kernel (kh, kw, C, 1)        ->   weight (C, 1, kh, kw), groups=C
    pointwise     kernel (1, 1, C, F)          ->   weight (F, C, 1, 1)
    Dense         kernel (in, units)           ->   Linear weight (units, in)

Padding follows Keras' rule, recomputed here independently of tinyddpm:
out = ceil(in / s), pad_total = max((out - 1) s + k - in, 0), before = total // 2 (extra after),
applied with an explicit ``F.pad`` (with -inf for max pooling).
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as TF  # noqa: E402

from tinyddpm import losses, nn, optimizers  # noqa: E402
from tinyddpm.tensor import Tensor, no_grad  # noqa: E402

F64 = np.float64


# --------------------------------------------------------------------------- helpers

@pytest.fixture(autouse=True)
def float64_torch_defaults():
    """float64 as torch's default dtype: torch keeps optimizer scalars (NAdam's mu_product, the
    step) in float32 otherwise, which alone puts it ~1e-8 away from a float64 computation."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def to_nchw(a):
    return torch.tensor(np.ascontiguousarray(np.transpose(a, (0, 3, 1, 2))), dtype=torch.float64)


def to_nhwc(t):
    return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


def leaf(array):
    """A float64 torch leaf tensor that records its gradient."""
    return torch.tensor(np.ascontiguousarray(array), dtype=torch.float64, requires_grad=True)


def assert_close(actual, expected, what, rtol=1e-9):
    actual, expected = np.asarray(actual, dtype=F64), np.asarray(expected, dtype=F64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs torch {expected.shape}"
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale,
                               err_msg=f"{what} differs from torch")


def keras_pads(size, k, stride, padding):
    """(before, after) padding along one axis, Keras/TensorFlow rule (written out independently)."""
    if padding == "valid":
        return 0, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def pad_nchw(xt, kh, kw, stride, padding, value=0.0):
    """Pad an NCHW tensor as Keras would for a kh x kw window with this stride."""
    pt, pb = keras_pads(xt.shape[2], kh, stride, padding)
    pl, pr = keras_pads(xt.shape[3], kw, stride, padding)
    return TF.pad(xt, (pl, pr, pt, pb), value=value)


def build(layer, shape, rng, scale=0.5):
    """Build ``layer`` in float64 for inputs of ``shape`` and give every parameter random values."""
    layer.astype(F64)
    with no_grad():
        layer(np.zeros(shape, F64))
    for _, p in layer.named_parameters():
        p.data = rng.standard_normal(p.shape) * scale
    return layer


def compare_layer(layer, x, torch_fn, torch_params, rng):
    """Forward x (NHWC) through ``layer`` and ``torch_fn`` (NCHW), backpropagate the same random
    upstream gradient through both, and compare the outputs, the input gradients and the
    parameter gradients. ``torch_params`` maps each parameter name of ``layer`` to
    (torch leaf, function turning its gradient into tinyddpm's layout)."""
    layer.zero_grad()
    xt = Tensor(x.copy(), requires_grad=True)
    y = layer(xt)
    g = rng.standard_normal(y.shape)
    y.backward(g)

    xr = to_nchw(x).requires_grad_(True)
    yr = torch_fn(xr)
    yr.backward(to_nchw(g))

    assert_close(y.data, to_nhwc(yr), "output")
    assert_close(xt.grad, to_nhwc(xr.grad), "input gradient")
    names = {name for name, _ in layer.named_parameters()}
    assert names == set(torch_params), f"parameters {sorted(names)}, mapped {sorted(torch_params)}"
    for name, p in layer.named_parameters():
        tp, back = torch_params[name]
        assert p.grad is not None, f"no gradient for {name}"
        assert_close(p.grad, back(tp.grad.numpy()), f"gradient of {name}")


def conv_weight(kernel):
    """(kh, kw, Cin, Cout) -> torch Conv2d weight (Cout, Cin, kh, kw)."""
    return leaf(kernel.transpose(3, 2, 0, 1))


def conv_weight_back(grad):
    return grad.transpose(2, 3, 1, 0)


def identity(a):
    return a


# --------------------------------------------------------------------------- convolutions

CONV_CASES = [
    # filters, kernel, strides, padding, use_bias, input NHWC
    (4, 3, 1, "valid", True, (2, 9, 9, 1)),      # the stem: 3x3 valid on a zero-padded image
    (4, 3, 1, "valid", True, (1, 9, 9, 1)),
    (5, 3, 1, "same", True, (2, 8, 8, 3)),
    (1, 3, 1, "same", True, (2, 6, 6, 12)),      # the head: 3x3 same to one channel
    (5, 3, 2, "same", True, (2, 8, 8, 3)),       # even size: pad (0, 1)
    (5, 3, 2, "same", True, (1, 7, 7, 3)),       # odd size: pad (1, 1)
    (4, 1, 2, "same", True, (2, 8, 8, 6)),       # the 1x1 stride-2 skip conv
    (4, 1, 2, "same", True, (1, 7, 5, 6)),
    (4, 1, 1, "valid", True, (3, 5, 5, 6)),      # pointwise
    (3, 2, 1, "same", True, (2, 6, 6, 2)),       # even kernel: pad (0, 1)
    (3, 4, 2, "same", False, (2, 9, 8, 2)),
    (3, (3, 5), 1, "same", True, (1, 6, 7, 2)),  # rectangular kernel
    (3, 3, 2, "valid", True, (2, 9, 8, 2)),
    (2, 5, 3, "valid", True, (1, 11, 10, 2)),
]


@pytest.mark.parametrize("filters,kernel,strides,padding,use_bias,shape", CONV_CASES,
                         ids=lambda v: str(v).replace(" ", ""))
def test_conv2d(filters, kernel, strides, padding, use_bias, shape):
    rng = np.random.default_rng(1)
    layer = build(nn.Conv2D(filters, kernel, strides=strides, padding=padding,
                            use_bias=use_bias), shape, rng)
    x = rng.standard_normal(shape)
    w = conv_weight(layer.kernel.data)
    b = leaf(layer.bias.data) if use_bias else None
    kh, kw = layer.kernel.shape[:2]
    params = {"kernel": (w, conv_weight_back)}
    if use_bias:
        params["bias"] = (b, identity)

    def torch_fn(xt):
        if padding == "same" and strides == 1 and kh % 2 and kw % 2:
            return TF.conv2d(xt, w, b, stride=strides, padding=(kh // 2, kw // 2))
        return TF.conv2d(pad_nchw(xt, kh, kw, strides, padding), w, b, stride=strides)

    compare_layer(layer, x, torch_fn, params, rng)


CONV_T_CASES = [
    # filters, kernel, padding, input NHWC
    (4, 3, "same", (2, 4, 4, 6)),     # as in the up blocks, narrower
    (3, 3, "same", (1, 5, 6, 2)),
    (3, 3, "valid", (2, 4, 4, 2)),
    (3, 2, "same", (2, 5, 5, 2)),     # even kernels: Keras crops (k-1)//2 before, the rest after
    (3, 4, "same", (1, 5, 5, 2)),
    (3, (3, 5), "same", (2, 4, 6, 3)),
    (2, 1, "same", (2, 3, 3, 4)),
]


@pytest.mark.parametrize("filters,kernel,padding,shape", CONV_T_CASES,
                         ids=lambda v: str(v).replace(" ", ""))
def test_conv2d_transpose(filters, kernel, padding, shape):
    rng = np.random.default_rng(2)
    layer = build(nn.Conv2DTranspose(filters, kernel, padding=padding), shape, rng)
    x = rng.standard_normal(shape)
    # Keras (kh, kw, Cout, Cin) -> torch ConvTranspose2d weight (Cin, Cout, kh, kw)
    w = leaf(layer.kernel.data.transpose(3, 2, 0, 1))
    b = leaf(layer.bias.data)
    kh, kw = layer.kernel.shape[:2]
    params = {"kernel": (w, lambda gw: gw.transpose(2, 3, 1, 0)), "bias": (b, identity)}

    def torch_fn(xt):
        if padding == "valid":
            return TF.conv_transpose2d(xt, w, b)
        if kh % 2 and kw % 2:
            return TF.conv_transpose2d(xt, w, b, padding=(kh // 2, kw // 2))
        # 'same' is the adjoint of a 'same' convolution: crop the full output like its padding
        full = TF.conv_transpose2d(xt, w, b)
        top, left = (kh - 1) // 2, (kw - 1) // 2
        return full[:, :, top:top + xt.shape[2], left:left + xt.shape[3]]

    compare_layer(layer, x, torch_fn, params, rng)


SEPARABLE_CASES = [
    # filters, kernel, padding, use_bias, input NHWC
    (8, 3, "same", True, (2, 8, 8, 4)),
    (5, 3, "same", True, (1, 6, 6, 3)),
    (4, 3, "valid", True, (2, 7, 7, 3)),
    (4, 2, "same", False, (2, 5, 5, 3)),
]


@pytest.mark.parametrize("filters,kernel,padding,use_bias,shape", SEPARABLE_CASES,
                         ids=lambda v: str(v).replace(" ", ""))
def test_separable_conv2d(filters, kernel, padding, use_bias, shape):
    rng = np.random.default_rng(3)
    layer = build(nn.SeparableConv2D(filters, kernel, padding=padding, use_bias=use_bias),
                  shape, rng)
    x = rng.standard_normal(shape)
    c = shape[-1]
    dw = leaf(layer.depthwise_kernel.data[:, :, :, 0].transpose(2, 0, 1)[:, None])  # (C,1,kh,kw)
    pw = conv_weight(layer.pointwise_kernel.data)                                     # (F,C,1,1)
    b = leaf(layer.bias.data) if use_bias else None
    params = {"depthwise_kernel": (dw, lambda g: g[:, 0].transpose(1, 2, 0)[:, :, :, None]),
              "pointwise_kernel": (pw, conv_weight_back)}
    if use_bias:
        params["bias"] = (b, identity)

    def torch_fn(xt):
        y = TF.conv2d(pad_nchw(xt, kernel, kernel, 1, padding), dw, groups=c)
        return TF.conv2d(y, pw, b)

    compare_layer(layer, x, torch_fn, params, rng)


# --------------------------------------------------------------------------- dense, activations

@pytest.mark.parametrize("units,n_in,batch,use_bias,activation", [
    (5, 7, 1, True, None), (16, 64, 4, True, None), (3, 6, 5, False, None),
    (8, 4, 3, True, "relu"), (8, 4, 3, True, "silu"),
])
def test_dense(units, n_in, batch, use_bias, activation):
    rng = np.random.default_rng(4)
    layer = build(nn.Dense(units, activation=activation, use_bias=use_bias), (batch, n_in), rng)
    x = rng.standard_normal((batch, n_in))
    w = leaf(layer.kernel.data.T)
    b = leaf(layer.bias.data) if use_bias else None
    act = {None: lambda t: t, "relu": torch.relu, "silu": TF.silu}[activation]
    g = rng.standard_normal((batch, units))
    xt = Tensor(x.copy(), requires_grad=True)
    y = layer(xt)
    y.backward(g)
    xr = leaf(x)
    yr = act(TF.linear(xr, w, b))
    yr.backward(torch.tensor(g))
    assert_close(y.data, yr.detach().numpy(), "output")
    assert_close(xt.grad, xr.grad.numpy(), "input gradient")
    assert_close(layer.kernel.grad, w.grad.numpy().T, "gradient of kernel")
    if use_bias:
        assert_close(layer.bias.grad, b.grad.numpy(), "gradient of bias")


@pytest.mark.parametrize("name,torch_fn", [("relu", torch.relu), ("sigmoid", torch.sigmoid),
                                           ("tanh", torch.tanh), ("silu", TF.silu)])
def test_activation(name, torch_fn):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 4, 4, 3)) * 4
    x[0, 0, 0, :] = [40.0, -40.0, 700.0]  # saturated and overflow-prone values
    layer = nn.Activation(name).astype(F64)
    compare_layer(layer, x, torch_fn, {}, rng)


# --------------------------------------------------------------------------- pooling, resizing

POOL_CASES = [
    # pool, strides, padding, input NHWC
    (3, 2, "same", (2, 8, 8, 3)),     # the down blocks: even sizes pad (0, 1)
    (3, 2, "same", (1, 7, 7, 2)),     # odd size: pad (1, 1)
    (3, 2, "same", (2, 2, 2, 2)),     # 2 -> 1
    (2, None, "valid", (2, 6, 6, 3)),
    (3, 2, "valid", (2, 7, 8, 2)),
    (2, 1, "same", (1, 5, 5, 2)),
    (3, 1, "same", (2, 4, 5, 3)),
]


@pytest.mark.parametrize("pool,strides,padding,shape", POOL_CASES,
                         ids=lambda v: str(v).replace(" ", ""))
def test_max_pooling2d(pool, strides, padding, shape):
    rng = np.random.default_rng(6)
    layer = nn.MaxPooling2D(pool, strides=strides, padding=padding)
    x = rng.standard_normal(shape)
    s = strides or pool

    def torch_fn(xt):
        return TF.max_pool2d(pad_nchw(xt, pool, pool, s, padding, value=-np.inf), pool, stride=s)

    compare_layer(layer, x, torch_fn, {}, rng)


def test_max_pooling2d_all_negative_window_at_the_padding():
    """Padding acts as -inf: a window of large negative values must still pick one of them."""
    rng = np.random.default_rng(7)
    x = -1e3 - rng.random((1, 4, 4, 2))
    compare_layer(nn.MaxPooling2D(3, 2, "same"), x,
                  lambda xt: TF.max_pool2d(pad_nchw(xt, 3, 3, 2, "same", -np.inf), 3, 2), {}, rng)


@pytest.mark.parametrize("size,shape", [(2, (2, 4, 4, 3)), (2, (1, 3, 5, 2)), (3, (2, 2, 3, 4))])
def test_upsampling2d(size, shape):
    rng = np.random.default_rng(8)
    compare_layer(nn.UpSampling2D(size), rng.standard_normal(shape),
                  lambda xt: TF.interpolate(xt, scale_factor=size, mode="nearest"), {}, rng)


@pytest.mark.parametrize("padding,torch_pad", [
    (3, (3, 3, 3, 3)), ((1, 2), (2, 2, 1, 1)), (((0, 1), (2, 3)), (2, 3, 0, 1))])
def test_zero_padding2d(padding, torch_pad):
    rng = np.random.default_rng(9)
    compare_layer(nn.ZeroPadding2D(padding), rng.standard_normal((2, 4, 5, 3)),
                  lambda xt: TF.pad(xt, torch_pad), {}, rng)


@pytest.mark.parametrize("cropping,tblr", [(2, (2, 2, 2, 2)), ((1, 2), (1, 1, 2, 2)),
                                           (((0, 1), (2, 3)), (0, 1, 2, 3))])
def test_cropping2d(cropping, tblr):
    rng = np.random.default_rng(10)
    t, b, l, r = tblr
    compare_layer(nn.Cropping2D(cropping), rng.standard_normal((2, 8, 9, 3)),
                  lambda xt: xt[:, :, t:xt.shape[2] - b, l:xt.shape[3] - r], {}, rng)


# --------------------------------------------------------------------------- normalisation

@pytest.mark.parametrize("shape", [(1, 4, 4, 3), (4, 5, 5, 6), (3, 2, 3, 16)])
def test_batch_normalization_training_moving_statistics_and_inference(shape):
    rng = np.random.default_rng(11)
    c = shape[-1]
    layer = build(nn.BatchNormalization(momentum=0.99, epsilon=1e-3), shape, rng)
    layer.gamma.data = rng.uniform(0.5, 2.0, c) * rng.choice([-1, 1], c)
    layer.beta.data = rng.standard_normal(c)
    layer.moving_mean = rng.standard_normal(c)
    layer.moving_variance = rng.uniform(0.5, 2.0, c)

    bn = torch.nn.BatchNorm2d(c, eps=1e-3, momentum=0.01).double()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(layer.gamma.data))
        bn.bias.copy_(torch.tensor(layer.beta.data))
        bn.running_mean.copy_(torch.tensor(layer.moving_mean))
        bn.running_var.copy_(torch.tensor(layer.moving_variance))
    params = {"gamma": (bn.weight, identity), "beta": (bn.bias, identity)}
    m = shape[0] * shape[1] * shape[2]  # values per channel in a batch
    expected_var = np.array(layer.moving_variance)

    layer.train(), bn.train()
    for step in range(3):
        x = 3.0 + 2.0 * rng.standard_normal(shape) * rng.uniform(0.5, 2.0, c)
        previous_torch_var = bn.running_var.detach().numpy().copy()
        bn.weight.grad = bn.bias.grad = None
        compare_layer(layer, x, bn, params, rng)
        # torch's moving variance takes the unbiased batch variance, Keras' the biased one
        torch_var = bn.running_var.detach().numpy()
        unbiased = (torch_var - 0.99 * previous_torch_var) / 0.01
        expected_var = 0.99 * expected_var + 0.01 * unbiased * (m - 1) / m
        assert_close(layer.moving_mean, bn.running_mean.numpy(), f"moving_mean after step {step}")
        assert_close(layer.moving_variance, expected_var, f"moving_variance after step {step}")

    # inference uses the moving statistics: give torch the Keras (biased) moving variance
    with torch.no_grad():
        bn.running_var.copy_(torch.tensor(expected_var))
    layer.eval(), bn.eval()
    bn.weight.grad = bn.bias.grad = None
    x = rng.standard_normal(shape)
    compare_layer(layer, x, bn, params, rng)
    assert_close(layer.moving_mean, bn.running_mean.numpy(), "moving_mean after eval call")


@pytest.mark.parametrize("groups,shape", [(1, (2, 4, 4, 6)), (2, (2, 4, 4, 6)), (3, (1, 4, 4, 6)),
                                          (6, (2, 3, 5, 6)), (4, (1, 3, 5, 8))])
def test_group_normalization(groups, shape):
    rng = np.random.default_rng(12)
    c = shape[-1]
    layer = build(nn.GroupNormalization(groups, epsilon=1e-3), shape, rng)
    layer.gamma.data = rng.uniform(0.5, 2.0, c) * rng.choice([-1, 1], c)
    gn = torch.nn.GroupNorm(groups, c, eps=1e-3).double()
    with torch.no_grad():
        gn.weight.copy_(torch.tensor(layer.gamma.data))
        gn.bias.copy_(torch.tensor(layer.beta.data))
    x = 1.5 + rng.standard_normal(shape) * rng.uniform(0.5, 2.0, c)
    compare_layer(layer, x, gn, {"gamma": (gn.weight, identity), "beta": (gn.bias, identity)}, rng)


# --------------------------------------------------------------------------- losses

@pytest.mark.parametrize("loss,torch_loss", [
    (losses.Huber(1.0), torch.nn.HuberLoss(delta=1.0)),
    (losses.Huber(0.3), torch.nn.HuberLoss(delta=0.3)),
    (losses.MeanAbsoluteError(), torch.nn.L1Loss()),
    (losses.MeanSquaredError(), torch.nn.MSELoss()),
], ids=["huber1", "huber0.3", "mae", "mse"])
def test_losses(loss, torch_loss):
    rng = np.random.default_rng(13)
    y_true = rng.standard_normal((3, 4, 4, 2))
    y_pred = y_true + 1.5 * rng.standard_normal(y_true.shape)  # both Huber branches occur
    t, p = Tensor(y_true.copy(), requires_grad=True), Tensor(y_pred.copy(), requires_grad=True)
    value = loss(t, p)
    value.backward()
    tt, tp = leaf(y_true), leaf(y_pred)
    ref = torch_loss(tp, tt)
    ref.backward()
    assert_close(value.data, ref.detach().numpy(), "loss")
    assert_close(p.grad, tp.grad.numpy(), "gradient wrt y_pred")
    assert_close(t.grad, tt.grad.numpy(), "gradient wrt y_true")


# --------------------------------------------------------------------------- optimizers

SHAPES = [(4, 3), (5,), (2, 2, 3)]


def problem(seed, scale):
    """A random, slightly non-quadratic objective: sum a (p - c)^2 + 0.1 p^4 per array, scaled."""
    rng = np.random.default_rng(seed)
    a = [rng.uniform(0.2, 3.0, s) for s in SHAPES]
    c = [rng.standard_normal(s) for s in SHAPES]
    start = [rng.standard_normal(s) for s in SHAPES]

    def grad(i, p):
        return scale * (2 * a[i] * (p - c[i]) + 0.4 * p ** 3)
    return start, grad


def compare_optimizer(tiny_opt, make_torch_opt, seed=14, scale=1.0, steps=20):
    start, grad = problem(seed, scale)
    tiny = [nn.Parameter(s.copy()) for s in start]
    ref = [torch.tensor(s.copy(), requires_grad=True) for s in start]
    torch_opt = make_torch_opt(ref)
    for step in range(1, steps + 1):
        for i, (p, r) in enumerate(zip(tiny, ref)):
            p.grad = grad(i, p.data)
            r.grad = torch.tensor(grad(i, r.detach().numpy()))
        tiny_opt.step(tiny)
        torch_opt.step()
        for i, (p, r) in enumerate(zip(tiny, ref)):
            assert_close(p.data, r.detach().numpy(), f"parameter {i} after step {step}", rtol=1e-10)
    moved = max(float(np.abs(p.data - s).max()) for p, s in zip(tiny, start))
    assert moved > 0.1, "the parameters barely moved: the comparison would be too weak"


@pytest.mark.parametrize("scale", [1.0, 1e-6], ids=["grad~1", "grad~1e-6(eps matters)"])
def test_nadam_current_schedule_matches_torch_momentum_decay_1(scale):
    compare_optimizer(optimizers.Nadam(0.05, beta_1=0.9, beta_2=0.999, epsilon=1e-7),
                      lambda ps: torch.optim.NAdam(ps, lr=0.05, betas=(0.9, 0.999), eps=1e-7,
                                                   momentum_decay=1.0), scale=scale)


@pytest.mark.parametrize("scale", [1.0, 1e-6], ids=["grad~1", "grad~1e-6(eps matters)"])
def test_nadam_legacy_schedule_matches_torch_default(scale):
    compare_optimizer(optimizers.Nadam(0.05, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                                       legacy_schedule=True),
                      lambda ps: torch.optim.NAdam(ps, lr=0.05, betas=(0.9, 0.999), eps=1e-7),
                      scale=scale)


def test_nadam_other_betas():
    compare_optimizer(optimizers.Nadam(0.02, beta_1=0.8, beta_2=0.99, epsilon=1e-7),
                      lambda ps: torch.optim.NAdam(ps, lr=0.02, betas=(0.8, 0.99), eps=1e-7,
                                                   momentum_decay=1.0))


@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.5, 0.9)])
def test_adam(betas):
    # Keras adds epsilon to sqrt(v), torch to sqrt(v / (1 - b2^t)): equal only when epsilon is
    # negligible, so it is made tiny on both sides.
    compare_optimizer(optimizers.Adam(0.05, beta_1=betas[0], beta_2=betas[1], epsilon=1e-15),
                      lambda ps: torch.optim.Adam(ps, lr=0.05, betas=betas, eps=1e-15))


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True),
                                               (0.5, True)])
def test_sgd(momentum, nesterov):
    compare_optimizer(optimizers.SGD(0.02, momentum=momentum, nesterov=nesterov),
                      lambda ps: torch.optim.SGD(ps, lr=0.02, momentum=momentum, nesterov=nesterov))
