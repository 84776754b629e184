"""``tinyddpm.keras``: the functional API, ``Layer`` with ``call()``, ``Sequential``, ``fit`` on
arrays. The reference U-Net written once for any Keras-like module
(``tests/keras_programs/book_model.py``) gives real Keras' outputs when Keras' weights are copied
in (run live where TensorFlow is installed)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinyddpm as td
from tinyddpm import keras

PROGRAMS = Path(__file__).resolve().parent / "keras_programs"
sys.path.insert(0, str(PROGRAMS))
import book_model  # noqa: E402


def take(table, t):  # numpy's tf.gather
    return np.take(table, np.asarray(t), axis=0)


def test_the_reference_unet_written_with_the_functional_api_gives_keras_outputs(tmp_path):
    pytest.importorskip("tensorflow")
    out = tmp_path / "keras.npz"
    done = subprocess.run([sys.executable, str(PROGRAMS / "book_model.py"), str(out)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    k = np.load(out)
    model = book_model.build(keras, take)
    assert model.count_params() == int(k["count_params"]) == 280_369
    weights = []
    for layer in model.layers:  # Keras' weights, layer by layer, matched by name
        i = 0
        while f"{layer.name}/{i}" in k.files:
            weights.append(k[f"{layer.name}/{i}"])
            i += 1
    model.set_weights(weights)
    got = model({"X_noisy": k["x"], "time": k["t"]}).data
    np.testing.assert_allclose(got, k["inference"], atol=1e-4, rtol=1e-4)


def test_the_functional_unet_trains_and_samples_in_tinyddpm():
    model = book_model.build(keras, take)
    assert model.count_params() == 280_369
    assert [layer.name for layer in model.layers][:3] == ["time_encoding", "pad_0", "conv_1"]
    model.compile(loss=td.Huber(), optimizer=td.Nadam())
    (X, _), _ = td.data.load_subset()
    data = td.prepare_dataset(X[:64] / np.float32(255), batch_size=16, shuffle=True, seed=0)
    history = model.fit(data, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    assert not model.training
    # the book's reverse loop, ported: no step's graph is kept
    x = np.random.default_rng(0).standard_normal((2, 28, 28, 1)).astype(np.float32)
    for t in range(5, 0, -1):
        noise = model({"X_noisy": x, "time": np.full(2, t, np.int32)})
        assert not noise.requires_grad
        x = (x - 0.01 * noise.data).astype(np.float32)
    assert td.generate_ddim(model, 2, steps=3, seed=0).shape == (2, 28, 28, 1)


class Scale(keras.layers.Layer):
    """A custom layer in Keras' style: a weight made in build(), the mode received in call()."""

    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor
        self.seen = []

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones")  # Keras 3 order
        self.count = self.add_weight("count", (), initializer="zeros", trainable=False)

    def call(self, inputs, training=None):
        self.seen.append(training)
        return inputs * self.w * self.factor


def test_a_custom_layer_with_build_and_call():
    X = keras.Input(shape=[3])
    layer = Scale(2.0, name="scale")
    model = keras.Model(X, layer(keras.layers.Dense(3, name="d")(X)))
    assert model.count_params() == 12 + 3 + 1 and set(model.get_layer("scale").state_dict()) == \
        {"w", "count"}
    model.compile(loss="mse", optimizer="adam")
    model.fit(np.ones((8, 3), np.float32), np.zeros((8, 3), np.float32), epochs=1, verbose=0)
    assert layer.seen[-1] is True and layer.seen[0] is False  # built in inference, trained
    with pytest.raises(TypeError, match="input_dim"):
        Scale(input_dim=3)


def test_sequential_fit_on_arrays_predict_evaluate_weights(tmp_path, capsys):
    td.set_seed(0)
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1)])
    assert model.count_params() == 49
    model.compile(loss="mse", optimizer=td.Adam(1e-2))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 4)).astype(np.float32)
    y = x.sum(axis=1, keepdims=True)
    history = model.fit(x, y, batch_size=10, epochs=5, validation_split=0.2, verbose=0)
    assert history.params["steps"] == 8  # 80 training samples: the last 20 validate
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert model.predict(x[:7]).shape == (7, 1)
    assert model.evaluate(x[80:], y[80:]) == pytest.approx(history.history["val_loss"][-1])
    weights = model.get_weights()
    assert [w.shape for w in weights] == [(4, 8), (8,), (8, 1), (1,)]
    model.save_weights(tmp_path / "w.npz")
    model.set_weights([np.zeros_like(w) for w in weights])
    model.load_weights(tmp_path / "w.npz")
    for a, b in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(a, b)
    model.summary()
    assert "Total params: 49" in capsys.readouterr().out
    with pytest.raises(ValueError, match="samples"):
        model.fit(x, y[:50], verbose=0)


