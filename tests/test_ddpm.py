"""The DDPM of the slides end to end: the U-Net, fit, checkpoints, generation, the CLI."""
import json
import os
import zipfile

import numpy as np
import pytest

import tinyddpm as td
from tinyddpm import diffusion, nn, sampling
from tinyddpm.checkpoint import CheckpointError


@pytest.fixture(scope="module")
def subset():
    """Real images from the embedded subset (present on every install)."""
    (X, _), _ = td.data.load_subset()
    return X


def small_sets(X, n_train=256, n_valid=64, batch_size=32, seed=0):
    X_train, X_valid = td.split_train_valid(X[:n_train + n_valid], n_valid=n_valid)
    return (td.prepare_dataset(X_train, batch_size, shuffle=True, seed=seed),
            td.prepare_dataset(X_valid, batch_size, seed=seed + 1))


# ---- the model -----------------------------------------------------------------------------------

def test_parameter_count_matches_the_book():
    model = td.build_diffusion_model(seed=0)
    assert model.count_params() == 280_369
    bn_stats = sum(b.size for _, b in model.named_buffers())
    assert bn_stats == 1_376
    assert sum(p.size for p in model.parameters()) == 278_993


def test_every_layer_output_shape():
    """Walk the U-Net as DESIGN.md describes it and check each stage's shape."""
    model = td.build_diffusion_model(seed=0).eval()
    x = np.random.default_rng(0).standard_normal((2, 28, 28, 1)).astype(np.float32)
    time_enc = model.time_encoding(np.array([1, 4000]))
    assert time_enc.shape == (2, 64)
    z = model.pad(x)
    assert z.shape == (2, 34, 34, 1)
    z = model.conv_in(z)
    assert z.shape == (2, 32, 32, 16)
    z = td.ops.relu(model.bn_in(z)) + td.ops.reshape(model.time_in(time_enc), (2, 1, 1, 16))
    skip, crosses = z, []
    for block, size, width in zip(model.down, (16, 8, 4), (32, 64, 128)):
        z, cross = block(z, skip, time_enc)
        assert cross.shape == (2, size * 2, size * 2, width)
        assert z.shape == (2, size, size, width)
        crosses.append(cross)
        skip = z
    for block, size, channels in zip(model.up, (8, 16, 32), (192, 96, 48)):
        z = block(z, skip, time_enc, crosses.pop())
        assert z.shape == (2, size, size, channels)
        skip = z
    z = model.conv_out(z)
    assert z.shape == (2, 32, 32, 1)
    out = model.crop(z)
    assert out.shape == (2, 28, 28, 1)
    # model(x) in inference mode records no graph, so its batch norms are folded into the
    # convolutions (nn.fold_batchnorm): the same values to float32 rounding
    np.testing.assert_allclose(out.data, model({"X_noisy": x, "time": np.array([1, 4000])}).data,
                               rtol=1e-5, atol=1e-5)


def test_up_block_computes_the_books_skip_path():
    """UpSample(Conv1x1(skip)) (what the code does) equals the book's Conv1x1(UpSample(skip))."""
    model = td.build_diffusion_model(seed=0)
    block = model.up[1]
    skip = np.random.default_rng(1).standard_normal((2, 8, 8, 192)).astype(np.float32)
    ours = block.skip_up(block.skip_conv(skip)).data
    books = block.skip_conv(block.skip_up(skip)).data
    np.testing.assert_allclose(ours, books, rtol=1e-5, atol=1e-5)


def test_inference_folds_batchnorm_into_the_convolutions():
    """Sampling (eval, no_grad) folds the 13 BatchNorms into the layers before them; the shipped
    model (trained statistics) gives the same noise prediction as the layers run one by one."""
    model = td.load_pretrained().eval()
    rng = np.random.default_rng(3)
    inputs = {"X_noisy": rng.standard_normal((4, 28, 28, 1)).astype(np.float32),
              "time": np.array([1, 100, 2000, 4000])}
    plain = model(inputs).data  # gradients recorded: nothing is folded
    with td.no_grad():
        assert model.down[0].sep1(np.ones((1, 4, 4, 16), np.float32)).normalized_by is \
            model.down[0].bn1
        folded = model(inputs).data
    np.testing.assert_allclose(folded, plain, rtol=1e-4, atol=1e-4)


