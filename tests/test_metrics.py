"""Sample-quality metrics: the cross-entropy loss, FID, the shipped classifier, the evaluator."""
import json
import os

import numpy as np
import pytest

from tinyddpm import losses, metrics
from tinyddpm.data import load_subset
from tinyddpm.testing import gradcheck

FULL_DATA = "/usr/share/datasets/fashion-mnist"


# ------------------------------------------------------------------------------ cross-entropy

def test_sparse_categorical_crossentropy_value_and_gradient():
    rng = np.random.default_rng(3)
    logits = 3 * rng.standard_normal((6, 5))
    labels = rng.integers(0, 5, 6)
    loss = losses.get("sparse_categorical_crossentropy")
    assert isinstance(loss, losses.SparseCategoricalCrossentropy)
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = -np.mean(log_softmax[np.arange(6), labels])
    assert loss(labels, logits).item() == pytest.approx(expected, rel=1e-12)
    assert gradcheck(lambda z: loss(labels, z), logits)
    # stable for huge logits (a naive softmax overflows)
    big = np.array([[1000.0, 0.0], [0.0, 1000.0]])
    assert loss(np.array([0, 0]), big).item() == pytest.approx(500.0)


def test_sparse_categorical_crossentropy_rejects_bad_labels():
    loss = losses.SparseCategoricalCrossentropy(from_logits=True)
    with pytest.raises(ValueError, match=r"labels must lie in 0..2"):
        loss(np.array([0, 3]), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"labels of shape \(N,\)"):
        loss(np.array([0, 1, 2]), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="from_logits=True"):
        losses.SparseCategoricalCrossentropy(from_logits=False)


# ------------------------------------------------------------------------------ FID

def _random_psd(rng, d, rank=None):
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / d


def test_frechet_distance_against_a_direct_computation():
    rng = np.random.default_rng(0)
    d = 12
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = _random_psd(rng, d), _random_psd(rng, d)
    # Tr((S1 S2)^(1/2)) = sum of sqrt of the (real, non-negative) eigenvalues of S1 S2
    eig = np.linalg.eigvals(s1 @ s2)
    direct = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(eig.real))
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(direct, rel=1e-9)
    assert metrics.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(direct, rel=1e-9)
    scipy_linalg = pytest.importorskip("scipy.linalg")
    covmean = scipy_linalg.sqrtm(s1 @ s2).real
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-7)


def test_frechet_distance_of_a_set_with_itself_is_zero_even_when_singular():
    rng = np.random.default_rng(1)
    feats = rng.standard_normal((300, 8)) @ rng.standard_normal((8, 128))  # rank 8 of 128
    mu, sigma = metrics.feature_statistics(feats)
    scale = np.trace(sigma)
    assert metrics.frechet_distance(mu, sigma, mu, sigma) < 1e-6 * scale
    # two Gaussians that differ only in the mean: FID = ||mu1 - mu2||^2
    assert metrics.frechet_distance(mu, sigma, mu + 0.5, sigma) == pytest.approx(
        0.25 * 128, rel=1e-6, abs=1e-6 * scale)


# ------------------------------------------------------------------------------ the evaluator

@pytest.fixture(scope="module")
def subset():
    return load_subset()


def test_fid_of_real_images_with_themselves_is_zero(subset):
    (X, _), _ = subset
    model, _ = metrics.load_classifier()
    feats = model.features(X[:500, :, :, None].astype(np.float32) / 255)
    mu, sigma = metrics.feature_statistics(feats)
    assert metrics.frechet_distance(mu, sigma, mu, sigma) < 1e-6 * np.trace(sigma)


def test_fid_grows_with_blur_and_with_noise(subset):
    (X, _), _ = subset
    real = X[:800].astype(np.float32) / 255
    blur = [metrics.evaluate(metrics.gaussian_blur(real, s))["fid"] for s in (0, 0.5, 1.0, 2.0)]
    noise = [metrics.evaluate(metrics.add_noise(real, s))["fid"] for s in (0, 0.05, 0.1, 0.3)]
    assert blur[0] == noise[0]
    assert all(a < b for a, b in zip(blur, blur[1:])), blur
    assert all(a < b for a, b in zip(noise, noise[1:])), noise
    pure = metrics.evaluate(np.random.default_rng(0).random((800, 28, 28)))
    assert pure["fid"] > max(blur[-1], noise[-1])


def test_report_on_real_images_covers_every_class(subset):
    _, (X_test, y_test) = subset
    report = metrics.evaluate(X_test)  # uint8, (N, 28, 28)
    assert report["n"] == 1000 and sum(report["class_histogram"]) == 1000
    assert report["coverage"] == 10
    assert 0.85 < report["mean_confidence"] <= 1
    same = metrics.evaluate(X_test[:, :, :, None] / 255.0)  # float64, (N, 28, 28, 1)
    assert same["fid"] == pytest.approx(report["fid"], rel=1e-5)
    # a set of one class only covers one class
    one = metrics.evaluate(X_test[y_test == 1].repeat(3, axis=0))
    assert one["coverage"] == 1 and one["class_fractions"][1] > 0.9
    assert "requested_fraction" not in one


