"""Latent diffusion: the autoencoder, the latent U-Net, sampling, the CLI and the shipped model."""
import numpy as np
import pytest

import tinyddpm as td
from tinyddpm import latent
from tinyddpm.testing import gradcheck


@pytest.fixture(scope="module")
def subset():
    (X, _), _ = td.data.load_subset()
    return X


def test_autoencoder_shapes_and_latent_scale(subset):
    ae = latent.build_autoencoder(seed=0)
    X = subset[:64]
    Z = ae.encode(X)
    assert Z.shape == (64, 7, 7, 4) and Z.dtype == np.float32
    R = ae.decode(Z)
    assert R.shape == (64, 28, 28, 1) and R.dtype == np.float32
    assert 0 <= R.min() and R.max() <= 1
    mean, std = ae.fit_latent_scale(X)
    Z = ae.encode(X)
    np.testing.assert_allclose(Z.mean(axis=(0, 1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(Z.std(axis=(0, 1, 2)), 1, rtol=1e-3)
    assert ae.latent_bound == pytest.approx(np.abs(Z).max(), rel=1e-5)
    with pytest.raises(ValueError, match=r"\(N, 7, 7, 4\)"):
        ae.decode(np.zeros((2, 7, 7, 3), np.float32))


def test_autoencoder_gradients():
    ae = latent.build_autoencoder(widths=(2, 3, 3), latent_channels=2, seed=0).astype(np.float64)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 1))  # any side divisible by 4
    assert gradcheck(lambda t: ae(t), x, wrt=ae.parameters(), max_elements=6)


def test_latent_unet_pads_and_crops_to_the_latent_shape():
    from tinyddpm.unet import DiffusionUNet, _pad_and_crop

    assert _pad_and_crop((28, 28), 3) == (((3, 3), (3, 3)), ((2, 2), (2, 2)))  # the book's
    assert _pad_and_crop((7, 7), 2) == (((1, 2), (1, 2)), ((0, 1), (0, 1)))
    net = DiffusionUNet(T=50, widths=(8, 16), image_shape=(7, 7, 4)).eval()
    y = net({"X_noisy": np.zeros((3, 7, 7, 4), np.float32), "time": np.ones(3, np.int64)})
    assert y.shape == (3, 7, 7, 4)
    # the pixel model's config (and so the shipped checkpoint) is unchanged
    assert "image_shape" not in td.build_diffusion_model().config


def small_latent_model(seed=0):
    ae = latent.build_autoencoder(widths=(4, 8, 8), seed=seed)
    return latent.build_latent_model(ae, T=100, widths=(8, 16), seed=seed)


def test_frozen_autoencoder_is_not_trained(subset):
    model = small_latent_model()
    ae_before = {k: v.copy() for k, v in model.autoencoder.state_dict().items()}
    unet_before = {k: v.copy() for k, v in model.unet.state_dict().items()}
    model.compile(loss=td.Huber(), optimizer=td.Nadam(), ema=0.9)
    Z = model.autoencoder.encode(subset[:64])
    model.fit(td.prepare_dataset(Z, 16, seed=0, scale=False, T=100), epochs=1, verbose=0)
    for k, v in model.autoencoder.state_dict().items():
        np.testing.assert_array_equal(v, ae_before[k], err_msg=k)
    assert any(not np.array_equal(v, unet_before[k]) for k, v in model.unet.state_dict().items())
    assert all(name.startswith("unet.") for name in model.ema.shadow)
    assert model.use_ema_weights()


def test_short_latent_training_lowers_the_loss(subset):
    ae = latent.build_autoencoder(widths=(8, 16, 16), seed=0)
    ae.compile(loss="mae", optimizer=td.Nadam())
    X = subset[:1024]
    before = ae.evaluate(latent.image_batches(X[:256], 64))
    ae.fit(latent.image_batches(X, 32, shuffle=True, seed=0), epochs=2, verbose=0)
    after = ae.evaluate(latent.image_batches(X[:256], 64))
    assert after < 0.7 * before
    ae.fit_latent_scale(X)
    model = latent.build_latent_model(ae, T=200, widths=(16, 32), seed=0)
    model.compile(loss=td.Huber(), optimizer=td.Nadam())
    Z = ae.encode(X)
    valid = td.prepare_dataset(Z[:256], 64, seed=1, scale=False, T=200)
    start = model.evaluate(valid)
    model.fit(td.prepare_dataset(Z, 32, shuffle=True, seed=0, scale=False, T=200), epochs=3,
              verbose=0)
    assert model.evaluate(valid) < 0.8 * start


def test_latent_sampling_is_deterministic_for_a_seed():
    model = small_latent_model().eval()
    a = td.generate_ddim(model, 3, steps=4, seed=5)
    b = td.generate_ddim(model, 3, steps=4, seed=5)
    c = td.generate_ddim(model, 3, steps=4, seed=6)
    assert a.shape == (3, 28, 28, 1) and 0 <= a.min() and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    d = td.generate(model, 2, seed=1, progress=False)
    np.testing.assert_array_equal(d, td.generate(model, 2, seed=1, progress=False))
    assert d.shape == (2, 28, 28, 1)


def test_ddim_clips_latents_to_the_model_bound():
    x = np.full((1, 2), 10.0, np.float32)
    eps = np.zeros_like(x)
    out = td.sampling.ddim_step(x, eps, 0.5, 1.0, clip=3.0)
    np.testing.assert_allclose(out, 3.0)
    np.testing.assert_allclose(td.sampling.ddim_step(x, eps, 0.5, 1.0, clip=True), 1.0)
    np.testing.assert_allclose(td.sampling.ddim_step(x, eps, 0.5, 1.0, clip=False),
                               10 / 0.5 ** 0.5, rtol=1e-6)


def test_cli_train_latent_resume_and_sample(tmp_path, monkeypatch, capsys):
    from tinyddpm.__main__ import main

    monkeypatch.setattr(td.data, "SEARCH_DIRS", ())  # the embedded subset
    ckpt = str(tmp_path / "lat.npz")
    args = ["train-latent", "--ae-epochs", "1", "--epochs", "1", "--steps-per-epoch", "3",
            "--checkpoint", ckpt, "--seed", "1", "--ema", "0.9", "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Phase 1/2" in out and "Phase 2/2" in out and "reconstruction error" in out
    assert (tmp_path / "lat.autoencoder.npz").exists() and (tmp_path / "lat.best.npz").exists()
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["train-latent", "--ae-epochs", "1", "--epochs", "2", "--steps-per-epoch", "3",
                 "--checkpoint", ckpt, "--resume", "--quiet"]) == 0
    assert "1 epoch finished" in capsys.readouterr().out
    npy = tmp_path / "s.npy"
    assert main(["sample", "--latent", "--checkpoint", ckpt, "--n", "4", "--steps", "3",
                 "--recalibrate", "2", "--out", str(tmp_path / "g.png"), "--npy", str(npy)]) == 0
    assert np.load(npy).shape == (4, 28, 28)
    # --latent is optional: the checkpoint says what it holds
    assert main(["sample", "--checkpoint", ckpt, "--n", "2", "--steps", "2", "--recalibrate",
                 "0", "--out", str(tmp_path / "g2.png")]) == 0
    pixel = str(tmp_path / "pixel.npz")
    td.save_checkpoint(pixel, td.build_diffusion_model())
    assert main(["sample", "--latent", "--checkpoint", pixel, "--n", "2"]) == 2
    assert "not a latent diffusion model" in capsys.readouterr().err
    with pytest.raises(td.CheckpointError, match="not a latent diffusion model"):
        latent.model_from_checkpoint(pixel)


def test_cli_train_latent_resumes_an_interrupted_autoencoder(tmp_path, monkeypatch, capsys):
    from tinyddpm.__main__ import main

    monkeypatch.setattr(td.data, "SEARCH_DIRS", ())
    ckpt = str(tmp_path / "lat.npz")
    # only the autoencoder phase: 1 epoch done, 2 asked for; then resume finishes both phases
    ae = latent.build_autoencoder(seed=3)
    ae.compile(loss="mae", optimizer=td.Nadam())
    (X, _), _ = td.data.load_subset()
    ae.fit(latent.image_batches(X[:64], 32), epochs=1, verbose=0)
    td.save_checkpoint(tmp_path / "lat.autoencoder.npz", ae, ae.optimizer, extra={"data_seed": 3})
    assert main(["train-latent", "--ae-epochs", "2", "--epochs", "1", "--steps-per-epoch", "2",
                 "--checkpoint", ckpt, "--resume", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Resuming the autoencoder" in out and "1 epoch finished" in out
    assert "Phase 2/2" in out


def test_shipped_autoencoder_reconstructs_real_images():
    from tinyddpm import metrics

    model = td.load_pretrained(kind="latent")
    assert model.image_shape == (7, 7, 4) and not model.training
    _, (X_test, _) = td.data.load_subset()  # test images: never seen in training
    X = X_test[:500].astype(np.float32) / 255
    R = model.autoencoder.reconstruct(X)[..., 0]
    error = np.abs(R - X).mean()
    assert error < 0.04, error  # 0.0292 on the 10,000 test images (MODEL_CARD.md)
    assert metrics.evaluate(R)["fid"] < 5  # blur sigma 1.0 scores 16.7
    Z = model.autoencoder.encode(X)
    assert abs(Z.mean()) < 0.2 and 0.8 < Z.std() < 1.2  # normalised latents