def test_model_input_errors():
    model = td.build_diffusion_model(seed=0)
    x = np.zeros((2, 28, 28, 1), np.float32)
    with pytest.raises(ValueError, match="X_noisy"):
        model(x)
    with pytest.raises(ValueError, match=r"'time' must have shape \(2,\)"):
        model({"X_noisy": x, "time": np.array([1, 2, 3])})
    with pytest.raises(ValueError, match="0..4000"):
        model({"X_noisy": x, "time": np.array([1, 4001])})
    with pytest.raises(ValueError, match=r"'X_noisy' must have shape \(N, 28, 28, 1\), "
                       r"received \(2, 28, 28\)"):
        model({"X_noisy": x[..., 0], "time": np.array([1, 2])})
    with pytest.raises(ValueError, match=r"'X_noisy' must have shape \(N, 28, 28, 1\), "
                       r"received \(2, 32, 32, 1\)"):
        model({"X_noisy": np.zeros((2, 32, 32, 1), np.float32), "time": np.array([1, 2])})
    with pytest.raises(ValueError, match="'time' must hold whole numbers"):
        model({"X_noisy": x, "time": np.array([1.5, 2.0])})


# ---- training --------------------------------------------------------------------------------------

def test_fit_lowers_the_validation_loss_below_predicting_zero(subset):
    """An honest learning test: 288 Nadam steps (3 epochs of 96 batches) on real images.

    Predicting zero noise scores a Huber loss of about 0.42 on these validation batches (eps ~
    N(0, I) has E[huber(eps)] ~ 0.43). The validation loss is computed in inference mode, with
    BatchNorm's moving statistics, which need a few hundred steps (momentum 0.99) to catch up
    with the batches: measured 0.40 after 115 steps, 0.15 with batch statistics at that point.
    After 288 steps (measured on this machine: validation 0.254, training loss of the third
    epoch 0.126) both must be well below predicting zero.
    """
    X_train, X_valid = td.split_train_valid(subset[:3392], n_valid=320)
    train = td.prepare_dataset(X_train, 32, shuffle=True, seed=3)
    valid = td.prepare_dataset(X_valid, 32, seed=4)
    zero = np.mean([td.Huber()(noise, np.zeros_like(noise)).item() for _, noise in valid])
    assert 0.38 < zero < 0.48
    model = td.build_diffusion_model(seed=3)
    model.compile(loss=td.Huber(), optimizer=td.Nadam())
    history = model.fit(train, epochs=3, validation_data=valid, verbose=0)
    assert len(train) == 96 and model.optimizer.iterations == 288
    val = history.history["val_loss"][-1]
    loss = history.history["loss"][-1]
    print(f"zero-noise Huber {zero:.4f}; after 288 steps: validation {val:.4f}, "
          f"training (3rd epoch) {loss:.4f}")
    assert val < 0.7 * zero, (val, zero)
    assert loss < 0.5 * zero, (loss, zero)


def test_fit_history_callbacks_and_best_checkpoint(subset, tmp_path):
    train, valid = small_sets(subset)
    model = td.build_diffusion_model(seed=1)
    model.compile(loss=td.Huber(), optimizer=td.Nadam())
    ckpt = tmp_path / "best.npz"
    saved = []

    class Spy(td.callbacks.Callback):
        def on_epoch_end(self, epoch, logs):
            saved.append((epoch, logs["val_loss"], os.path.getmtime(ckpt) if ckpt.exists() else None))

    history = model.fit(train, epochs=3, validation_data=valid, verbose=0,
                        callbacks=[td.ModelCheckpoint(ckpt, save_best_only=True), Spy()])
    assert isinstance(history, td.History)
    assert set(history.history) == {"loss", "val_loss"} and len(history.history["loss"]) == 3
    assert history.epoch == [0, 1, 2]
    header, *_ = td.checkpoint.read_checkpoint(ckpt)
    assert header["best"] == pytest.approx(min(history.history["val_loss"]))
    # EarlyStopping with patience 0 stops as soon as val_loss fails to improve
    stopper = td.EarlyStopping(patience=0, min_delta=10.0)  # nothing improves by 10
    model.fit(train, epochs=10, validation_data=valid, verbose=0, callbacks=[stopper],
              initial_epoch=3)
    assert model.epoch == 5  # 3 before, 1 sets the best, 1 more without improvement