def test_requested_class_fraction(subset):
    _, (X_test, y_test) = subset
    right = metrics.evaluate(X_test, requested=y_test)
    assert right["requested_fraction"] > 0.88  # the classifier's accuracy on these images
    per_class = right["requested_fraction_per_class"]
    assert len(per_class) == 10 and all(0.5 < f <= 1 for f in per_class)
    wrong = metrics.evaluate(X_test, requested=(y_test + 1) % 10)
    assert wrong["requested_fraction"] < 0.1
    half = metrics.evaluate(X_test[y_test < 5], requested=y_test[y_test < 5])
    assert half["requested_fraction_per_class"][5:] == [None] * 5
    with pytest.raises(ValueError, match="one class per image"):
        metrics.evaluate(X_test, requested=y_test[:10])


def test_classifier_accuracy_on_the_embedded_test_images(subset):
    _, (X_test, y_test) = subset
    model, stats = metrics.load_classifier()
    assert metrics.accuracy(model, X_test, y_test) > 0.88
    assert os.path.getsize(metrics.ASSET_PATH) < 2e6
    assert stats["mu"].shape == (128,) and stats["sigma"].shape == (128, 128)


@pytest.mark.skipif(not os.path.isdir(FULL_DATA), reason="full Fashion-MNIST not installed")
def test_shipped_classifier_reaches_91_percent_on_the_full_test_set():
    from tinyddpm.data import load_fashion_mnist

    _, (X_test, y_test) = load_fashion_mnist(FULL_DATA)
    model, _ = metrics.load_classifier()
    assert metrics.accuracy(model, X_test, y_test) >= 0.91


@pytest.mark.parametrize("images, error, match", [
    (np.zeros((300, 28, 28, 3), np.float32), ValueError, r"shape \(N, 28, 28\).*got \(300, 28, 28, 3\)"),
    (np.zeros((300, 784), np.float32), ValueError, "flattened"),
    (np.zeros((300, 1, 28, 28), np.float32), ValueError, "channels first"),
    (np.zeros((199, 28, 28), np.float32), ValueError, "at least 200 images"),
    (np.full((300, 28, 28), np.nan, np.float32), ValueError, "NaN"),
    (np.full((300, 28, 28), -1.0, np.float32), ValueError, r"\(x \+ 1\) / 2"),
    (np.full((300, 28, 28), 255.0, np.float32), ValueError, "divide by 255"),
    (np.zeros((300, 28, 28), np.int64), TypeError, "uint8"),
])
def test_bad_inputs_are_rejected_with_clear_errors(images, error, match):
    with pytest.raises(error, match=match):
        metrics.evaluate(images)


def test_float_and_uint8_inputs_agree_and_tiny_overshoot_is_clipped(subset):
    (X, _), _ = subset
    a = metrics.prepare_images(X[:300])
    b = metrics.prepare_images(X[:300, :, :, None].astype(np.float64) / 255)
    np.testing.assert_allclose(a, b, atol=1e-7)
    c = metrics.prepare_images(np.full((300, 28, 28), 1.0005, np.float32))
    assert c.max() == 1.0


def test_gaussian_blur_keeps_mass_and_is_separable():
    x = np.zeros((1, 28, 28), np.float32)
    x[0, 14, 14] = 1
    y = metrics.gaussian_blur(x, 1.0)
    assert y.sum() == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(y[0], y[0].T, atol=1e-7)
    assert y[0, 14, 14] == y.max()


def test_cli_evaluate_prints_a_table_and_json(subset, tmp_path, capsys):
    _, (X_test, _) = subset
    path = tmp_path / "samples.npy"
    np.save(path, X_test[:300].astype(np.float32) / 255)
    assert metrics.main(["evaluate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "FID vs Fashion-MNIST test set" in out and "Ankle boot" in out and "coverage" in out
    assert metrics.main(["evaluate", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 300 and len(report["class_histogram"]) == 10 and report["fid"] > 0
    np.save(path, np.zeros((10, 28, 28), np.float32))
    assert metrics.main(["evaluate", str(path)]) == 2
    assert "at least 200 images" in capsys.readouterr().err


def test_add_evaluate_command_hooks_into_another_parser(tmp_path, capsys, subset):
    import argparse

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    metrics.add_evaluate_command(sub)
    path = tmp_path / "s.npy"
    np.save(path, subset[1][0][:250])
    args = parser.parse_args(["evaluate", str(path), "--json"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 250


def test_labelled_batches_are_seeded_and_train_the_classifier(subset):
    (X, y), _ = subset
    batches = metrics.LabelledBatches(X[:256], y[:256], batch_size=64, seed=5)
    assert len(batches) == 4
    first = [yb.copy() for _, yb in batches]
    assert all(np.array_equal(a, b) for a, b in zip(first, [yb for _, yb in batches]))
    batches.set_epoch(1)
    assert not np.array_equal(first[0], next(iter(batches))[1])
    xb, yb = next(iter(batches))
    assert xb.shape == (64, 28, 28, 1) and xb.dtype == np.float32 and xb.max() <= 1
    model = metrics.build_classifier(seed=0)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    history = model.fit(batches, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
