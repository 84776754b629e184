"""Where tinyddpm's training API looks like Keras, it behaves like Keras.

Each test runs in tinyddpm the small program that ``tests/keras_programs/semantics.py`` runs in
real Keras, and compares with what Keras did there (recorded in ``keras_results.json``; the last
test re-runs the Keras programs live where TensorFlow is installed, so the record cannot drift).
The programs use a Dense model on 4 features; where a BatchNormalization is needed, tinyddpm's
(NHWC only) sees the same 4 features as a 1x1 image.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinyddpm as td
from tinyddpm import nn

HERE = Path(__file__).resolve().parent / "keras_programs"
KERAS = json.loads((HERE / "keras_results.json").read_text())


def data(n=64, d=4, seed=0):  # as the Keras program's
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)).astype("float32"),
            rng.standard_normal((n, 1)).astype("float32"))


def batches(x, y, size=16):
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(x), size)]


class Small(td.Model):
    """Dense(8) [-> BatchNormalization] -> Dense(1), as the Keras program's Sequential."""

    def __init__(self, bn=False):
        super().__init__()
        if bn:  # the same features as 1x1 images, for the NHWC batch norm
            self.dense1, self.bn, self.dense2 = nn.Conv2D(8, 1), nn.BatchNormalization(), \
                nn.Conv2D(1, 1)
        else:
            self.dense1, self.bn, self.dense2 = nn.Dense(8), None, nn.Dense(1)

    def forward(self, x):
        z = self.dense1(x)
        return self.dense2(self.bn(z) if self.bn is not None else z)


def small_model(bn=False, learning_rate=0.01):
    td.set_seed(0)
    model = Small(bn)
    model(np.zeros((1, 1, 1, 4) if bn else (1, 4), np.float32))
    return model.compile(loss="mse", optimizer=td.SGD(learning_rate))


def image_data(n=64):
    x, y = data(n)
    return x.reshape(n, 1, 1, 4), y.reshape(n, 1, 1, 1)


def test_fit_leaves_the_model_in_inference_mode():
    x, y = image_data()
    model = small_model(bn=True)
    model.fit(batches(x, y), epochs=1, verbose=0)
    before = model.bn.moving_mean.copy()
    out = model(x).data
    got = {"moving_mean_changed_by_call": bool(np.abs(model.bn.moving_mean - before).max() > 0),
           "call_equals_training_false": bool(np.allclose(out, model(x, training=False).data)),
           "call_differs_from_training_true": bool(
               not np.allclose(out, model(x, training=True).data))}
    assert got == KERAS["fit_leaves_inference_mode"]
    assert not model.training


def test_samplers_run_in_inference_mode_even_after_train():
    """The README's example: fit, then sample. A model left in training mode by hand must
    sample as in inference mode, and leave its BatchNorm statistics alone."""
    model = td.load_pretrained()
    reference = td.generate_ddim(model, 4, steps=3, seed=0)
    model.train()
    stats = model.bn_in.moving_mean.copy()
    np.testing.assert_array_equal(td.generate_ddim(model, 4, steps=3, seed=0), reference)
    np.testing.assert_array_equal(model.bn_in.moving_mean, stats)
    assert model.training  # left as it was


def test_calling_a_model_outside_fit_records_no_graph():
    """The book's generate loop, ported line for line, must run at flat memory: no step's
    graph may stay alive through X."""
    model = td.build_diffusion_model(seed=0)
    X = td.Tensor(np.random.default_rng(0).standard_normal((2, 28, 28, 1)).astype(np.float32))
    for t in range(5, 0, -1):
        X_noise = model({"X_noisy": X, "time": np.full(2, t)})
        X = (X - 0.01 * X_noise) * 1.001
        assert not X_noise.requires_grad and X._ctx is None
    # an input that asks for a gradient still gets one (e.g. a saliency map)
    x = td.Tensor(np.zeros((1, 28, 28, 1), np.float32), requires_grad=True)
    model({"X_noisy": x, "time": np.array([3])}).sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