def test_resume_is_exact(subset, tmp_path):
    """Two epochs straight == one epoch, save, load into a fresh model, one more epoch."""
    def fresh():
        m = td.build_diffusion_model(seed=5)
        m.compile(loss=td.Huber(), optimizer=td.Nadam())
        return m

    train, valid = small_sets(subset, n_train=128, seed=7)
    straight = fresh()
    straight.fit(train, epochs=2, validation_data=valid, verbose=0)

    first = fresh()
    first.fit(train, epochs=1, validation_data=valid, verbose=0)
    td.save_checkpoint(tmp_path / "c.npz", first, first.optimizer)
    resumed = fresh()
    td.load_checkpoint(tmp_path / "c.npz", resumed, resumed.optimizer)
    assert resumed.epoch == 1
    resumed.fit(train, epochs=2, validation_data=valid, verbose=0, initial_epoch=resumed.epoch)
    assert resumed.run_history.history == straight.history.history
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_resume_mid_epoch_after_interrupt(subset, tmp_path):
    """Ctrl-C mid-epoch saves the exact state; resuming skips the batches already done."""
    def fresh():
        m = td.build_diffusion_model(seed=6)
        m.compile(loss=td.Huber(), optimizer=td.Nadam())
        return m

    train, _ = small_sets(subset, n_train=160, seed=8)  # 5 batches an epoch
    straight = fresh()
    straight.fit(train, epochs=1, verbose=0)

    interrupted = fresh()
    calls = {"n": 0}
    original = interrupted.train_step

    def flaky_step(inputs, targets):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(inputs, targets)

    interrupted.train_step = flaky_step
    ckpt = tmp_path / "latest.npz"
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(train, epochs=1, verbose=0,
                        callbacks=[td.ModelCheckpoint(ckpt, save_on_interrupt=True)])
    resumed = fresh()
    td.load_checkpoint(ckpt, resumed, resumed.optimizer)
    assert (resumed.epoch, resumed.step_in_epoch) == (0, 2)
    resumed.fit(train, epochs=1, verbose=0, initial_epoch=resumed.epoch)
    assert resumed.history.history["loss"] == pytest.approx(straight.history.history["loss"],
                                                            rel=1e-12)
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_ema_weights_average_training_and_survive_checkpoints(subset, tmp_path):
    train, _ = small_sets(subset, n_train=96, seed=9)
    model = td.build_diffusion_model(seed=8)
    model.compile(loss=td.Huber(), optimizer=td.Nadam(), ema=0.9)
    start = {n: p.data.copy() for n, p in model.named_parameters()}
    model.fit(train, epochs=1, verbose=0)  # 3 steps
    assert model.ema.steps == 3
    name = "conv_in.kernel"
    trained = model.state_dict()[name]
    shadow = model.ema.shadow[name]
    # the average lies between the start and the trained weights, not on either
    assert not np.allclose(shadow, trained) and not np.allclose(shadow, start[name])
    path = td.save_checkpoint(tmp_path / "e.npz", model, model.optimizer)
    other = td.build_diffusion_model(seed=1)
    td.load_checkpoint(path, other)
    assert other.ema.steps == 3 and other.ema.decay == 0.9
    assert other.use_ema_weights()
    np.testing.assert_array_equal(dict(other.named_parameters())[name].data, shadow)
    assert not td.build_diffusion_model(seed=1).use_ema_weights()  # none kept: False


