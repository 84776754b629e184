"""Layers: gradients (float64) of inputs and weights, shapes, state dicts, and bad-input errors."""
import numpy as np
import pytest

from tinyddpm import kernels as K
from tinyddpm import nn
from tinyddpm.tensor import Tensor
from tinyddpm.testing import gradcheck

rng = np.random.default_rng(7)


def randn(*shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


def built(layer, x):
    """A float64 layer, built on x, with random (non-trivial) weights everywhere."""
    layer.astype(np.float64)
    layer(Tensor(x))
    for p in layer.parameters():
        p.data = rng.standard_normal(p.shape) * 0.5 + (1.0 if p.name == "gamma" else 0.0)
    return layer


LAYERS = [  # (name, factory, input shape)
    ("dense", lambda: nn.Dense(5, activation="tanh"), (3, 4)),
    ("dense_batch1", lambda: nn.Dense(3), (1, 6)),
    ("conv_valid", lambda: nn.Conv2D(4, 3), (2, 6, 6, 2)),
    ("conv_same_s2", lambda: nn.Conv2D(3, 3, strides=2, padding="same"), (1, 5, 5, 2)),
    ("conv_1x1_s2", lambda: nn.Conv2D(3, 1, strides=2, padding="same"), (2, 4, 4, 3)),
    ("conv_relu", lambda: nn.Conv2D(2, 3, padding="same", activation="relu"), (1, 4, 4, 2)),
    ("separable", lambda: nn.SeparableConv2D(4, 3, padding="same"), (2, 5, 5, 3)),
    ("conv_transpose", lambda: nn.Conv2DTranspose(3, 3, padding="same"), (2, 4, 4, 2)),
    ("batchnorm", lambda: nn.BatchNormalization(), (4, 3, 3, 2)),
    ("batchnorm_batch1", lambda: nn.BatchNormalization(), (1, 3, 3, 2)),
    ("groupnorm", lambda: nn.GroupNormalization(groups=2), (2, 3, 3, 4)),
    ("maxpool", lambda: nn.MaxPooling2D(3, strides=2, padding="same"), (2, 6, 6, 2)),
    ("upsample", lambda: nn.UpSampling2D(2), (1, 3, 3, 2)),
    ("zeropad", lambda: nn.ZeroPadding2D(3), (1, 2, 2, 1)),
    ("crop", lambda: nn.Cropping2D(2), (1, 7, 7, 1)),
    ("activation", lambda: nn.Activation("silu"), (2, 3)),
]


@pytest.mark.parametrize("name,factory,shape", LAYERS, ids=[c[0] for c in LAYERS])
def test_layer_gradients(name, factory, shape):
    x = randn(*shape)
    layer = built(factory(), x)
    assert gradcheck(lambda t: layer(t), x, wrt=layer.parameters())


def test_batchnorm_eval_gradients_and_moving_statistics():
    x = randn(8, 3, 3, 2) * 2 + 1
    layer = built(nn.BatchNormalization(momentum=0.9), x)
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    before = layer.moving_mean.copy(), layer.moving_variance.copy()
    layer(Tensor(x))  # training mode: one moving-average update (biased variance, as Keras)
    np.testing.assert_allclose(layer.moving_mean, 0.9 * before[0] + 0.1 * mean, rtol=1e-10)
    np.testing.assert_allclose(layer.moving_variance, 0.9 * before[1] + 0.1 * var, rtol=1e-10)
    layer.eval()
    y = layer(Tensor(x)).data
    expected = ((x - layer.moving_mean) / np.sqrt(layer.moving_variance + 1e-3)
                * layer.gamma.data + layer.beta.data)
    np.testing.assert_allclose(y, expected, rtol=1e-10)
    assert gradcheck(lambda t: layer(t), x, wrt=layer.parameters())
    stats = layer.moving_mean.copy()
    layer(Tensor(x))
    np.testing.assert_array_equal(layer.moving_mean, stats)  # eval never updates


@pytest.mark.parametrize("factory", [
    lambda: nn.Conv2D(3, 3, padding="same"),
    lambda: nn.Conv2D(2, 3, strides=2, use_bias=False),
    lambda: nn.Conv2DTranspose(3, 3, padding="same"),
    lambda: nn.SeparableConv2D(4, 3, padding="same"),
], ids=["conv", "conv-stride2-nobias", "conv-transpose", "separable"])
def test_fold_batchnorm_gives_the_same_inference(factory):
    from tinyddpm import no_grad
    x = randn(4, 7, 7, 2)
    conv, bn = factory().astype(np.float64), nn.BatchNormalization().astype(np.float64)
    bn(conv(Tensor(x)))  # build both
    bn.gamma.data[:] = rng.uniform(0.5, 2, bn.gamma.shape)
    bn.beta.data[:] = rng.standard_normal(bn.beta.shape)
    bn.moving_mean = rng.standard_normal(bn.moving_mean.shape)
    bn.moving_variance = rng.uniform(0.2, 3, bn.moving_variance.shape)
    assert nn.fold_batchnorm(conv, bn) is conv
    conv.eval(), bn.eval()
    plain = bn(conv(Tensor(x)))  # gradients recorded: the two layers run as written
    assert plain.normalized_by is None
    with no_grad():
        folded = conv(Tensor(x))
        assert folded.normalized_by is bn and bn(folded) is folded  # bn passes it through
    np.testing.assert_allclose(folded.data, plain.data, rtol=1e-10, atol=1e-12)
    conv.train(), bn.train()
    with no_grad():  # training mode: batch statistics, nothing folded
        assert conv(Tensor(x)).normalized_by is None


def test_fold_batchnorm_refuses_what_cannot_fold():
    with pytest.raises(ValueError, match="activation"):
        nn.fold_batchnorm(nn.Conv2D(2, 3, activation="relu"), nn.BatchNormalization())
    with pytest.raises(TypeError, match="BatchNormalization"):
        nn.fold_batchnorm(nn.Conv2D(2, 3), nn.GroupNormalization(2))
    from tinyddpm import no_grad, ops
    conv, bn = nn.Conv2D(2, 3), nn.BatchNormalization()
    x = np.ones((1, 5, 5, 1), np.float32)
    bn(conv(x))
    nn.fold_batchnorm(conv, bn).eval(), bn.eval()
    conv.activation = ops.relu  # set after the declaration: no longer folded
    with no_grad():
        assert conv(x).normalized_by is None


def test_layers_call_the_numba_kernels(monkeypatch):
    """The layers run on the kernels (not on the references): swap a kernel and see it used."""
    calls = []
    original = K.depthwise_forward

    def spy(*args):
        calls.append("depthwise")
        return original(*args)

    monkeypatch.setattr(K, "depthwise_forward", spy)
    nn.SeparableConv2D(2, 3, padding="same")(np.ones((1, 4, 4, 1), np.float32))
    assert calls == ["depthwise"]


def test_output_shapes_and_parameter_counts():
    x = np.zeros((2, 32, 32, 16), np.float32)
    conv = nn.Conv2D(32, 1, strides=2, padding="same")
    assert conv(x).shape == (2, 16, 16, 32) and conv.count_params() == 16 * 32 + 32
    sep = nn.SeparableConv2D(32, 3, padding="same")
    assert sep(x).shape == (2, 32, 32, 32) and sep.count_params() == 9 * 16 + 16 * 32 + 32
    tconv = nn.Conv2DTranspose(8, 3, padding="same")
    assert tconv(x).shape == (2, 32, 32, 8) and tconv.count_params() == 9 * 16 * 8 + 8
    bn = nn.BatchNormalization()
    assert bn(x).shape == x.shape and bn.count_params() == 4 * 16
    assert nn.MaxPooling2D(3, strides=2, padding="same")(x).shape == (2, 16, 16, 16)
    assert nn.UpSampling2D(2)(x).shape == (2, 64, 64, 16)
    assert nn.ZeroPadding2D(3)(np.zeros((2, 28, 28, 1), np.float32)).shape == (2, 34, 34, 1)
    assert nn.Conv2D(16, 3)(np.zeros((2, 34, 34, 1), np.float32)).shape == (2, 32, 32, 16)
    assert nn.Cropping2D(2)(np.zeros((2, 32, 32, 1), np.float32)).shape == (2, 28, 28, 1)


def test_glorot_uniform_limits_and_seed():
    nn.set_seed(3)
    a = nn.Conv2D(8, 3)
    a(np.zeros((1, 5, 5, 4), np.float32))
    limit = np.sqrt(6 / (9 * 4 + 9 * 8))
    assert np.abs(a.kernel.data).max() <= limit and np.abs(a.kernel.data).max() > 0.8 * limit
    assert not a.bias.data.any()
    nn.set_seed(3)
    b = nn.Conv2D(8, 3)
    b(np.zeros((1, 5, 5, 4), np.float32))
    np.testing.assert_array_equal(a.kernel.data, b.kernel.data)


def test_time_encoding_table():
    enc = nn.TimeEncoding(T=4000, embed_size=64)
    rows = enc(np.array([0, 1, 4000])).data
    assert rows.shape == (3, 64) and rows.dtype == np.float32
    i = np.arange(32)
    np.testing.assert_allclose(rows[1, 0::2], np.sin(1 / 10000 ** (2 * i / 64)), rtol=1e-6)
    np.testing.assert_allclose(rows[1, 1::2], np.cos(1 / 10000 ** (2 * i / 64)), rtol=1e-6)
    np.testing.assert_allclose(rows[0], np.tile([0, 1], 32))
    with pytest.raises(ValueError, match="0..4000"):
        enc(np.array([4001]))
    with pytest.raises(TypeError, match="integer"):
        enc(np.array([1.5]))


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(4, 3, padding="same")
        self.bn = nn.BatchNormalization()
        self.head = nn.Dense(2)

    def forward(self, x):
        y = self.bn(self.conv(x)).relu()
        return self.head(y.mean(axis=(1, 2)))


def test_module_state_dict_round_trip_and_train_eval():
    model = Tiny()
    x = np.random.default_rng(0).standard_normal((2, 5, 5, 3)).astype(np.float32)
    model(x)
    names = set(model.state_dict())
    assert names == {"conv.kernel", "conv.bias", "bn.gamma", "bn.beta", "bn.moving_mean",
                     "bn.moving_variance", "head.kernel", "head.bias"}
    assert [n for n, _ in model.named_parameters()] == ["conv.kernel", "conv.bias", "bn.gamma",
                                                        "bn.beta", "head.kernel", "head.bias"]
    other = Tiny()
    other(x)
    other.load_state_dict(model.state_dict())
    model.eval(), other.eval()
    assert not model.bn.training
    np.testing.assert_array_equal(model(x).data, other(x).data)
    assert model.count_params() == sum(v.size for v in model.state_dict().values())


def test_load_state_dict_errors():
    model = Tiny()
    model(np.zeros((1, 5, 5, 3), np.float32))
    state = model.state_dict()
    bad = dict(state, **{"conv.kernel": np.zeros((3, 3, 3, 5))})
    with pytest.raises(ValueError, match=r"'conv.kernel' has shape \(3, 3, 3, 5\) in the state "
                                         r"but \(3, 3, 3, 4\)"):
        model.load_state_dict(bad)
    missing = {k: v for k, v in state.items() if k != "bn.moving_mean"}
    with pytest.raises(ValueError, match=r"missing \['bn.moving_mean'\]"):
        model.load_state_dict(missing)
    with pytest.raises(ValueError, match=r"unexpected \['extra'\]"):
        model.load_state_dict(dict(state, extra=np.zeros(1)))
    with pytest.raises(RuntimeError, match="first call"):
        Tiny().state_dict()


@pytest.mark.parametrize("layer,x,error,pattern", [
    (nn.Conv2D(4, 3, name="conv_a"), np.zeros((28, 28, 1), np.float32), ValueError,
     r"Conv2D 'conv_a': expected input of shape \(N, H, W, C\) \(rank 4\), received \(28, 28, 1\)"),
    (nn.Dense(3, name="dense_a"), np.zeros((2, 3, 4), np.float32), ValueError,
     r"Dense 'dense_a': expected input of shape \(N, C\) \(rank 2\), received \(2, 3, 4\)"),
    (nn.BatchNormalization(name="bn"), np.zeros((2, 4, 4, 3), np.int64), TypeError,
     r"BatchNormalization 'bn': expected a float input .* received dtype int64"),
    (nn.MaxPooling2D(name="pool"), np.full((1, 4, 4, 1), np.nan, np.float32), ValueError,
     r"MaxPooling2D 'pool': input of shape \(1, 4, 4, 1\) contains NaN"),
    (nn.Conv2D(4, 3, name="c64"), np.zeros((1, 5, 5, 1), np.float64), TypeError,
     r"Conv2D 'c64': expected float32 input, received float64"),
])
def test_bad_inputs_raise_clear_errors(layer, x, error, pattern):
    with pytest.raises(error, match=pattern):
        layer(x)


def test_only_inputs_from_outside_the_graph_are_scanned_for_nan():
    """A layer scans what the user hands it; a tensor an op made is not scanned again (its
    inputs were), which keeps the scan off every layer of a model's forward pass."""
    from tinyddpm import ops
    pool = nn.MaxPooling2D(name="pool")
    bad = np.full((1, 4, 4, 1), np.nan, np.float32)
    for x in (bad, Tensor(bad)):
        with pytest.raises(ValueError, match="contains NaN"):
            pool(x)
    made = ops.relu(Tensor(np.ones((1, 4, 4, 1), np.float32))) * np.nan
    assert made.from_op and np.isnan(pool(made).data).all()


def test_wrong_channel_count_after_build():
    conv = nn.Conv2D(4, 3, name="enc")
    conv(np.zeros((1, 5, 5, 3), np.float32))
    with pytest.raises(ValueError, match=r"Conv2D 'enc': expected input of shape \(N, H, W, 3\), "
                                         r"received \(1, 5, 5, 2\)"):
        conv(np.zeros((1, 5, 5, 2), np.float32))
    x = np.zeros((1, 5, 5, 3), np.float32)
    x[0, 1, 2, 0] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        conv(x)


def test_layer_names_come_from_attributes():
    model = Tiny()
    with pytest.raises(ValueError, match="Conv2D 'conv'"):
        model(np.zeros((1, 5, 5), np.float32))


def test_embedding_rows_gradients_and_bad_indices():
    layer = nn.Embedding(5, 3).astype(np.float64)
    idx = np.array([4, 0, 4, 2])  # a repeated row: its gradients add up
    np.testing.assert_array_equal(layer(idx).data, layer.embeddings.data[idx])
    assert np.abs(layer.embeddings.data).max() <= 0.05
    assert gradcheck(lambda: layer(idx), wrt=layer.parameters())
    with pytest.raises(ValueError, match=r"0\.\.4"):
        layer(np.array([5]))
    with pytest.raises(TypeError, match="integer indices"):
        layer(np.array([0.5]))