def test_shuffled_array_batches_are_reproducible_with_set_seed():
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = np.arange(10, dtype=np.float32)[:, None]
    losses = []
    for _ in range(2):
        td.set_seed(3)
        model = keras.Sequential([keras.Input(shape=(2,)), keras.layers.Dense(1)])
        model.compile(loss="mse", optimizer="sgd")
        losses.append(model.fit(x, y, batch_size=3, epochs=2, verbose=0).history["loss"])
    assert losses[0] == losses[1]


def test_functional_model_errors_name_what_is_wrong():
    a, b = keras.Input(shape=[2], name="a"), keras.Input(shape=[2], name="b")
    out = keras.layers.add([keras.layers.Dense(2)(a), b])
    with pytest.raises(ValueError, match="not among the inputs"):
        keras.Model(inputs=[a], outputs=[out])
    model = keras.Model(inputs=[a, b], outputs=out)
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        model({"a": np.zeros((1, 2), np.float32)})
    with pytest.raises(TypeError, match="symbolic"):
        keras.Model(inputs=[a], outputs=[np.zeros(2)])
    with pytest.raises(TypeError, match="no data"):
        np.asarray(a)
    ones = np.ones((3, 2), np.float32)
    assert model([ones, ones]).shape == (3, 2)  # by position too
    model.compile(loss="mse", optimizer="sgd")  # and fit on a list or a dict of arrays
    x = np.random.default_rng(0).standard_normal((10, 2)).astype(np.float32)
    by_list = model.fit([x, x], x, batch_size=4, epochs=1, verbose=0, shuffle=False)
    assert by_list.params["steps"] == 3
    assert model.evaluate({"a": x, "b": x}, x, batch_size=4) > 0


def test_a_subclassed_keras_model_with_call():
    class Tiny(keras.Model):
        def __init__(self):
            super().__init__()
            self.blocks = []
            for width in (4, 2):
                self.blocks.append(keras.layers.Dense(width))

        def call(self, x, training=None):
            for block in self.blocks:
                x = block(x)
            return x
    model = Tiny()
    assert model(np.ones((2, 3), np.float32)).shape == (2, 2)
    assert model.count_params() == (3 * 4 + 4) + (4 * 2 + 2)
    assert len(model.layers) == 2


@pytest.mark.parametrize("k,s,padding", [(3, 2, "same"), (3, 2, "valid"), (2, 2, "valid"),
                                         (4, 3, "same"), (2, 3, "valid")])
def test_strided_conv2d_transpose_shape_and_gradient(k, s, padding):
    """Keras' sizes: H s with 'same', H s + max(k - s, 0) with 'valid'; float64 gradients."""
    rng = np.random.default_rng(0)
    x, kernel = rng.standard_normal((2, 3, 4, 2)), rng.standard_normal((k, k, 3, 2))
    bias = rng.standard_normal(3)
    extra = 0 if padding == "same" else max(k - s, 0)
    y = td.functional.conv2d_transpose(td.Tensor(x, dtype=np.float64), kernel, bias, padding, s)
    assert y.shape == (2, 3 * s + extra, 4 * s + extra, 3)
    weights = rng.standard_normal(y.shape)
    td.gradcheck(lambda a, w, b: (td.functional.conv2d_transpose(a, w, b, padding, s)
                                  * weights).sum(), x, kernel, bias)


def test_strided_conv2d_transpose_gives_keras_outputs():
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 6, 3)).astype(np.float32)
    for k, s, padding in [(3, 2, "same"), (3, 2, "valid"), (4, 3, "same"), (2, 3, "valid")]:
        theirs = tf.keras.layers.Conv2DTranspose(4, k, strides=s, padding=padding)
        theirs(x)
        w, b = theirs.get_weights()
        theirs.set_weights([w, rng.standard_normal(b.shape).astype(np.float32)])
        ours = keras.layers.Conv2DTranspose(4, k, strides=s, padding=padding)
        ours(x)
        ours.kernel.data, ours.bias.data = theirs.get_weights()
        np.testing.assert_allclose(ours(x).data, theirs(x).numpy(), atol=1e-5)