def test_predict_and_evaluate_use_inference_mode_in_batches():
    model = td.build_diffusion_model(seed=2)
    model.compile(loss=td.Huber(), optimizer=td.Nadam())
    rng = np.random.default_rng(0)
    inputs = {"X_noisy": rng.standard_normal((5, 28, 28, 1)).astype(np.float32),
              "time": rng.integers(1, 4001, 5)}
    model.train()
    out = model.predict(inputs, batch_size=2)  # batches of 2, 2, 1
    assert out.shape == (5, 28, 28, 1) and isinstance(out, np.ndarray)
    assert model.training  # predict() returns the model in the mode it found it in
    model.eval()
    with td.no_grad():  # as predict() runs it (batch norms folded): the same arithmetic
        np.testing.assert_allclose(out, model(inputs).data, rtol=1e-5, atol=1e-6)
    assert model.predict(inputs).shape == (5, 28, 28, 1) and not model.training
    stats = model.down[0].bn1.moving_mean.copy()
    model.evaluate([(inputs, np.zeros((5, 28, 28, 1), np.float32))])
    np.testing.assert_array_equal(model.down[0].bn1.moving_mean, stats)  # eval: no updates
    assert not model.training  # a model loaded for sampling stays in inference mode
    model.train()
    model.evaluate([(inputs, np.zeros((5, 28, 28, 1), np.float32))])
    assert model.training
    with pytest.raises(RuntimeError, match="compile"):
        td.build_diffusion_model().fit([], epochs=1)


def test_recalibrate_batchnorm_averages_batch_statistics(subset):
    train, _ = small_sets(subset, n_train=96, seed=10)  # 3 batches
    model = td.build_diffusion_model(seed=3)
    bn = model.bn_in
    bn.moving_mean[:] = 123.0
    seen = []
    original = td.functional.BatchNormTrain.forward

    def spy(ctx, x, gamma, beta, eps=1e-3, stats=None):
        y = original(ctx, x, gamma, beta, eps, stats)
        if x.shape[-1] == 16 and x.shape[1] == 32:  # bn_in's input
            seen.append(stats["mean"].copy())
        return y

    before = {n: p.data.copy() for n, p in model.named_parameters()}
    td.functional.BatchNormTrain.forward = staticmethod(spy)
    try:
        assert model.recalibrate_batchnorm(train, batches=2) == 2
    finally:
        td.functional.BatchNormTrain.forward = staticmethod(original)
    assert len(seen) == 2
    np.testing.assert_allclose(bn.moving_mean, (seen[0] + seen[1]) / 2, rtol=1e-5, atol=1e-6)
    assert bn.momentum == 0.99  # restored
    model.eval()
    model.recalibrate_batchnorm(train, batches=1)
    assert not model.training  # the mode is restored too
    assert all(np.array_equal(p.data, before[n]) for n, p in model.named_parameters())  # no step


def test_ctrl_c_finishes_the_current_batch_first(subset, tmp_path):
    """A real SIGINT in the middle of a batch: that batch completes, then fit stops and saves."""
    import signal

    train, _ = small_sets(subset, n_train=160, seed=8)
    model = td.build_diffusion_model(seed=6)
    model.compile(loss=td.Huber(), optimizer=td.Nadam())
    original = model.train_step
    calls = {"n": 0}

    def step_with_signal(inputs, targets):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGINT)  # arrives mid-batch, before the update
        return original(inputs, targets)

    model.train_step = step_with_signal
    ckpt = tmp_path / "latest.npz"
    with pytest.raises(KeyboardInterrupt):
        model.fit(train, epochs=1, verbose=0,
                  callbacks=[td.ModelCheckpoint(ckpt, save_on_interrupt=True)])
    assert model.step_in_epoch == 2 and model.optimizer.iterations == 2  # batch 2 completed
    header, *_ = td.checkpoint.read_checkpoint(ckpt)
    assert header["step_in_epoch"] == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_nan_loss_stops_training_and_keeps_weights(subset):
    train, _ = small_sets(subset, n_train=64)
    model = td.build_diffusion_model(seed=2)
    model.compile(loss=lambda y, p: td.ops.mul(td.MeanSquaredError()(y, p), np.float32(np.nan)),
                  optimizer=td.Nadam())
    before = model.state_dict()
    with pytest.raises(td.TrainingDiverged, match="the loss became nan at epoch 1, batch 1"):
        model.fit(train, epochs=1, verbose=0)
    for name, value in model.state_dict().items():
        if "moving" not in name:  # the forward pass of the bad batch may update BN statistics
            np.testing.assert_array_equal(value, before[name], err_msg=name)


# ---- checkpoints ------------------------------------------------------------------------------