def test_each_fit_counts_epochs_from_initial_epoch_and_returns_a_fresh_history():
    x, y = data()
    model = small_model()
    h1 = model.fit(batches(x, y), epochs=2, verbose=0)
    h2 = model.fit(batches(x, y), epochs=2, verbose=0)
    h3 = model.fit(batches(x, y), epochs=3, verbose=0, initial_epoch=2)
    got = {"first_epochs": h1.epoch, "second_epochs": h2.epoch, "same_object": h1 is h2,
           "second_losses": len(h2.history["loss"]), "initial_epoch_2_epochs": h3.epoch,
           "iterations": int(model.optimizer.iterations),
           "params_keys": sorted(h2.params),
           "params": {k: h2.params[k] for k in ("epochs", "steps")},
           "history_model_is_model": h2.model is model, "model_history_is_last": model.history is h3}
    assert got == KERAS["second_fit_trains_again"]


def test_layers_kept_in_a_list_are_registered():
    class ListModel(td.Model):
        def __init__(self):
            super().__init__()
            self.hidden = [nn.Dense(8), nn.Dense(8)]
            self.out = nn.Dense(1)

        def forward(self, x):
            for layer in self.hidden:
                x = layer(x)
            return self.out(x)
    model = ListModel()
    model(np.zeros((1, 4), np.float32))
    assert model.count_params() == KERAS["layers_in_a_list"]["count_params"]
    assert {"hidden.0.kernel", "hidden.1.bias"} <= set(model.state_dict())
    model.compile(loss="mse", optimizer=td.SGD(0.1))
    before = model.hidden[0].kernel.data.copy()
    model.fit(batches(*data()), epochs=1, verbose=0)
    assert not np.array_equal(model.hidden[0].kernel.data, before)  # trained


def test_layers_appended_to_a_list_kept_in_a_dict_or_nested_are_registered():
    class Containers(td.Model):
        def __init__(self):
            super().__init__()
            self.hidden = []
            for _ in range(2):
                self.hidden.append(nn.Dense(8))  # Keras' habit: an empty list, then append
            self.by_name = {"a": nn.Dense(8)}
            self.nested = [[nn.Dense(8)], (nn.Dense(8),)]
            self.out = nn.Dense(1)

        def forward(self, x):
            for layer in [*self.hidden, self.by_name["a"], self.nested[0][0], self.nested[1][0]]:
                x = layer(x)
            return self.out(x)
    model = Containers()
    model(np.zeros((1, 4), np.float32))
    assert model.count_params() == 40 + 72 * 4 + 9
    model.hidden.pop()
    assert "hidden.1.kernel" not in model.state_dict()
    model.by_name["b"] = nn.Dense(2)
    assert "by_name.b" in dict(model.named_modules())


