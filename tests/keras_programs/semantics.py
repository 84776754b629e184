"""What Keras does in the cases tests/test_keras_semantics.py checks tinyddpm against.

    python tests/keras_programs/semantics.py              # prints the results as JSON
    python tests/keras_programs/semantics.py --write      # and saves keras_results.json

Needs TensorFlow (``pip install tensorflow-cpu``); the results record the Keras version. Each
function is one small program, the same one the test runs in tinyddpm.
"""
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

keras = tf.keras
HERE = Path(__file__).resolve().parent


def data(n=64, d=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype("float32"), rng.standard_normal((n, 1)).astype("float32")


def small_model(bn=False):
    layers = [keras.Input((4,)), keras.layers.Dense(8)]
    if bn:
        layers.append(keras.layers.BatchNormalization())
    layers.append(keras.layers.Dense(1))
    model = keras.Sequential(layers)
    model.compile(loss="mse", optimizer=keras.optimizers.SGD(0.01))
    return model


def fit_leaves_inference_mode():
    """After fit, model(x) uses the moving statistics and does not change them."""
    x, y = data()
    model = small_model(bn=True)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    bn = model.layers[1]
    before = bn.moving_mean.numpy().copy()
    out = model(x).numpy()
    return {"moving_mean_changed_by_call": bool(np.abs(bn.moving_mean.numpy() - before).max() > 0),
            "call_equals_training_false": bool(np.allclose(out, model(x, training=False).numpy())),
            "call_differs_from_training_true": bool(
                not np.allclose(out, model(x, training=True).numpy()))}


def second_fit_trains_again():
    x, y = data()
    model = small_model()
    h1 = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    h2 = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    h3 = model.fit(x, y, epochs=3, batch_size=16, verbose=0, initial_epoch=2)
    return {"first_epochs": h1.epoch, "second_epochs": h2.epoch, "same_object": h1 is h2,
            "second_losses": len(h2.history["loss"]), "initial_epoch_2_epochs": h3.epoch,
            "iterations": int(model.optimizer.iterations.numpy()),
            "params_keys": sorted(h2.params), "params": {k: h2.params[k] for k in ("epochs", "steps")},
            "history_model_is_model": h2.model is model, "model_history_is_last": model.history is h3}


def layers_in_a_list():
    class ListModel(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = [keras.layers.Dense(8), keras.layers.Dense(8)]
            self.out = keras.layers.Dense(1)

        def call(self, x):
            for layer in self.hidden:
                x = layer(x)
            return self.out(x)
    model = ListModel()
    model(np.zeros((1, 4), "float32"))
    return {"count_params": int(model.count_params())}


def one_shot_generator():
    x, y = data()

    def gen():
        for i in range(0, 64, 16):
            yield x[i:i + 16], y[i:i + 16]
    model = small_model()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        history = model.fit(gen(), epochs=3, verbose=0)
    return {"epochs_recorded": len(history.history["loss"]),
            "any_zero_loss": any(v == 0 for v in history.history["loss"])}


def checkpoint_path_is_formatted():
    x, y = data()
    model = small_model()
    with tempfile.TemporaryDirectory() as tmp:
        cb = keras.callbacks.ModelCheckpoint(os.path.join(tmp, "ckpt_{epoch:02d}_{val_loss:.3f}.weights.h5"),
                                             save_weights_only=True)
        model.fit(x, y, epochs=2, batch_size=16, verbose=0, validation_data=(x[:16], y[:16]),
                  callbacks=[cb])
        names = sorted(os.listdir(tmp))
    return {"files": len(names), "prefixes": [n[:8] for n in names]}


def monitor_missing():
    """A monitor that is not in the logs: what each callback does."""
    x, y = data()
    out = {}
    for name, cb in [("EarlyStopping", keras.callbacks.EarlyStopping(monitor="val_los")),
                     ("ModelCheckpoint", keras.callbacks.ModelCheckpoint(
                         os.path.join(tempfile.mkdtemp(), "m.weights.h5"), monitor="val_los",
                         save_best_only=True, save_weights_only=True))]:
        model = small_model()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model.fit(x, y, epochs=1, batch_size=16, verbose=0, validation_data=(x, y),
                          callbacks=[cb])
                out[name] = "warns" if caught else "silent"
            except Exception as e:  # noqa: BLE001
                out[name] = "raises " + type(e).__name__
    return out


class SetValLoss(keras.callbacks.Callback):
    """Make the logs say val_loss = values[epoch] (placed before EarlyStopping)."""

    def __init__(self, values):
        super().__init__()
        self.values = values

    def on_epoch_end(self, epoch, logs=None):
        logs["val_loss"] = self.values[epoch]


def early_stopping_epochs():
    x, y = data()
    values = [1.0, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0, 1.01, 1.02]
    out = {}
    for patience in (0, 1, 2, 3):
        model = small_model()
        history = model.fit(x, y, epochs=10, batch_size=16, verbose=0, validation_data=(x, y),
                            callbacks=[SetValLoss(values),
                                       keras.callbacks.EarlyStopping(patience=patience)])
        out[str(patience)] = len(history.epoch)
    return out


def frozen_batchnorm():
    x, y = data()
    model = small_model(bn=True)
    bn = model.layers[1]
    bn.trainable = False
    model.compile(loss="mse", optimizer=keras.optimizers.SGD(0.01))
    before = bn.moving_mean.numpy().copy()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    return {"moving_mean_changed": bool(np.abs(bn.moving_mean.numpy() - before).max() > 0)}


def weighted_epoch_loss():
    x, y = data(70)
    model = small_model()
    model.compile(loss="mse", optimizer=keras.optimizers.SGD(0.0))
    fit_loss = model.fit(x, y, epochs=1, batch_size=32, verbose=0, shuffle=False).history["loss"][0]
    return {"fit_equals_evaluate": bool(abs(fit_loss - model.evaluate(x, y, batch_size=32, verbose=0)) < 1e-5)}


class Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __getattribute__(self, name):
        if name.startswith("on_") and name != "on_interrupt":
            calls = object.__getattribute__(self, "calls")

            def hook(*args, **kwargs):
                calls.append(name)
            return hook
        return object.__getattribute__(self, name)


def hooks_in_order():
    x, y = data(32)
    model = small_model()
    rec = Recorder()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, validation_data=(x[:16], y[:16]),
              callbacks=[rec])
    fit_calls = list(rec.calls)
    rec.calls.clear()
    model.evaluate(x, y, batch_size=16, verbose=0, callbacks=[rec])
    model.predict(x, batch_size=16, verbose=0, callbacks=[rec])

    class NoDefault(keras.callbacks.Callback):
        def on_train_begin(self, logs):
            self.seen_params = dict(self.params)

    class StopInBatch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 0:
                self.model.stop_training = True
    nd = NoDefault()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[nd])
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[StopInBatch()])
    return {"fit": fit_calls, "evaluate_predict": rec.calls,
            "params_keys": sorted(nd.seen_params), "epochs_after_stop_in_batch": len(history.epoch)}