def test_what_a_keras_port_of_the_books_loop_needs():
    """float64 arrays (NumPy's noise, X / 255.) are cast to the model's float32 as Keras casts
    them; outputs convert with np.asarray (plt.imshow); layers hold get/set_weights; default
    names, tuple strides and initializer names are Keras'."""
    model = book_model.build(keras, take)
    X = np.random.default_rng(0).standard_normal((2, 28, 28, 1))  # float64
    out = model({"X_noisy": X, "time": np.array([5, 6])})
    assert np.asarray(out).dtype == np.float32 and np.asarray(out).shape == (2, 28, 28, 1)
    X = 1.01 * (X - 0.1 * out)  # a float64 array with a model output: a float64 tensor
    assert X.dtype == np.float64 and model({"X_noisy": X, "time": np.array([5, 6])}).shape == \
        (2, 28, 28, 1)
    conv = keras.layers.Conv2D(2, 3, strides=(2, 2), padding="same")
    pool = keras.layers.MaxPooling2D(pool_size=(2, 2))
    x = keras.Input(shape=[8, 8, 1])
    plain = keras.Model(x, pool(conv(x)))
    assert [layer.name for layer in plain.layers] == ["conv2d", "max_pooling2d"]
    assert plain(np.zeros((1, 8, 8, 1), np.float32)).shape == (1, 2, 2, 2)
    with pytest.raises(ValueError, match="strides"):
        keras.layers.Conv2D(2, 3, strides=(2, 1))
    weights = conv.get_weights()
    assert [w.shape for w in weights] == [(3, 3, 1, 2), (2,)]
    conv.set_weights([np.ones((3, 3, 1, 2)), np.zeros(2)])
    np.testing.assert_array_equal(conv.kernel.data, 1)

    class Init(keras.layers.Layer):
        def build(self, input_shape):
            self.a = self.add_weight(shape=(1000,), initializer="random_normal")
    layer = Init()
    layer(np.zeros((1, 2), np.float32))
    assert 0.04 < layer.a.data.std() < 0.06  # Keras' random_normal: stddev 0.05
    with pytest.raises(ValueError, match="unknown initializer 'gaussian'"):
        Init().add_weight(shape=(2,), initializer="gaussian")


def test_save_and_load_model_rebuild_the_model_without_pickle(tmp_path):
    model = book_model.build(keras, take)
    x, t = book_model.inputs(2)
    before = model({"X_noisy": x, "time": t}).data
    path = tmp_path / "unet.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as data:  # a plain npz: nothing to unpickle
        assert "header" in data.files
    with pytest.raises(ValueError, match="custom_objects"):
        keras.models.load_model(path)
    TimeEncoding = book_model.time_encoding_layer(keras, take)
    again = keras.models.load_model(path, custom_objects={"TimeEncoding": TimeEncoding})
    np.testing.assert_array_equal(again({"X_noisy": x, "time": t}).data, before)
    assert [layer.name for layer in again.layers] == [layer.name for layer in model.layers]

    seq = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"),
                            keras.layers.Dropout(0.1), keras.layers.Dense(1)])
    seq.compile(loss="mse", optimizer="adam")
    seq.fit(np.ones((8, 4), np.float32), np.ones((8, 1), np.float32), epochs=1, verbose=0)
    seq.save(tmp_path / "seq.npz")
    loaded = keras.models.load_model(tmp_path / "seq.npz")
    ones = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(loaded(ones).data, seq(ones).data)

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(1)

        def call(self, x):
            return self.d(x)
    sub = Sub()
    sub(ones)
    with pytest.raises(TypeError, match="save_weights"):
        sub.save(tmp_path / "sub.npz")
    sub.save_weights(tmp_path / "w.npz")
    with pytest.raises(td.CheckpointError, match="no model description"):
        keras.models.load_model(tmp_path / "w.npz")


def test_save_load_edge_cases_from_a_review(tmp_path):
    x = np.ones((2, 4), np.float32)
    built_by_call = keras.Sequential([keras.layers.Dense(3), keras.layers.Dense(2)])
    built_by_call(x)
    built_by_call.save(tmp_path / "s.npz")
    np.testing.assert_array_equal(keras.models.load_model(tmp_path / "s.npz")(x).data,
                                  built_by_call(x).data)
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    X = keras.Input((4,))
    nested = keras.Model(X, keras.layers.Dense(1)(inner(X)))
    with pytest.raises(TypeError, match="used as a layer"):
        nested.save(tmp_path / "n.npz")
    # names that are attributes of a model, frozen layers, and arithmetic with numbers first
    X = keras.Input((4,))
    odd = keras.layers.Dense(2, name="training")
    frozen = keras.layers.Dense(2, name="frozen")
    frozen.trainable = False
    out = frozen((1.0 - odd(X)) ** 2 + 1.0 / (odd(X) ** 2 + 1.0))
    model = keras.Model(X, out)
    assert model.training is False and model.get_layer("training") is odd
    assert out.dtype == np.float32
    model.compile(loss="mse", optimizer="sgd")
    before = odd.kernel.data.copy()
    model.fit(x, np.zeros((2, 2), np.float32), epochs=1, verbose=0)
    assert not np.array_equal(odd.kernel.data, before)  # trained
    model.save(tmp_path / "m.npz")
    again = keras.models.load_model(tmp_path / "m.npz")
    np.testing.assert_allclose(again(x).data, model(x).data, rtol=1e-6)
    assert again.get_layer("frozen").trainable is False