def test_what_callbacks_add_to_the_logs_reaches_the_history():
    class Extra(td.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["extra"] = 42.0
    history = small_model().fit(batches(*data()), epochs=2, verbose=0, callbacks=[Extra()])
    assert history.history["extra"] == [42.0, 42.0]


def test_stop_training_is_looked_at_after_each_batch_as_in_keras():
    class StopAtOnce(td.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.model.stop_training = True
    model = small_model()
    history = model.fit(batches(*data()), epochs=3, verbose=0, callbacks=[StopAtOnce()])
    assert history.epoch == [0] and model.optimizer.iterations == 1  # one batch, as Keras


def test_forward_with_a_training_parameter_gets_the_mode():
    seen = []

    class Branchy(td.Model):
        def __init__(self):
            super().__init__()
            self.dense = nn.Dense(1)

        def forward(self, x, training=None):
            seen.append(training)
            return self.dense(x)
    model = Branchy()
    x = np.zeros((2, 4), np.float32)
    model(x)
    model(x, training=True)
    model.compile(loss="mse", optimizer=td.SGD(0.1))
    model.fit([(x, np.zeros((2, 1), np.float32))], epochs=1, verbose=0)
    assert seen == [False, True, True]


def test_verbose_auto_is_one_and_large_values_are_two(capsys):
    x, y = data()
    small_model().fit(batches(x, y), epochs=1, verbose="auto")
    small_model().fit(batches(x, y), epochs=1, verbose=3)
    with pytest.raises(ValueError, match="verbose"):
        small_model().fit(batches(x, y), epochs=1, verbose="loud")


def test_a_model_frozen_before_its_layers_are_attached_freezes_them():
    class Frozen(Small):
        def __init__(self):
            td.Model.__init__(self)
            self.trainable = False
            self.dense1, self.bn, self.dense2 = nn.Conv2D(8, 1), nn.BatchNormalization(), \
                nn.Conv2D(1, 1)
    td.set_seed(0)
    model = Frozen()
    x, y = image_data()
    model(x[:1])
    model.compile(loss="mse", optimizer=td.SGD(0.01))
    before = model.bn.moving_mean.copy()
    model.fit(batches(x, y), epochs=1, verbose=0)
    np.testing.assert_array_equal(model.bn.moving_mean, before)


def test_a_one_shot_generator_never_reports_a_loss_of_zero():
    x, y = data()

    def gen():
        for i in range(0, 64, 16):
            yield x[i:i + 16], y[i:i + 16]
    model = small_model()
    with pytest.warns(RuntimeWarning, match="ran out"):
        history = model.fit(gen(), epochs=3, verbose=0)
    assert KERAS["one_shot_generator"]["any_zero_loss"] is False
    assert 0.0 not in history.history["loss"]
    # Keras 3 keeps repeating the last epoch's metrics; tinyddpm stops at the first empty epoch
    assert len(history.history["loss"]) == 1
    # validation data that runs out after the first epoch: a warning, the epoch kept, no loss 0
    with pytest.warns(RuntimeWarning, match="validation_data gave no batch"):
        history = model.fit(batches(x, y), epochs=3, verbose=0, validation_data=gen_of(x, y))
    assert history.epoch == [0, 1] and len(history.history["val_loss"]) == 1
    with pytest.raises(ValueError, match="no batch"):  # empty from the start: an error
        model.fit(batches(x, y), epochs=1, verbose=0, validation_data=[])


def gen_of(x, y):
    return ((x[i:i + 16], y[i:i + 16]) for i in range(0, len(x), 16))


def test_model_checkpoint_formats_its_path(tmp_path):
    x, y = data()
    model = small_model()
    cb = td.ModelCheckpoint(tmp_path / "ckpt_{epoch:02d}_{val_loss:.3f}.npz")
    model.fit(batches(x, y), epochs=2, verbose=0, validation_data=batches(x[:16], y[:16]),
              callbacks=[cb])
    names = sorted(p.name for p in tmp_path.iterdir())
    expected = KERAS["checkpoint_path_is_formatted"]
    assert len(names) == expected["files"] and [n[:8] for n in names] == expected["prefixes"]
    with pytest.raises(ValueError, match="'val_los'"):
        model.fit(batches(x, y), epochs=1, verbose=0, validation_data=batches(x, y),
                  callbacks=[td.ModelCheckpoint(tmp_path / "c_{val_los}.npz")])


@pytest.mark.parametrize("name,make", [
    ("EarlyStopping", lambda tmp: td.EarlyStopping(monitor="val_los")),
    ("ModelCheckpoint",
     lambda tmp: td.ModelCheckpoint(tmp / "m.npz", monitor="val_los", save_best_only=True))])
def test_a_monitor_missing_from_the_logs_raises(name, make, tmp_path):
    assert KERAS["monitor_missing"][name] == "raises ValueError"
    x, y = data()
    with pytest.raises(ValueError, match="val_los"):
        small_model().fit(batches(x, y), epochs=1, verbose=0, validation_data=batches(x, y),
                          callbacks=[make(tmp_path)])
    # and a val_ monitor without validation data is refused before any training
    model = small_model()
    with pytest.raises(ValueError, match="validation"):
        model.fit(batches(x, y), epochs=1, verbose=0,
                  callbacks=[td.EarlyStopping(monitor="val_loss")])
    assert model.optimizer.iterations == 0


class SetValLoss(td.callbacks.Callback):
    def __init__(self, values):
        super().__init__()
        self.values = values

    def on_epoch_end(self, epoch, logs=None):
        logs["val_loss"] = self.values[epoch]


@pytest.mark.parametrize("patience", [0, 1, 2, 3])
def test_early_stopping_stops_when_keras_does(patience):
    x, y = data()
    values = [1.0, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0, 1.01, 1.02]
    history = small_model().fit(batches(x, y), epochs=10, verbose=0,
                                validation_data=batches(x, y),
                                callbacks=[SetValLoss(values), td.EarlyStopping(patience=patience)])
    assert len(history.epoch) == KERAS["early_stopping_epochs"][str(patience)]


def test_early_stopping_restores_the_best_weights():
    x, y = data()
    model = small_model()
    snapshots = []

    class Keep(td.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append(self.model.state_dict())
    model.fit(batches(x, y), epochs=10, verbose=0, validation_data=batches(x, y),
              callbacks=[SetValLoss([1.0, 0.9, 0.95, 0.96] + [2.0] * 6), Keep(),
                         td.EarlyStopping(patience=2, restore_best_weights=True)])
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, snapshots[1][name])  # epoch 2 had the best


def test_a_frozen_batchnorm_keeps_its_statistics():
    x, y = image_data()
    model = small_model(bn=True)
    model.bn.trainable = False
    before = model.bn.moving_mean.copy()
    model.fit(batches(x, y), epochs=1, verbose=0)
    got = {"moving_mean_changed": bool(np.abs(model.bn.moving_mean - before).max() > 0)}
    assert got == KERAS["frozen_batchnorm"]
    frozen = small_model(bn=True)
    frozen.trainable = False  # freezing a model freezes its layers, as in Keras
    assert frozen.bn.trainable is False and not list(frozen.named_trainable_parameters())


def test_the_epoch_loss_is_weighted_by_batch_size():
    x, y = data(70)
    model = small_model(learning_rate=0.0)
    fit_loss = model.fit(batches(x, y, 32), epochs=1, verbose=0).history["loss"][0]
    got = {"fit_equals_evaluate": bool(abs(fit_loss - model.evaluate(batches(x, y, 32))) < 1e-5)}
    assert got == KERAS["weighted_epoch_loss"]


class Recorder(td.callbacks.Callback):
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


def test_every_callback_hook_is_called_in_keras_order():
    x, y = data(32)
    model = small_model()
    rec = Recorder()
    model.fit(batches(x, y), epochs=2, verbose=0, validation_data=batches(x[:16], y[:16]),
              callbacks=[rec])
    fit_calls = list(rec.calls)
    rec.calls.clear()
    model.evaluate(batches(x, y), callbacks=[rec])
    model.predict(x, batch_size=16, callbacks=[rec])

    class NoDefault(td.callbacks.Callback):
        def on_train_begin(self, logs):  # no default for logs: Keras passes them
            self.seen_params = dict(self.params)

    class StopInBatch(td.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 0:
                self.model.stop_training = True
    nd = NoDefault()
    model.fit(batches(x, y), epochs=1, verbose=0, callbacks=[nd])
    history = model.fit(batches(x, y), epochs=3, verbose=0, callbacks=[StopInBatch()])
    got = {"fit": fit_calls, "evaluate_predict": rec.calls,
           "params_keys": sorted(nd.seen_params), "epochs_after_stop_in_batch": len(history.epoch)}
    assert got == KERAS["hooks_in_order"]


def test_verbose_2_prints_one_line_per_epoch(capsys):
    x, y = data()
    small_model().fit(batches(x, y), epochs=2, verbose=2)
    out = capsys.readouterr()
    assert out.out.count("Epoch ") == 2 and "batch/s" not in out.err + out.out


def test_the_recorded_keras_values_are_what_keras_does_now():
    pytest.importorskip("tensorflow")
    done = subprocess.run([sys.executable, str(HERE / "semantics.py")], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    live = json.loads(done.stdout[done.stdout.index("{"):])
    for key, value in KERAS.items():
        if not key.endswith("_version"):
            assert live[key] == value, key


def test_learning_rate_schedules_give_keras_values():
    expected = KERAS["learning_rate_schedules"]
    schedules = td.optimizers.schedules
    steps = [0, 5, 10, 25]
    for name, schedule in (("exponential", schedules.ExponentialDecay(0.1, 10, 0.5)),
                           ("staircase", schedules.ExponentialDecay(0.1, 10, 0.5, staircase=True)),
                           ("cosine", schedules.CosineDecay(0.1, 10, alpha=0.1))):
        np.testing.assert_allclose([schedule(s) for s in steps], expected[name], rtol=1e-6)
    # an optimizer follows its schedule step by step, and resumes it exactly
    opt = td.SGD(schedules.ExponentialDecay(0.1, 10, 0.5))
    p = td.nn.Parameter(np.zeros(1, np.float32))
    for _ in range(6):
        p.grad = np.ones(1, np.float32)
        opt.step([p])
    np.testing.assert_allclose(-p.data[0], sum(0.1 * 0.5 ** (s / 10) for s in range(6)),
                               rtol=1e-5)
    assert opt.current_learning_rate == pytest.approx(0.1 * 0.5 ** 0.6)
    again = td.SGD(schedules.ExponentialDecay(0.1, 10, 0.5))
    again.load_state_dict(opt.state_dict())
    assert again.current_learning_rate == opt.current_learning_rate


@pytest.mark.parametrize("kind", ["clipnorm", "global_clipnorm"])
def test_gradient_clipping_as_keras(kind):
    a, b = td.nn.Parameter(np.zeros(2, np.float32)), td.nn.Parameter(np.zeros(1, np.float32))
    a.grad, b.grad = np.array([3.0, 4.0], np.float32), np.array([12.0], np.float32)
    td.SGD(1.0, **{kind: 1.0}).step([a, b])
    expected_a, expected_b = KERAS["gradient_clipping"][kind]
    np.testing.assert_allclose(a.data, expected_a, rtol=1e-6)
    np.testing.assert_allclose(b.data, expected_b, rtol=1e-6)


class RateLog(td.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rates = []

    def on_epoch_end(self, epoch, logs=None):
        self.rates.append(self.model.optimizer.current_learning_rate)


def test_learning_rate_callbacks_as_keras():
    x, y = data()
    model = small_model(learning_rate=0.1)
    log = RateLog()
    model.fit(batches(x, y), epochs=3, verbose=0, callbacks=[
        td.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5 if epoch > 0 else lr), log])
    np.testing.assert_allclose(log.rates, KERAS["learning_rate_callbacks"]["scheduler"], rtol=1e-6)
    values = [1.0, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0, 1.01, 1.02]
    model = small_model(learning_rate=0.1)
    log = RateLog()
    history = model.fit(batches(x, y), epochs=10, verbose=0, validation_data=batches(x, y),
                        callbacks=[SetValLoss(values), td.callbacks.ReduceLROnPlateau(
                            factor=0.5, patience=1, min_lr=0.02, cooldown=1), log])
    np.testing.assert_allclose(log.rates, KERAS["learning_rate_callbacks"]["plateau"], rtol=1e-6)
    assert "learning_rate" in history.history


def test_flatten_reshape_dropout_as_keras():
    from tinyddpm import keras
    expected = KERAS["flatten_reshape_dropout"]
    model = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.Flatten(),
                              keras.layers.Dense(3), keras.layers.Reshape((3, 1))])
    assert list(model(np.zeros((2, 4, 4, 2), np.float32)).shape) == expected["output_shape"]
    assert model.count_params() == expected["count_params"]
    td.set_seed(0)
    ones = np.ones((2000, 50), np.float32)
    drop = keras.layers.Dropout(0.3)
    assert np.array_equal(drop(ones, training=False).data, ones) == \
        expected["dropout_inference_identity"]
    trained = drop(ones, training=True).data
    assert round(float((trained == 0).mean()), 2) == expected["dropout_zero_fraction"]
    assert round(float(trained.max()), 4) == expected["dropout_kept_value"]
    x = td.Tensor(np.ones((4, 3)), dtype=np.float64, requires_grad=True)
    drop.train()
    out = drop(x)
    out.sum().backward()
    np.testing.assert_array_equal(x.grad, out.data)  # the gradient is the same mask