def learning_rate_schedules():
    exp = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    stair = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5, staircase=True)
    cos = keras.optimizers.schedules.CosineDecay(0.1, 10, alpha=0.1)
    steps = [0, 5, 10, 25]
    return {"exponential": [float(exp(s)) for s in steps],
            "staircase": [float(stair(s)) for s in steps],
            "cosine": [float(cos(s)) for s in steps]}


def gradient_clipping():
    out = {}
    for name, kwargs in (("clipnorm", {"clipnorm": 1.0}), ("global_clipnorm", {"global_clipnorm": 1.0})):
        a, b = keras.Variable(np.zeros(2, "float32")), keras.Variable(np.zeros(1, "float32"))
        opt = keras.optimizers.SGD(1.0, **kwargs)
        opt.apply_gradients([(np.array([3.0, 4.0], "float32"), a), (np.array([12.0], "float32"), b)])
        out[name] = [a.numpy().tolist(), b.numpy().tolist()]
    return out


class RateLog(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rates = []

    def on_epoch_end(self, epoch, logs=None):
        self.rates.append(float(self.model.optimizer.learning_rate))


def learning_rate_callbacks():
    x, y = data()
    model = small_model()
    model.compile(loss="mse", optimizer=keras.optimizers.SGD(0.1))
    log = RateLog()
    model.fit(x, y, epochs=3, batch_size=16, verbose=0,
              callbacks=[keras.callbacks.LearningRateScheduler(
                  lambda epoch, lr: lr * 0.5 if epoch > 0 else lr), log])
    scheduled = log.rates
    values = [1.0, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0, 1.01, 1.02]
    model = small_model()
    model.compile(loss="mse", optimizer=keras.optimizers.SGD(0.1))
    log = RateLog()
    model.fit(x, y, epochs=10, batch_size=16, verbose=0, validation_data=(x, y),
              callbacks=[SetValLoss(values), keras.callbacks.ReduceLROnPlateau(
                  factor=0.5, patience=1, min_lr=0.02, cooldown=1), log])
    return {"scheduler": scheduled, "plateau": log.rates}


def flatten_reshape_dropout():
    model = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.Flatten(),
                              keras.layers.Dense(3), keras.layers.Reshape((3, 1))])
    ones = np.ones((2000, 50), "float32")
    drop = keras.layers.Dropout(0.3)
    trained = drop(ones, training=True).numpy()
    return {"output_shape": list(model(np.zeros((2, 4, 4, 2), "float32")).shape),
            "count_params": int(model.count_params()),
            "dropout_inference_identity": bool(np.array_equal(drop(ones).numpy(), ones)),
            "dropout_zero_fraction": round(float((trained == 0).mean()), 2),
            "dropout_kept_value": round(float(trained.max()), 4)}


CASES = [fit_leaves_inference_mode, second_fit_trains_again, layers_in_a_list, one_shot_generator,
         checkpoint_path_is_formatted, monitor_missing, early_stopping_epochs, frozen_batchnorm,
         weighted_epoch_loss, hooks_in_order, learning_rate_schedules, gradient_clipping,
         learning_rate_callbacks, flatten_reshape_dropout]


def main():
    keras.utils.set_random_seed(0)
    results = {"keras_version": keras.__version__, "tensorflow_version": tf.__version__}
    for case in CASES:
        results[case.__name__] = case()
    text = json.dumps(results, indent=1)
    print(text)
    if "--write" in sys.argv:
        (HERE / "keras_results.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