def test_checkpoint_round_trip_and_contents(tmp_path):
    model = td.build_diffusion_model(seed=4)
    model.compile(optimizer=td.Nadam())
    path = td.save_checkpoint(tmp_path / "m.npz", model, model.optimizer, extra={"data_seed": 9})
    with np.load(path, allow_pickle=False) as data:
        header = json.loads(str(data["header"]))
        assert header["format"] == "tinyddpm-checkpoint" and header["data_seed"] == 9
        assert header["config"]["T"] == 4000 and header["library_version"] == td.__version__
        assert "weights/down0.bn1.moving_mean" in data.files
    other = td.build_diffusion_model(seed=5)
    td.load_checkpoint(path, other)
    for (name, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]  # no temporary left
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask  # an ordinary file, not private


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    model = td.build_diffusion_model(seed=4)
    path = tmp_path / "m.npz"
    td.save_checkpoint(path, model)
    good = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        td.save_checkpoint(path, model)
    assert path.read_bytes() == good  # the old checkpoint is untouched
    assert os.listdir(tmp_path) == ["m.npz"]


def test_bad_checkpoints_are_rejected(tmp_path):
    model = td.build_diffusion_model(seed=4)
    path = tmp_path / "m.npz"
    td.save_checkpoint(path, model)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(CheckpointError, match="truncated.npz.*not a readable"):
        td.load_checkpoint(truncated, model)
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable tinyddpm checkpoint"):
        td.load_checkpoint(text, model)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a tinyddpm checkpoint"):
        td.load_checkpoint(foreign, model)
    pickled = tmp_path / "pickled.npz"
    with zipfile.ZipFile(pickled, "w") as z:
        z.writestr("header.npy", b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, "
                   b"'shape': (), }" + b" " * 60 + b"\n" + b"cos\nsystem\n")
    with pytest.raises(CheckpointError):
        td.load_checkpoint(pickled, model)
    wrong = tmp_path / "wrong.npz"
    small = nn.Sequential([nn.Dense(3)])
    small(np.zeros((1, 2), np.float32))
    td.save_checkpoint(wrong, small)
    with pytest.raises(CheckpointError, match="does not fit this model: .*missing"):
        td.load_checkpoint(wrong, model)
    with pytest.raises(CheckpointError, match="does not exist"):
        td.load_checkpoint(tmp_path / "nope.npz", model)
    bigger = td.unet.DiffusionUNet(T=1000)
    with pytest.raises(CheckpointError, match="config"):
        td.load_checkpoint(path, bigger)


# ---- generation --------------------------------------------------------------------------------

class EchoModel:
    """A stand-in noise predictor: eps_theta(x_t, t) = 0.1 x_t, recording the time steps."""

    def __init__(self, T=4000):
        self.config = {"T": T}
        self.times = []

    def __call__(self, inputs):
        self.times.append(int(inputs["time"][0]))
        assert (inputs["time"] == inputs["time"][0]).all()
        return td.Tensor(0.1 * inputs["X_noisy"])


def test_ddpm_step_against_a_hand_computed_step():
    alpha, abar, beta = diffusion.get_schedule(4000)
    t = 1234
    x = np.array([0.5, -1.0], np.float32)
    eps = np.array([0.2, 0.3], np.float32)
    z = np.array([1.0, -2.0], np.float32)
    expected = 1 / np.sqrt(alpha[t]) * (x - beta[t] / np.sqrt(1 - abar[t]) * eps) + np.sqrt(beta[t]) * z
    np.testing.assert_allclose(sampling.ddpm_step(x, eps, t, alpha, abar, beta, z), expected,
                               rtol=1e-6)


def test_generate_runs_the_slide_loop_and_is_deterministic():
    model = EchoModel(T=50)
    a = td.generate(model, batch_size=3, seed=1, progress=False)
    assert model.times == list(range(49, 0, -1))  # t = T-1 .. 1, as on the slide
    b = td.generate(EchoModel(T=50), batch_size=3, seed=1, progress=False)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (3, 28, 28, 1) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    c = td.generate(EchoModel(T=50), batch_size=3, seed=2, progress=False)
    assert not np.array_equal(a, c)
    # the same loop written out, as on the slide (with t = 1 using z = 0)
    alpha, abar, beta = diffusion.get_schedule(50)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((3, 28, 28, 1), dtype=np.float32)
    for t in range(49, 0, -1):
        noise = rng.standard_normal(X.shape, dtype=np.float32) if t > 1 else np.zeros_like(X)
        X = 1 / alpha[t] ** 0.5 * (X - beta[t] / (1 - abar[t]) ** 0.5 * 0.1 * X) + (1 - alpha[t]) ** 0.5 * noise
    np.testing.assert_allclose(a, np.clip((X + 1) / 2, 0, 1), rtol=1e-5, atol=1e-6)


