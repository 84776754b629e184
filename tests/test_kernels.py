"""Every numba kernel against its plain NumPy reference (float32), and every image op's
gradients against finite differences (float64)."""
import numpy as np
import pytest

from tinyddpm import functional as F
from tinyddpm import kernels as K
from tinyddpm.kernels import reference as R
from tinyddpm.testing import gradcheck

rng = np.random.default_rng(42)
TOL = dict(rtol=1e-4, atol=1e-4)


def randn(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("size,k,stride,padding,expected", [
    (28, 3, 1, "same", (28, (1, 1))), (32, 3, 2, "same", (16, (0, 1))),
    (33, 3, 2, "same", (17, (1, 1))), (34, 3, 1, "valid", (32, (0, 0))),
    (32, 1, 2, "same", (16, (0, 0))), (8, 3, 2, "valid", (3, (0, 0))),
    (5, 4, 1, "same", (5, (1, 2))),
])
def test_keras_padding_rule(size, k, stride, padding, expected):
    assert K.conv_output_and_padding(size, k, stride, padding) == expected


def test_padding_errors():
    with pytest.raises(ValueError, match="smaller than the kernel"):
        K.conv_output_and_padding(2, 3, 1, "valid")
    with pytest.raises(ValueError, match="padding"):
        K.conv_output_and_padding(8, 3, 1, "full")


CONV_CASES = [  # (N, H, W, Cin, Cout, k, stride, padding)
    (2, 34, 34, 1, 16, 3, 1, "valid"),
    (3, 8, 8, 5, 7, 3, 1, "same"),
    (1, 9, 7, 4, 3, 3, 2, "same"),
    (2, 8, 8, 6, 4, 3, 2, "valid"),
    (2, 8, 8, 6, 8, 1, 1, "same"),
    (2, 8, 8, 6, 8, 1, 2, "same"),
    (2, 7, 7, 3, 2, 1, 2, "valid"),
    (2, 8, 8, 6, 3, 3, 1, "same"),   # C_out < C_in: the output-side (multiply, then shift) form
    (1, 9, 7, 5, 2, 3, 1, "valid"),
    (2, 6, 6, 4, 1, 3, 1, "same"),
    (2, 9, 8, 2, 3, 5, 2, "same"),   # few channels: im2col along the rows, 5x5, stride 2
    (2, 10, 9, 3, 2, 3, 1, "same"),  # few output channels: the shift-add along the rows
]


@pytest.mark.parametrize("n,h,w,cin,cout,k,stride,padding", CONV_CASES)
def test_conv2d_kernel_matches_reference(n, h, w, cin, cout, k, stride, padding):
    x, kern, bias = randn(n, h, w, cin), randn(k, k, cin, cout), randn(cout)
    out_hw, pads = K.conv2d_geometry(x.shape, kern.shape, stride, padding)
    y, saved = K.conv2d_forward(x, kern, bias, stride, pads, out_hw)
    np.testing.assert_allclose(y, R.conv2d(x, kern, bias, stride, pads, out_hw), **TOL)
    # backward: <conv(x), dy> is linear in x and in the kernel, so the adjoint must satisfy
    # <dy, conv(x)> = <dx, x> + <dk, kernel> + <db, bias> (up to float32 rounding)
    dy = randn(*y.shape)
    dx, dk, db = K.conv2d_backward(dy, x.shape, kern, saved, stride, pads)
    y0 = R.conv2d(x.astype(np.float64), kern.astype(np.float64), None, stride, pads, out_hw)
    lhs = np.sum(dy * y0)
    np.testing.assert_allclose(np.sum(dx * x), lhs, rtol=1e-4)
    np.testing.assert_allclose(np.sum(dk * kern), lhs, rtol=1e-4)
    np.testing.assert_allclose(db, dy.sum(axis=(0, 1, 2)), **TOL)


@pytest.mark.parametrize("n,h,w,cin,cout,k,stride,padding", CONV_CASES[:4])
def test_im2col_col2im_are_adjoint(n, h, w, cin, cout, k, stride, padding):
    x = randn(n, h, w, cin, dtype=np.float64)
    out_hw, pads = K.conv2d_geometry(x.shape, (k, k), stride, padding)
    cols = K.im2col(x, k, k, stride, pads, out_hw)
    c = rng.standard_normal(cols.shape)
    back = K.col2im(c, x.shape, k, k, stride, pads, out_hw)
    np.testing.assert_allclose(np.sum(cols * c), np.sum(x * back), rtol=1e-10)


def test_tap_columns_are_the_columns_that_read_inside_the_image():
    from tinyddpm.kernels.conv import tap_columns
    for w in (1, 2, 5, 8):
        for stride in (1, 2, 3):
            for pl in range(4):
                for j in range(5):
                    for wo in range(7):
                        inside = [ow for ow in range(wo) if 0 <= ow * stride - pl + j < w]
                        lo, hi = tap_columns(j, pl, w, wo, stride)
                        assert 0 <= lo <= hi <= wo
                        assert list(range(lo, hi)) == inside, (j, pl, w, wo, stride)


@pytest.mark.parametrize("n,h,cin,cout", [(2, 4, 6, 3), (1, 8, 4, 5), (3, 5, 2, 2)])
def test_conv2d_transpose_matches_scatter_reference(n, h, cin, cout):
    x, kern, bias = randn(n, h, h, cin), randn(3, 3, cout, cin), randn(cout)
    y = F.conv2d_transpose(x, kern, bias, padding="same").data
    ref = R.conv2d_transpose(x, kern, (1, 1, 1, 1), (h, h)) + bias
    np.testing.assert_allclose(y, ref, **TOL)
    y = F.conv2d_transpose(x, kern, None, padding="valid").data
    np.testing.assert_allclose(y, R.conv2d_transpose(x, kern, (0, 0, 0, 0), (h + 2, h + 2)), **TOL)


@pytest.mark.parametrize("n,h,w,c,padding", [(2, 8, 8, 5, "same"), (1, 6, 9, 3, "valid"),
                                             (3, 4, 4, 16, "same")])
def test_depthwise_kernels_match_reference(n, h, w, c, padding):
    x, k = randn(n, h, w, c), randn(3, 3, c)
    out_hw, pads = K.conv2d_geometry(x.shape, k.shape, 1, padding)
    y = K.depthwise_forward(x, k, pads[0], pads[2], *out_hw)
    np.testing.assert_allclose(y, R.depthwise(x, k, pads, out_hw), **TOL)
    dy = randn(*y.shape)
    dx, dk = K.depthwise_backward(x, dy, k, pads[0], pads[2])
    lhs = np.sum(dy.astype(np.float64) * R.depthwise(x.astype(np.float64), k.astype(np.float64),
                                                       pads, out_hw))
    np.testing.assert_allclose(np.sum(dx * x, dtype=np.float64), lhs, rtol=1e-4)
    np.testing.assert_allclose(np.sum(dk * k, dtype=np.float64), lhs, rtol=1e-4)


@pytest.mark.parametrize("n,h,w,c,k,stride,padding", [
    (2, 32, 32, 3, 3, 2, "same"), (1, 7, 7, 2, 3, 2, "same"), (2, 8, 8, 4, 2, 2, "valid"),
    (1, 9, 9, 2, 3, 1, "same")])
def test_maxpool_kernels_match_reference(n, h, w, c, k, stride, padding):
    x = randn(n, h, w, c)
    out_hw, pads = K.conv2d_geometry(x.shape, (k, k), stride, padding)
    y, arg = K.maxpool_forward(x, k, stride, pads[0], pads[2], *out_hw)
    np.testing.assert_array_equal(y, R.maxpool(x, k, stride, pads, out_hw))
    y_only, no_arg = K.maxpool_forward(x, k, stride, pads[0], pads[2], *out_hw, False)
    np.testing.assert_array_equal(y_only, y)  # the inference form, without the argmax
    assert no_arg.size == 0
    # backward: each output's gradient lands on the input pixel holding its maximum
    dy = randn(*y.shape)
    dx = K.maxpool_backward(dy, arg, h, w)
    flat = x.reshape(n, h * w, c)
    np.testing.assert_array_equal(np.take_along_axis(flat, arg.reshape(n, -1, c), axis=1),
                                  y.reshape(n, -1, c))
    np.testing.assert_allclose(dx.sum(), dy.sum(), rtol=1e-4)


def test_upsample_kernels_match_reference():
    x = randn(2, 3, 4, 5)
    y = K.upsample_forward(x, 2)
    np.testing.assert_array_equal(y, R.upsample(x, 2))
    dy = randn(*y.shape)
    np.testing.assert_allclose(K.upsample_backward(dy, 2),
                               dy.reshape(2, 3, 2, 4, 2, 5).sum(axis=(2, 4)), **TOL)


@pytest.mark.parametrize("shape", [(32, 8, 8, 16), (1, 4, 4, 3), (5, 1, 1, 7)])
def test_batchnorm_kernels_match_reference(shape):
    x = randn(*shape) * 3 + 2
    gamma, beta = randn(shape[-1]), randn(shape[-1])
    y, mean, var = K.batchnorm_forward_train(x, gamma, beta, 1e-3)
    ry, rmean, rvar = R.batchnorm_train(x, gamma, beta, 1e-3)
    np.testing.assert_allclose(y, ry, **TOL)
    np.testing.assert_allclose(mean, rmean, **TOL)
    np.testing.assert_allclose(var, rvar, rtol=1e-4, atol=1e-3)
    mm, mv = randn(shape[-1]), np.abs(randn(shape[-1])) + 0.1
    np.testing.assert_allclose(K.batchnorm_forward_infer(x, gamma, beta, mm, mv, 1e-3),
                               R.batchnorm_infer(x, gamma, beta, mm, mv, 1e-3), **TOL)


@pytest.mark.parametrize("shape,groups", [((4, 8, 8, 16), 4), ((1, 3, 5, 6), 3), ((2, 4, 4, 8), 8)])
def test_groupnorm_kernel_matches_reference(shape, groups):
    x = randn(*shape) * 2 - 1
    gamma, beta = randn(shape[-1]), randn(shape[-1])
    y, mean, inv_std = K.groupnorm_forward(x, gamma, beta, groups, 1e-3)
    np.testing.assert_allclose(y, R.groupnorm(x, gamma, beta, groups, 1e-3), **TOL)
    # the backward against the formula in float64, per image and group (no kernel shared)
    dy = randn(*shape)
    dx, dgamma, dbeta = K.groupnorm_backward(dy, x, gamma, mean, inv_std)
    n, h, w, c = shape
    xg = x.astype(np.float64).reshape(n, h * w, groups, c // groups)
    xhat = (xg - xg.mean(axis=(1, 3), keepdims=True)) / np.sqrt(xg.var(axis=(1, 3), keepdims=True)
                                                                 + 1e-3)
    gg = (dy.astype(np.float64) * gamma).reshape(xg.shape)
    want = (gg - gg.mean(axis=(1, 3), keepdims=True)
            - xhat * (gg * xhat).mean(axis=(1, 3), keepdims=True)) / np.sqrt(
                xg.var(axis=(1, 3), keepdims=True) + 1e-3)
    np.testing.assert_allclose(dx, want.reshape(shape), **TOL)
    np.testing.assert_allclose(dgamma, (dy * xhat.reshape(shape)).sum(axis=(0, 1, 2)), **TOL)
    np.testing.assert_allclose(dbeta, dy.sum(axis=(0, 1, 2)), **TOL)


@pytest.mark.parametrize("lead,L,M,d,e", [((32, 4), 196, 196, 8, 8), ((2,), 5, 7, 3, 4),
                                          ((1, 2, 3), 1, 1, 1, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_attention_kernels_match_reference(lead, L, M, d, e, dtype):
    q, k = randn(*lead, L, d, dtype=dtype), randn(*lead, M, d, dtype=dtype) * 3
    v, g = randn(*lead, M, e, dtype=dtype), randn(*lead, L, e, dtype=dtype)
    tol = TOL if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    z, a = K.attention_forward(q, k, v)
    z_ref, a_ref = R.attention(q, k, v)
    assert z.dtype == a.dtype == dtype and z.shape == (*lead, L, e) and a.shape == (*lead, L, M)
    np.testing.assert_allclose(z, z_ref, **tol)
    np.testing.assert_allclose(a, a_ref, **tol)
    for got, want in zip(K.attention_backward(g, q, k, v, a),
                         R.attention_backward(g, q, k, v, a_ref)):
        assert got.dtype == dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, **tol)
    # not C-contiguous (a transposed view, as the attention block passes) gives the same
    qt = np.ascontiguousarray(np.swapaxes(q, -1, -2)).swapaxes(-1, -2)
    np.testing.assert_allclose(K.attention_forward(qt, k, v)[0], z_ref, **tol)


# ---- gradients of the graph ops that call the kernels, float64, finite differences ---------------
d = np.float64


@pytest.mark.parametrize("n,h,w,cin,cout,k,stride,padding", CONV_CASES[1:])
def test_conv2d_gradients(n, h, w, cin, cout, k, stride, padding):
    x = randn(min(n, 2), min(h, 6), min(w, 6), cin, dtype=d)
    assert gradcheck(lambda x, kern, b: F.conv2d(x, kern, b, stride, padding),
                     x, randn(k, k, cin, cout, dtype=d), randn(cout, dtype=d))


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_conv2d_transpose_gradients(padding):
    assert gradcheck(lambda x, kern, b: F.conv2d_transpose(x, kern, b, padding),
                     randn(2, 4, 4, 3, dtype=d), randn(3, 3, 2, 3, dtype=d), randn(2, dtype=d))


def test_depthwise_gradients():
    assert gradcheck(lambda x, kern: F.depthwise_conv2d(x, kern, "same"),
                     randn(2, 5, 4, 3, dtype=d), randn(3, 3, 3, 1, dtype=d))


def test_pool_and_upsample_gradients():
    assert gradcheck(lambda x: F.max_pool2d(x, 3, 2, "same"), randn(2, 6, 6, 2, dtype=d))
    assert gradcheck(lambda x: F.max_pool2d(x, 3, 2, "same"), randn(1, 5, 5, 2, dtype=d))
    assert gradcheck(lambda x: F.upsample2d(x, 2), randn(1, 3, 2, 2, dtype=d))


def test_norm_gradients():
    g, b = rng.random(4) + 0.5, randn(4, dtype=d)
    assert gradcheck(lambda x, g, b: F.batch_norm_train(x, g, b), randn(3, 3, 3, 4, dtype=d), g, b)
    assert gradcheck(lambda x, g, b: F.batch_norm_train(x, g, b), randn(1, 2, 2, 4, dtype=d), g, b)
    mm, mv = randn(4, dtype=d), rng.random(4) + 0.5
    assert gradcheck(lambda x, g, b: F.batch_norm_infer(x, g, b, mm, mv),
                     randn(2, 3, 3, 4, dtype=d), g, b)
    assert gradcheck(lambda x, g, b: F.group_norm(x, g, b, groups=2),
                     randn(2, 3, 3, 4, dtype=d), g, b)


# --- the kernels that run on every thread: the products, the element-wise steps, batch norm's
# backward -- at sizes that take the parallel path (several row blocks, a tail) and below it

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,k,n", [(3000, 37, 19), (5, 3, 4), (0, 3, 4), (7, 0, 2), (1, 300, 600)])
def test_blas_matmul_matches_numpy(dtype, m, k, n):
    from tinyddpm.kernels import blas
    a, b, bias = randn(m, k, dtype=dtype), randn(k, n, dtype=dtype), randn(n, dtype=dtype)
    tol = dict(rtol=1e-4, atol=1e-3) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(blas.matmul(a, b), R.matmul(a, b), **tol)
    np.testing.assert_allclose(blas.matmul(a, b, bias=bias), R.matmul(a, b, bias=bias), **tol)
    at, bt = np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)
    np.testing.assert_allclose(blas.matmul(at, b, trans_a=True), R.matmul(at, b, trans_a=True), **tol)
    np.testing.assert_allclose(blas.matmul(a, bt, trans_b=True, bias=bias),
                               R.matmul(a, bt, trans_b=True, bias=bias), **tol)
    assert blas.matmul(a, b).dtype == dtype


def test_blas_matmul_rejects_mismatched_shapes():
    from tinyddpm.kernels import blas
    with pytest.raises(ValueError, match="do not match"):
        blas.matmul(randn(4, 3), randn(4, 2))
    with pytest.raises(ValueError, match="bias"):
        blas.matmul(randn(4, 3), randn(3, 2), bias=randn(3))


@pytest.mark.parametrize("shape", [(8, 32, 32, 16), (2, 3, 3, 5)])  # above and below MIN_SIZE
def test_elementwise_kernels_match_reference(shape):
    from tinyddpm.kernels import elementwise as EW
    x, y, g = randn(*shape), randn(*shape), randn(*shape)
    v = randn(shape[0], 1, 1, shape[3])
    np.testing.assert_array_equal(EW.relu(x), R.relu(x))
    np.testing.assert_array_equal(EW.relu_backward(g, EW.relu(x)), R.relu_backward(g, R.relu(x)))
    np.testing.assert_array_equal(EW.add(x, y), R.add(x, y))
    fused = EW.silu(x * 8)             # large |x| too: the stable logistic
    if fused is not None:              # None below MIN_SIZE: ops.SiLU uses NumPy then
        for got, want in zip(fused, R.silu(x * 8)):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(EW.silu_backward(g, x, fused[1]),
                                   R.silu_backward(g, x, fused[1]), rtol=1e-6, atol=1e-7)
    else:
        assert x.size < EW.MIN_SIZE
    np.testing.assert_array_equal(EW.add(x, v), R.add(x, v))
    np.testing.assert_allclose(EW.pixel_sum(g), R.pixel_sum(g), **TOL)
    g2 = g.reshape(-1, shape[3])
    np.testing.assert_allclose(EW.column_sum(g2), R.column_sum(g2), rtol=1e-4, atol=1e-3)
    a, b = randn(*shape[:3], 3), randn(*shape[:3], shape[3])
    cat = EW.concat_channels(a, b)
    np.testing.assert_array_equal(cat, R.concat_channels(a, b))
    da, db = EW.split_channels(cat, 3)
    np.testing.assert_array_equal(da, a)
    np.testing.assert_array_equal(db, b)
    assert da.flags.c_contiguous and db.flags.c_contiguous


@pytest.mark.parametrize("shape", [(16, 16, 16, 24), (3, 5, 7, 130), (1, 2, 2, 3)])
def test_batchnorm_backward_matches_reference(shape):
    x = randn(*shape) * 2 + 5  # a mean far from 0: xhat must be formed from (x - mean)
    dy, gamma = randn(*shape), randn(shape[-1])
    dx, dgamma, dbeta = K.batchnorm_backward(dy, x, gamma, *K.batchnorm_forward_train(
        x, gamma, randn(shape[-1]), 1e-3)[1:], 1e-3)
    rdx, rdgamma, rdbeta = R.batchnorm_backward(dy, x, gamma, 1e-3)
    np.testing.assert_allclose(dx, rdx, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(dgamma, rdgamma, rtol=1e-3, atol=1e-2)
    np.testing.assert_allclose(dbeta, rdbeta, rtol=1e-3, atol=1e-2)


def test_depthwise_kernels_on_a_large_batch():
    """Many images (one per thread) and a wide row, as in the U-Net."""
    x, k = randn(9, 16, 16, 32), randn(3, 3, 32)
    out_hw, pads = K.conv2d_geometry(x.shape, k.shape, 1, "same")
    y = K.depthwise_forward(x, k, pads[0], pads[2], *out_hw)
    np.testing.assert_allclose(y, R.depthwise(x, k, pads, out_hw), **TOL)
    dy = randn(*y.shape)
    dx, dk = K.depthwise_backward(x, dy, k, pads[0], pads[2])
    # dx is the convolution of dy with the rotated kernel; dk the correlation of x with dy
    rdx = R.depthwise(dy, k[::-1, ::-1], (pads[1], pads[0], pads[3], pads[2]), x.shape[1:3])
    np.testing.assert_allclose(dx, rdx, **TOL)
    xp = np.pad(x.astype(np.float64), ((0, 0), (pads[0], pads[1]), (pads[2], pads[3]), (0, 0)))
    rdk = np.array([[np.sum(xp[:, i:i + 16, j:j + 16] * dy, axis=(0, 1, 2)) for j in range(3)]
                    for i in range(3)])
    np.testing.assert_allclose(dk, rdk, rtol=1e-4, atol=1e-3)


def test_blas_and_numba_share_one_thread_pool():
    """After import, NumPy's OpenBLAS runs on one thread and the products on numba's threads
    (or, where that BLAS is not found, the numba loops on one thread): never two pools."""
    import numba
    from tinyddpm.kernels import blas
    assert blas.SHARED_POOL or numba.get_num_threads() == 1


def test_fallback_without_the_shared_pool_gives_the_same_results():
    """TINYDDPM_NUMPY_BLAS=1 (or a BLAS tinyddpm cannot find): NumPy's own products, numba on one
    thread, the same numbers."""
    import os
    import subprocess
    import sys
    code = (
        "import numpy as np, numba\n"
        "from tinyddpm.kernels import blas, conv2d_forward, conv2d_geometry\n"
        "from tinyddpm.kernels import reference as R\n"
        "assert not blas.SHARED_POOL and numba.get_num_threads() == 1\n"
        "rng = np.random.default_rng(0)\n"
        "x = rng.standard_normal((3, 8, 8, 5)).astype(np.float32)\n"
        "k = rng.standard_normal((3, 3, 5, 7)).astype(np.float32)\n"
        "b = rng.standard_normal(7).astype(np.float32)\n"
        "hw, pads = conv2d_geometry(x.shape, k.shape, 1, 'same')\n"
        "y, _ = conv2d_forward(x, k, b, 1, pads, hw)\n"
        "np.testing.assert_allclose(y, R.conv2d(x, k, b, 1, pads, hw), rtol=1e-4, atol=1e-4)\n"
        "np.testing.assert_allclose(blas.matmul(x.reshape(-1, 5), k[0, 0], bias=b),\n"
        "                           x.reshape(-1, 5) @ k[0, 0] + b, rtol=1e-5, atol=1e-5)\n"
        "print('ok')\n")
    env = dict(os.environ, TINYDDPM_NUMPY_BLAS="1")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
