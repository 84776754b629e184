"""Class-conditional generation with classifier-free guidance."""
import numpy as np
import pytest

import tinyddpm as td
from tinyddpm.sampling import _predict_noise
from tinyddpm.unet import DiffusionUNet, dummy_inputs


def small_conditional(T=60, seed=0):
    td.set_seed(seed)
    model = DiffusionUNet(T=T, widths=(8, 16), num_classes=10)
    model.eval()
    model(dummy_inputs(model))
    # non-zero class embeddings so that labels change the prediction noticeably
    model.class_embedding.embeddings.data[:] = np.random.default_rng(seed).normal(
        0, 1, model.class_embedding.embeddings.shape).astype(np.float32)
    return model


def test_label_dropout_rate_and_kept_labels():
    y = np.random.default_rng(0).integers(0, 10, 20_000)
    X = np.zeros((20_000, 2, 2, 1), np.float32)
    inputs, _ = td.prepare_batch(X, y=y, label_dropout=0.1, rng=1)
    dropped = inputs["label"] == 10
    assert abs(dropped.mean() - 0.1) < 0.01
    np.testing.assert_array_equal(inputs["label"][~dropped], y[~dropped])
    none, _ = td.prepare_batch(X[:100], y=y[:100], label_dropout=0.0, rng=1)
    np.testing.assert_array_equal(none["label"], y[:100])
    # labels do not change the noise or the time steps drawn
    plain, noise = td.prepare_batch(X[:100], rng=1)
    with_y, noise_y = td.prepare_batch(X[:100], y=y[:100], rng=1)
    np.testing.assert_array_equal(noise, noise_y)
    np.testing.assert_array_equal(plain["time"], with_y["time"])
    with pytest.raises(ValueError, match=r"class labels in 0\.\.9"):
        td.prepare_batch(X[:2], y=np.array([0, 10]))


def test_dataset_carries_labels_in_order():
    X = np.random.default_rng(0).random((40, 4, 4)).astype(np.float32)
    y = np.arange(40) % 10
    ds = td.prepare_dataset(X, 8, shuffle=False, seed=0, labels=y, label_dropout=0.0)
    labels = np.concatenate([inputs["label"] for inputs, _ in ds])
    np.testing.assert_array_equal(labels, y)
    with pytest.raises(ValueError, match="labels must have shape"):
        td.prepare_dataset(X, 8, labels=y[:5])


def test_guidance_mixes_conditional_and_unconditional_predictions():
    model = small_conditional()
    X = np.random.default_rng(1).standard_normal((3, 28, 28, 1)).astype(np.float32)
    label = np.array([1, 7, 9])

    def eps(lab):
        with td.no_grad():
            return model({"X_noisy": X, "time": np.full(3, 20), "label": lab}).data

    cond, uncond = eps(label), eps(np.full(3, 10))
    assert np.abs(cond - uncond).max() > 1e-3
    for w in (0.0, 1.0, 3.0):
        np.testing.assert_allclose(_predict_noise(model, X, 20, label, w),
                                   uncond + w * (cond - uncond), rtol=1e-4, atol=1e-5)


def test_guidance_zero_equals_unconditional_sampling():
    model = small_conditional()
    for sample in (lambda **kw: td.generate_ddim(model, 4, steps=5, seed=3, **kw),
                   lambda **kw: td.generate(model, 4, seed=3, progress=False, **kw)):
        unconditional = sample()
        np.testing.assert_array_equal(sample(label=7, guidance=0.0), unconditional)
        assert not np.array_equal(sample(label=7, guidance=3.0), unconditional)


def test_requested_class_errors():
    with pytest.raises(ValueError, match="not class-conditional"):
        td.generate_ddim(td.build_diffusion_model(), 2, steps=2, label=3)
    with pytest.raises(ValueError, match=r"0\.\.9"):
        td.generate_ddim(small_conditional(), 2, steps=2, label=10)
    with pytest.raises(ValueError, match="'label'"):
        small_conditional()({"X_noisy": np.zeros((1, 28, 28, 1), np.float32), "time": [1]})


def test_class_names_and_numbers():
    from tinyddpm.data import class_index

    assert class_index("sneaker") == 7 and class_index("Sneakers") == 7
    assert class_index("T-shirt") == 0 and class_index("top") == 0
    assert class_index("ankle boot") == 9 and class_index("3") == 3 and class_index(8) == 8
    with pytest.raises(ValueError) as info:
        class_index("hat")
    for name in td.CLASS_NAMES:
        assert name in str(info.value)
    with pytest.raises(ValueError):
        class_index("10")


def test_cli_conditional_train_resume_and_sample(tmp_path, monkeypatch, capsys):
    from tinyddpm.__main__ import main

    monkeypatch.setattr(td.data, "SEARCH_DIRS", ())  # the embedded subset
    ckpt = str(tmp_path / "cond.npz")
    assert main(["train", "--conditional", "--epochs", "1", "--steps-per-epoch", "2",
                 "--checkpoint", ckpt, "--seed", "1", "--quiet"]) == 0
    assert "class-conditional U-Net" in capsys.readouterr().out
    # --resume keeps what the checkpoint holds, even without --conditional
    assert main(["train", "--epochs", "2", "--steps-per-epoch", "2", "--checkpoint", ckpt,
                 "--resume", "--quiet"]) == 0
    assert "class-conditional" in capsys.readouterr().out
    npy = tmp_path / "s.npy"
    assert main(["sample", "--checkpoint", ckpt, "--class", "sneaker", "--guidance", "2",
                 "--n", "3", "--steps", "2", "--out", str(tmp_path / "g.png"),
                 "--npy", str(npy)]) == 0
    out = capsys.readouterr().out
    assert "class Sneaker, guidance 2" in out and np.load(npy).shape == (3, 28, 28)
    assert main(["sample", "--checkpoint", ckpt, "--class", "all", "--n", "20", "--steps", "2",
                 "--out", str(tmp_path / "all.png"), "--npy", str(npy)]) == 0
    assert np.load(npy).shape == (20, 28, 28)
    from PIL import Image
    with Image.open(tmp_path / "all.png") as im:  # 10 rows of 2 images (28 px + 2 pad, x2)
        assert im.size == ((2 + 2 * 30) * 2, (2 + 10 * 30) * 2)
    assert main(["sample", "--checkpoint", ckpt, "--class", "hat", "--n", "2"]) == 2
    assert "Sneaker" in capsys.readouterr().err
    plain = str(tmp_path / "plain.npz")
    td.save_checkpoint(plain, td.build_diffusion_model(seed=4))
    assert main(["sample", "--checkpoint", plain, "--class", "bag", "--n", "2"]) == 2
    assert "without classes" in capsys.readouterr().err
    # fine-tuning an unconditional model into a conditional one: all but the class embedding
    tuned = str(tmp_path / "tuned.npz")
    assert main(["train", "--conditional", "--init-from", plain, "--epochs", "1",
                 "--steps-per-epoch", "1", "--learning-rate", "0", "--checkpoint", tuned,
                 "--quiet"]) == 0
    assert "new: class_embedding.embeddings" in capsys.readouterr().out
    a, b = td.checkpoint.read_checkpoint(plain)[1], td.checkpoint.read_checkpoint(tuned)[1]
    for name in a:
        if "moving" not in name:  # BatchNorm statistics move even at learning rate 0
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert main(["train", "--init-from", tuned, "--epochs", "1", "--steps-per-epoch", "1",
                 "--checkpoint", str(tmp_path / "x.npz"), "--quiet"]) == 2
    assert "does not fit this model" in capsys.readouterr().err