def test_ddim_timesteps_and_determinism():
    ts = sampling.ddim_timesteps(4000, 50)
    assert ts[0] == 1 and ts[-1] == 1 + 49 * 80 and ts.max() < 4000 and len(ts) == 50
    model = EchoModel()
    a = td.generate_ddim(model, batch_size=2, steps=10, seed=3)
    assert model.times == list(sampling.ddim_timesteps(4000, 10)[::-1])
    np.testing.assert_array_equal(a, td.generate_ddim(EchoModel(), batch_size=2, steps=10, seed=3))
    assert np.isfinite(a).all() and a.shape == (2, 28, 28, 1)
    with pytest.raises(ValueError, match="steps"):
        sampling.ddim_timesteps(4000, 0)


def test_ddim_step_clips_and_recomputes_noise():
    x = np.array([3.0, -0.2], np.float32)
    eps = np.array([-1.0, 0.1], np.float32)
    abar_t, abar_prev = 0.25, 0.5
    x0 = np.clip((x - np.sqrt(0.75) * eps) / 0.5, -1, 1)
    eps2 = (x - 0.5 * x0) / np.sqrt(0.75)
    expected = np.sqrt(0.5) * x0 + np.sqrt(0.5) * eps2
    np.testing.assert_allclose(sampling.ddim_step(x, eps, abar_t, abar_prev), expected, rtol=1e-6)
    unclipped = np.sqrt(0.5) * (x - np.sqrt(0.75) * eps) / 0.5 + np.sqrt(0.5) * eps
    np.testing.assert_allclose(sampling.ddim_step(x, eps, abar_t, abar_prev, clip=False),
                               unclipped, rtol=1e-6)


def test_generate_with_the_real_model_is_deterministic():
    model = td.build_diffusion_model(seed=0).eval()
    a = td.generate_ddim(model, batch_size=2, steps=3, seed=5)
    b = td.generate_ddim(model, batch_size=2, steps=3, seed=5)
    np.testing.assert_array_equal(a, b)


# ---- command line ------------------------------------------------------------------------------

def test_cli_train_resume_and_sample(tmp_path, monkeypatch, capsys):
    from tinyddpm.__main__ import main

    monkeypatch.setattr(td.data, "SEARCH_DIRS", ())  # use the embedded subset
    ckpt = str(tmp_path / "ckpt.npz")
    args = ["train", "--epochs", "1", "--steps-per-epoch", "3", "--checkpoint", ckpt, "--seed",
            "1", "--ema", "0.9", "--quiet"]
    assert main(args) == 0
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["train", "--epochs", "2", "--steps-per-epoch", "3", "--checkpoint", ckpt,
                 "--resume", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Resuming from" in out and "1 epoch finished" in out
    grid, npy = tmp_path / "grid.png", tmp_path / "s.npy"
    assert main(["sample", "--checkpoint", ckpt, "--n", "4", "--steps", "3", "--seed", "0",
                 "--recalibrate", "3", "--out", str(grid), "--npy", str(npy)]) == 0
    out = capsys.readouterr().out
    assert "re-estimated for the averaged weights (3 batches)" in out
    assert "moving-average weights" in out
    samples = np.load(npy)
    assert samples.shape == (4, 28, 28) and samples.dtype == np.float32
    assert 0 <= samples.min() and samples.max() <= 1
    import matplotlib.image
    assert matplotlib.image.imread(grid).ndim == 3
    bad = tmp_path / "bad.npz"
    bad.write_text("not a checkpoint")
    assert main(["sample", "--checkpoint", str(bad)]) == 2
    assert "not a readable tinyddpm checkpoint" in capsys.readouterr().err
