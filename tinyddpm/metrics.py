"""Offline sample quality: a Fashion-MNIST feature network, FID and class coverage.

The feature network is a small CNN classifier built from tinyddpm's own layers and trained with
tinyddpm (``python -m tinyddpm.metrics --train`` reproduces the shipped weights: seed 0, Adam 1e-3
for 6 epochs then 1e-4 for 2, batch 64; 91.77% on the 10,000 test images). Its 128-unit
penultimate layer plays the role Inception-v3's pool layer plays for the usual FID:

    FID = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))

with (mu, S) the mean and covariance of the features of two image sets. The reference set is the
10,000 Fashion-MNIST test images; their statistics ship with the weights
(``assets/fmnist_classifier.npz``), so evaluating needs no data set.

>>> from tinyddpm.metrics import evaluate
>>> report = evaluate(images)           # (N, 28, 28) floats in [0, 1] or uint8, N >= 200
>>> report["fid"], report["mean_confidence"], report["coverage"]

FIDs from this network are NOT comparable with Inception FIDs reported elsewhere: read them
against the calibration table (``python -m tinyddpm.metrics --calibrate``, in
``assets/CALIBRATION.md``). FID is biased upwards for small sets: compare sets of equal size.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from . import nn, ops
from ._files import atomic_write
from .data import CLASS_NAMES
from .model import Model
from .tensor import no_grad

__all__ = ["FashionClassifier", "build_classifier", "load_classifier", "frechet_distance",
           "feature_statistics", "evaluate", "evaluate_file", "format_report", "gaussian_blur",
           "calibration_table", "train_classifier", "add_evaluate_command", "main"]

ASSET_PATH = Path(__file__).resolve().parent / "assets" / "fmnist_classifier.npz"
CALIBRATION_PATH = ASSET_PATH.parent / "CALIBRATION.md"
FORMAT = "tinyddpm-fmnist-classifier"
FEATURE_DIM = 128
MIN_IMAGES = 200          # below this the 128x128 covariance is too poorly estimated
COVERAGE_THRESHOLD = 0.03  # a class "is covered" when it receives at least 3% of the samples
RANGE_TOLERANCE = 1e-3    # float pixels may stray this far outside [0, 1] (then are clipped)


# ------------------------------------------------------------------------------------ the network

class FashionClassifier(Model):
    """Conv(32)-BN-ReLU-Pool, Conv(64)-BN-ReLU-Pool, Conv(128)-BN-ReLU, global average pool,
    Dense(128, relu) = the feature layer, Dense(10) = logits. Input (N, 28, 28, 1) in [0, 1]."""

    def __init__(self, name="fmnist_classifier"):
        super().__init__(name)
        L = nn
        self.body = L.Sequential([
            L.Conv2D(32, 3, padding="same"), L.BatchNormalization(), L.Activation("relu"),
            L.MaxPooling2D(2),
            L.Conv2D(64, 3, padding="same"), L.BatchNormalization(), L.Activation("relu"),
            L.MaxPooling2D(2),
            L.Conv2D(128, 3, padding="same"), L.BatchNormalization(), L.Activation("relu"),
        ])
        self.feature = L.Dense(FEATURE_DIM, activation="relu")
        self.head = L.Dense(len(CLASS_NAMES))
        self.config = {"kind": "fmnist_classifier", "feature_dim": FEATURE_DIM}

    def forward_with_features(self, x):
        h = ops.mean(self.body(x), axis=(1, 2))  # global average pool -> (N, 128)
        f = self.feature(h)
        return f, self.head(f)

    def forward(self, x):
        return self.forward_with_features(x)[1]

    def features_and_logits(self, x, batch_size=500):
        """(features (N, 128), logits (N, 10)) as float32 arrays, inference mode."""
        self.eval()
        feats, logits = [], []
        with no_grad():
            for start in range(0, len(x), batch_size):
                f, z = self.forward_with_features(x[start:start + batch_size])
                feats.append(f.data)
                logits.append(z.data)
        return np.concatenate(feats), np.concatenate(logits)

    def features(self, x, batch_size=500):
        """The 128-d feature layer for images (N, 28, 28, 1) float32 in [0, 1]."""
        return self.features_and_logits(x, batch_size)[0]


def build_classifier(seed=None):
    """A fresh classifier with its weights created (Glorot-uniform, seeded when ``seed`` is set)."""
    if seed is not None:
        nn.set_seed(seed)
    model = FashionClassifier()
    model(np.zeros((1, 28, 28, 1), np.float32))  # builds the layers, in inference mode
    return model


_CACHE = {}


def _read_asset(path):
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: the classifier weights are missing; rebuild them with "
                                "`python -m tinyddpm.metrics --train` (needs the full "
                                "Fashion-MNIST)") from None
    header = json.loads(str(data.get("header", "{}")))
    if header.get("format") != FORMAT:
        raise ValueError(f"{path}: not a tinyddpm Fashion-MNIST classifier file")
    return header, data


def load_classifier(path=ASSET_PATH):
    """(model, stats) from the shipped file: stats = {"mu", "sigma", "header"}; cached."""
    key = str(Path(path).resolve())
    if key not in _CACHE:
        header, data = _read_asset(path)
        model = build_classifier()
        model.load_state_dict({k[len("weights/"):]: v for k, v in data.items()
                               if k.startswith("weights/")})
        model.eval()
        stats = {"mu": data["feature_mean"].astype(np.float64),
                 "sigma": data["feature_cov"].astype(np.float64), "header": header}
        _CACHE[key] = (model, stats)
    return _CACHE[key]


# ------------------------------------------------------------------------------------ FID

def _sqrt_psd(matrix):
    """Symmetric square root of a symmetric positive semi-definite matrix, via eigh (float64).

    Tiny negative eigenvalues (round-off in a PSD matrix) are clipped to 0.
    """
    w, v = np.linalg.eigh((matrix + matrix.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(sigma1, sigma2):
    """Tr((S1 S2)^(1/2)) for symmetric PSD S1, S2, computed in the symmetric form

        Tr((S1 S2)^(1/2)) = Tr((S1^(1/2) S2 S1^(1/2))^(1/2))

    (S1 S2 and S1^(1/2) S2 S1^(1/2) are similar, so they share their eigenvalues; the second is
    symmetric PSD, so ``eigh`` applies and its eigenvalues are real and, after clipping the
    round-off, non-negative: no complex parts as with a general ``sqrtm``).
    """
    s1 = np.asarray(sigma1, np.float64)
    s2 = np.asarray(sigma2, np.float64)
    root1 = _sqrt_psd(s1)
    middle = root1 @ s2 @ root1
    w = np.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sum(np.sqrt(np.clip(w, 0, None))))


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):

        ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2))

    in float64; clipped at 0 (round-off can make a distance of ~0 slightly negative).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"frechet_distance: shapes do not fit: mu {mu1.shape}, {mu2.shape}; "
                         f"sigma {sigma1.shape}, {sigma2.shape}")
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    return max(float(value), 0.0)


def feature_statistics(features):
    """(mean (D,), covariance (D, D)) of features (N, D), float64, covariance with N - 1."""
    f = np.asarray(features, np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


# ------------------------------------------------------------------------------------ evaluation

def prepare_images(images, min_images=MIN_IMAGES):
    """Validate images and return them as float32 (N, 28, 28, 1) in [0, 1].

    Accepted: (N, 28, 28) or (N, 28, 28, 1); uint8 (0..255) or float in [0, 1]. Anything else
    raises a TypeError or ValueError saying what was received and what to do.
    """
    if not isinstance(images, np.ndarray):
        if hasattr(images, "data") and isinstance(images.data, np.ndarray):  # a Tensor
            images = images.data
        else:
            images = np.asarray(images)
    shape = images.shape
    if not (images.ndim in (3, 4) and shape[1:3] == (28, 28)
            and (images.ndim == 3 or shape[3] == 1)):
        hint = ""
        if images.ndim == 4 and shape[1] == 1 and shape[2:] == (28, 28):
            hint = " (channels first? use images[:, 0])"
        elif images.ndim == 2 and shape[1] == 784:
            hint = " (flattened? use images.reshape(-1, 28, 28))"
        raise ValueError(f"evaluate: expected images of shape (N, 28, 28) or (N, 28, 28, 1), "
                         f"got {shape}{hint}")
    if images.dtype == np.uint8:
        x = images.astype(np.float32) / 255
    elif images.dtype.kind == "f":
        x = images.astype(np.float32)
        if not np.isfinite(x).all():
            bad = int((~np.isfinite(x)).reshape(len(x), -1).any(axis=1).sum())
            what = "NaN" if np.isnan(x).any() else "infinite values"
            raise ValueError(f"evaluate: the images contain {what} ({bad} of {len(x)} images "
                             "affected); a sampler that diverged gives these: fix it, or drop "
                             "those images")
        lo, hi = float(x.min()), float(x.max())
        if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
            hint = " (they look like [-1, 1]: map them with (x + 1) / 2)" if lo < -0.5 else ""
            if hi > 2:
                hint = " (they look like 0..255: divide by 255, or pass uint8)"
            raise ValueError(f"evaluate: float images must lie in [0, 1], got values in "
                             f"[{lo:.4g}, {hi:.4g}]{hint}")
        x = np.clip(x, 0, 1)
    else:
        raise TypeError(f"evaluate: images must be uint8 (0..255) or float (0..1), got dtype "
                        f"{images.dtype}")
    if len(x) < min_images:
        raise ValueError(f"evaluate: at least {min_images} images are needed for a meaningful "
                         f"FID (the feature covariance is {FEATURE_DIM}x{FEATURE_DIM}), got "
                         f"{len(x)}; generate more samples")
    return x.reshape(len(x), 28, 28, 1)


def _softmax(z):
    z = z.astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def evaluate(images, batch_size=500, classifier_path=ASSET_PATH, requested=None):
    """Sample-quality figures for ``images`` against the Fashion-MNIST test set.

    ``requested`` (one class label per image, for class-conditional samples) adds
      requested_fraction            fraction of images classified as the class asked for
      requested_fraction_per_class  the same for each class (None where none was asked for)

    Returns a dict:
      fid              Fréchet distance of the classifier's 128-d features to the test set's
      mean_confidence  mean over images of the classifier's top softmax probability
      class_histogram  10 counts of predicted classes (order of ``CLASS_NAMES``)
      class_fractions  the same divided by n
      coverage         number of classes predicted for at least 3% of the images
      n                number of images
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or \
            batch_size < 1:
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    x = prepare_images(images)
    model, stats = load_classifier(classifier_path)
    feats, logits = model.features_and_logits(x, batch_size)
    mu, sigma = feature_statistics(feats)
    probs = _softmax(logits)
    predicted = probs.argmax(axis=1)
    hist = np.bincount(predicted, minlength=len(CLASS_NAMES))
    fractions = hist / len(x)
    extra = {}
    if requested is not None:
        requested = np.asarray(requested)
        if requested.shape != (len(x),):
            raise ValueError(f"requested must hold one class per image ({len(x)}), got shape "
                             f"{requested.shape}")
        hit = predicted == requested
        extra = {"requested_fraction": float(hit.mean()),
                 "requested_fraction_per_class": [float(hit[requested == c].mean())
                                                  if np.any(requested == c) else None
                                                  for c in range(len(CLASS_NAMES))]}
    return {
        "fid": frechet_distance(mu, sigma, stats["mu"], stats["sigma"]),
        "mean_confidence": float(probs.max(axis=1).mean()),
        "class_histogram": [int(c) for c in hist],
        "class_fractions": [float(f) for f in fractions],
        "coverage": int(np.sum(fractions >= COVERAGE_THRESHOLD)),
        "n": int(len(x)),
        **extra,
    }


def load_images_file(path):
    """Images from a ``.npy`` file (or a ``.npz`` with one array, or an ``images`` array).
    Nothing pickled is ever loaded.

    Raises
    ------
    FileNotFoundError, ValueError
        The file is missing, a folder, or not a NumPy array file (the message says which).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give the .npy file of images (from "
                         "`python -m tinyddpm sample --npy FILE`)")
    if not path.is_file():
        raise ValueError(f"{path} is not a regular file (a pipe or a device?)")
    from .checkpoint import other_model_file

    other = other_model_file(str(path))
    if other is not None:
        raise ValueError(f"{path} is a model, not images: evaluate measures images that a model "
                         "generated (`python -m tinyddpm sample --checkpoint CKPT --n 1000 "
                         f"--npy samples.npy`); this file is {other}")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY" and magic[:2] != b"PK":
        raise ValueError(f"{path} is not a NumPy .npy/.npz file (another kind of file, or "
                         "empty); save images with `python -m tinyddpm sample --npy FILE` or "
                         "numpy.save")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        why = str(e)
        if "pickle" in why:  # NumPy's message advises loading it unsafely: never
            why = "it holds pickled Python objects, which tinyddpm never loads (that could run code)"
        raise ValueError(f"{path}: not a readable .npy/.npz array file ({why})") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            if "images" in data.files:
                return data["images"]
            if len(data.files) == 1:
                return data[data.files[0]]
            if "header" in data.files and any(k.startswith("weights/") for k in data.files):
                from .checkpoint import checkpoint_kind, describe_kind

                try:
                    header = json.loads(str(data["header"]))
                    kind = checkpoint_kind(header) if isinstance(header, dict) else "other"
                except (ValueError, RecursionError):
                    header, kind = {}, "other"
                if kind in ("book", "conditional", "improved", "latent"):
                    raise ValueError(f"{path} is a tinyddpm checkpoint (a model), not images: "
                                     "sample from it first, `python -m tinyddpm sample "
                                     f"--checkpoint {path} --n 1000 --npy samples.npy`, then "
                                     "evaluate samples.npy")
                raise ValueError(f"{path} is a tinyddpm checkpoint, not images: it "
                                 f"{describe_kind(str(path), header)}")
            shown = ", ".join(data.files[:5]) + (", ..." if len(data.files) > 5 else "")
            raise ValueError(f"{path}: an .npz with {len(data.files)} arrays ({shown}); name the "
                             "images array 'images' or save a .npy")
    return data


def evaluate_file(path, batch_size=500):
    """:func:`evaluate` on the images saved in ``path`` (e.g. ``sample --npy samples.npy``)."""
    return evaluate(load_images_file(path), batch_size=batch_size)


def format_report(report, title=None):
    """A plain-text table of :func:`evaluate`'s figures."""
    lines = [title] if title else []
    lines += [f"images                          {report['n']:>8,}",
              f"FID vs Fashion-MNIST test set   {report['fid']:>8.2f}",
              f"mean classifier confidence      {report['mean_confidence']:>8.3f}",
              f"class coverage (>= {COVERAGE_THRESHOLD:.0%} each)    "
              f"{report['coverage']:>5}/{len(CLASS_NAMES)}",
              "",
              f"{'class':<14}{'count':>8}{'fraction':>10}"]
    for name, count, frac in zip(CLASS_NAMES, report["class_histogram"],
                                 report["class_fractions"]):
        mark = "" if frac >= COVERAGE_THRESHOLD else "  (under 3%)"
        lines.append(f"{name:<14}{count:>8,}{frac:>10.1%}{mark}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ training

class LabelledBatches:
    """Re-iterable (images NHWC float32, labels int64) batches, reshuffled every epoch.

    ``set_epoch(k)`` (called by ``Model.fit``) fixes epoch k's order to ``seed + k``, so a run
    is reproducible. ``flip=True`` mirrors a random half of each batch left-right.
    """

    def __init__(self, X, y, batch_size=64, shuffle=True, seed=0, flip=False):
        X = np.asarray(X)
        if X.dtype == np.uint8:
            X = X.astype(np.float32) / 255
        self.X = X.reshape(len(X), 28, 28, 1).astype(np.float32, copy=False)
        self.y = np.asarray(y).astype(np.int64)
        if len(self.X) != len(self.y):
            raise ValueError(f"{len(self.X)} images but {len(self.y)} labels")
        self.batch_size, self.shuffle, self.seed, self.flip = int(batch_size), shuffle, seed, flip
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        return -(-len(self.X) // self.batch_size)

    def __iter__(self):
        rng = np.random.default_rng(self.seed + self.epoch)
        order = rng.permutation(len(self.X)) if self.shuffle else np.arange(len(self.X))
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            xb = self.X[idx]
            if self.flip:
                mirror = rng.random(len(idx)) < 0.5
                xb[mirror] = xb[mirror, :, ::-1]
            yield xb, self.y[idx]


def accuracy(model, X, y, batch_size=500):
    """Fraction of images whose predicted class is the label (X uint8 or float, any 28x28 layout)."""
    x = LabelledBatches(X, y).X
    _, logits = model.features_and_logits(x, batch_size)
    return float(np.mean(logits.argmax(axis=1) == np.asarray(y)))


def train_classifier(epochs=6, seed=0, out=ASSET_PATH, batch_size=64, learning_rate=1e-3,
                     decay_epochs=2, data_dir=None, verbose=1, limit=None, continue_from=None):
    """Train the classifier on the 60,000 training images, measure it on the 10,000 test images
    and write weights + test-set feature statistics to ``out``. Returns the test accuracy.

    Adam(learning_rate) for ``epochs`` epochs, then a fresh Adam(learning_rate / 10) for
    ``decay_epochs`` more. ``continue_from`` (a file this function wrote after ``epochs`` epochs
    with the same seed and settings) skips the first phase: the result is the same as one run.
    ``limit`` trains on the first ``limit`` images only (quick trials; never for the shipped file).
    """
    from .data import find_fashion_mnist, load_fashion_mnist
    from .optimizers import Adam

    if data_dir is None and find_fashion_mnist() is None:
        raise SystemExit("training the reference classifier needs the full Fashion-MNIST "
                         "(apt-get install dataset-fashion-mnist, or --data-dir)")
    (X_train, y_train), (X_test, y_test) = load_fashion_mnist(data_dir)
    if limit:
        X_train, y_train = X_train[:limit], y_train[:limit]
    model = build_classifier(seed)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=Adam(learning_rate=learning_rate))
    batches = LabelledBatches(X_train, y_train, batch_size, shuffle=True, seed=seed)
    start = time.perf_counter()
    took_before = 0.0
    if continue_from:
        header, data = _read_asset(continue_from)
        if (header["seed"], header["epochs"], header["batch_size"], header["learning_rate"],
                header.get("decay_epochs", 0)) != (seed, epochs, batch_size, learning_rate, 0):
            raise SystemExit(f"--continue-from {continue_from}: it was trained with other settings "
                             f"({header})")
        model.load_state_dict({k[len("weights/"):]: v for k, v in data.items()
                               if k.startswith("weights/")})
        model.epoch = epochs
        model.run_history = type(model.run_history)({"loss": list(header["loss_history"])})
        took_before = header["train_seconds"]
    else:
        model.fit(batches, epochs=epochs, verbose=verbose)
    if decay_epochs:
        model.optimizer = Adam(learning_rate=learning_rate / 10)
        model.fit(batches, epochs=epochs + decay_epochs, initial_epoch=epochs, verbose=verbose)
    history = model.run_history
    took = time.perf_counter() - start + took_before
    x_test = LabelledBatches(X_test, y_test).X
    feats, logits = model.features_and_logits(x_test)
    acc = float(np.mean(logits.argmax(axis=1) == y_test))
    mu, sigma = feature_statistics(feats)
    header = {"format": FORMAT, "seed": seed, "epochs": epochs, "decay_epochs": decay_epochs,
              "batch_size": batch_size, "learning_rate": learning_rate, "optimizer": "Adam",
              "n_train": int(len(X_train)), "n_test": int(len(X_test)),
              "test_accuracy": acc, "train_seconds": round(took, 1),
              "loss_history": history.history.get("loss", [])}
    arrays = {f"weights/{k}": v.astype(np.float32) for k, v in model.state_dict().items()}
    arrays.update(feature_mean=mu, feature_cov=sigma, header=np.array(json.dumps(header)))
    out = Path(out)
    atomic_write(out, lambda f: np.savez_compressed(f, **arrays))
    _CACHE.clear()
    print(f"trained {epochs} + {decay_epochs} epochs on {len(X_train):,} images in {took:.0f} s; "
          f"test accuracy {acc:.4f} on {len(X_test):,} images; wrote {out} "
          f"({out.stat().st_size / 1e6:.2f} MB)")
    return acc


# ------------------------------------------------------------------------------------ calibration

def gaussian_blur(images, sigma):
    """Separable Gaussian blur of (N, 28, 28) images (zero padding: the background is black).

    The kernel is exp(-k^2 / (2 sigma^2)) for |k| <= ceil(3 sigma), normalised to sum 1.
    """
    x = np.asarray(images, np.float32)
    if sigma <= 0:
        return x.copy()
    r = int(np.ceil(3 * sigma))
    k = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).astype(np.float32)
    padded = np.pad(x, ((0, 0), (r, r), (0, 0)))
    x = sum(k[i] * padded[:, i:i + x.shape[1], :] for i in range(2 * r + 1))
    padded = np.pad(x, ((0, 0), (0, 0), (r, r)))
    return sum(k[i] * padded[:, :, i:i + x.shape[2]] for i in range(2 * r + 1))


def add_noise(images, std, seed=0):
    """images + N(0, std^2) noise, clipped to [0, 1]."""
    rng = np.random.default_rng(seed)
    x = np.asarray(images, np.float32)
    return np.clip(x + std * rng.standard_normal(x.shape).astype(np.float32), 0, 1)


def calibration_sets(X_train, seed=0, sizes=(1000, 10000)):
    """[(name, images float32 (N, 28, 28))]: real training images and degraded copies of the
    largest set (blur sigma 1 and 2, noise std 0.1 and 0.3), then pure uniform noise."""
    rng = np.random.default_rng(seed)
    sizes = [min(s, len(X_train)) for s in sizes]
    pick = rng.choice(len(X_train), max(sizes), replace=False)
    real = X_train[pick].astype(np.float32) / 255
    out = [("real training images", real[:s]) for s in sizes]
    big = real[:max(sizes)]
    out += [("blurred, sigma 1.0", gaussian_blur(big, 1.0)),
            ("blurred, sigma 2.0", gaussian_blur(big, 2.0)),
            ("noise added, std 0.1", add_noise(big, 0.1, seed + 1)),
            ("noise added, std 0.3", add_noise(big, 0.3, seed + 2)),
            ("pure noise, uniform [0, 1]",
             rng.random((max(sizes), 28, 28), dtype=np.float32))]
    return out


def calibration_table(data_dir=None, seed=0, sizes=(1000, 10000)):
    """The Markdown calibration table (set, n, FID, mean confidence, coverage)."""
    from .data import load_fashion_mnist

    (X_train, _), _ = load_fashion_mnist(data_dir)
    _, stats = load_classifier()
    acc = stats["header"].get("test_accuracy")
    rows = ["| set | n | FID | mean confidence | coverage |", "|---|---:|---:|---:|---:|"]
    for name, images in calibration_sets(X_train, seed, sizes):
        r = evaluate(images)
        rows.append(f"| {name} | {r['n']:,} | {r['fid']:.2f} | {r['mean_confidence']:.3f} | "
                    f"{r['coverage']}/10 |")
    note = (f"FID of the classifier's 128-d feature layer against the 10,000 Fashion-MNIST test "
            f"images (classifier test accuracy {acc:.2%}). Degraded sets are the "
            f"{max(min(s, len(X_train)) for s in sizes):,} real images above, blurred or with "
            f"Gaussian noise added (clipped to [0, 1]); seed {seed}. Measured with "
            f"`python -m tinyddpm.metrics --calibrate`.")
    return "\n".join(rows) + "\n\n" + note + "\n"


READING_GUIDE = """
How to read it: the scale is this network's own (its 128 ReLU features are small numbers), so
these FIDs are not comparable with the Inception FIDs of papers. Real images score ~0 (the rows
of real images show the small-sample bias: compare sets of the same size, at least 1,000 images).
A light blur or a little noise already costs 15-20; heavy degradation 40-55; noise ~75. The mean
confidence alone is no quality measure (the classifier is confidently wrong on pure noise, over
99% of which it calls "Bag"): read it with the coverage and the class histogram.
"""


# ------------------------------------------------------------------------------------ command line

def _evaluate_command(args):
    from ._cli import UsageError

    try:
        if args.nll:
            return _nll_command(args)
        given = [flag for flag, value in NLL_OPTIONS.items() if getattr(args, value) not in
                 (None, False)]
        if given:
            raise UsageError(f"{given[0]} applies to --nll (the likelihood of a model): add "
                             "--nll, or drop it")
        if args.samples is None:
            raise UsageError("evaluate needs the images to measure (samples.npy, from `sample "
                             "--npy`), or --nll --checkpoint FILE to measure a model's "
                             "likelihood")
        report = evaluate_file(args.samples, batch_size=args.batch_size or 500)
    except (OSError, ValueError, TypeError, UsageError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({**report, "class_names": list(CLASS_NAMES)}, indent=2))
    else:
        print(format_report(report, title=f"{args.samples}:"))
    return 0


# evaluate's options that apply only with --nll: {flag: attribute}
NLL_OPTIONS = {"--checkpoint": "checkpoint", "--pretrained": "pretrained", "--n": "n",
               "--steps": "steps", "--variance": "variance", "--seed": "seed", "--no-clip": "no_clip",
               "--no-ema": "no_ema", "--recalibrate": "recalibrate", "--data-dir": "data_dir"}


def _nll_command(args):
    """``evaluate --nll``: the variational bound in bits/dim of a model on the first --n test
    images; every check before the model runs."""
    import argparse
    import contextlib

    from ._cli import UsageError
    from .checkpoint import read_checkpoint
    from .data import load_fashion_mnist
    from .likelihood import bits_per_dim, format_bpd
    from .pretrained import PRETRAINED, model_from_checkpoint

    if args.samples is not None:
        raise UsageError(f"--nll measures a model on test images, not the images "
                         f"{args.samples!r}: drop {args.samples!r} (or drop --nll to measure "
                         "the images' FID)")
    if (args.checkpoint is None) == (args.pretrained is None):
        raise UsageError("--nll needs --checkpoint FILE (a model you trained) or --pretrained "
                         "book|conditional|improved (a shipped model)")
    path = args.checkpoint or str(PRETRAINED[args.pretrained])
    from .__main__ import _expect, _weights_for_use

    _expect(path, read_checkpoint(path)[0], ("book", "conditional", "improved"), "evaluate --nll")
    n = 1000 if args.n is None else args.n
    _, (X_test, _) = load_fashion_mnist(args.data_dir)
    if n > len(X_test):
        raise UsageError(f"--n {n}: there are {len(X_test):,} test images"
                         f"{' (the embedded subset)' if len(X_test) < 10_000 else ''}")
    model, header = model_from_checkpoint(path)
    if args.steps is not None and args.steps > model.config["T"]:
        raise UsageError(f"--steps {args.steps}: the model has T = {model.config['T']} time "
                         "steps; give at most that many")
    if args.variance is not None and getattr(model, "learns_sigma", False):
        raise UsageError(f"--variance {args.variance}: {path!r} holds a model that learned its "
                         "variance, which the bound uses: drop --variance")
    has_average = model.ema is not None and model.ema.shadow is not None
    with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):  # JSON alone
        used_ema = _weights_for_use(argparse.Namespace(
            no_ema=args.no_ema, recalibrate=args.recalibrate, checkpoint=path,
            data_dir=args.data_dir if has_average and not args.no_ema else None), model)
    model.eval()
    start = time.perf_counter()
    report = bits_per_dim(model, X_test[:n], variance=args.variance,
                          clip=not args.no_clip, batch_size=args.batch_size or 100,
                          seed=0 if args.seed is None else args.seed, progress=True,
                          steps=args.steps)
    took = time.perf_counter() - start
    weights = "moving-average weights" if used_ema else "weights"
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "per_image"} |
                         {"terms": report["terms"].tolist(), "checkpoint": path,
                          "seconds": round(took, 1)}, indent=2))
    else:
        print(format_bpd(report, title=f"{path} ({weights}, epoch {header.get('epoch')}), "
                                       f"the first {n:,} test images, {took:.0f} s:"))
    return 0


def add_evaluate_command(subparsers):
    """Register ``evaluate samples.npy [--json]`` (the FID of images) and ``evaluate --nll
    --checkpoint FILE`` (a model's likelihood) on an argparse ``add_subparsers()`` object."""
    from ._cli import HelpFormatter, whole_number
    from .likelihood import VARIANCES

    p = subparsers.add_parser(
        "evaluate", help="FID, confidence and class coverage of generated images; or a "
        "model's likelihood in bits/dim (--nll)",
        formatter_class=HelpFormatter,
        description="Measure generated images (an (N, 28, 28) .npy, floats in [0, 1] or uint8, "
        f"N >= {MIN_IMAGES}) with the shipped Fashion-MNIST classifier: FID of its feature layer "
        "against the test set, mean classifier confidence, class histogram and coverage "
        "(classes with at least 3% of the images). Read the FID against "
        "tinyddpm/assets/CALIBRATION.md.\n\n"
        "With --nll, measure a model instead: the variational bound on its negative "
        "log-likelihood of the first --n Fashion-MNIST test images, in bits per dimension "
        "(prior L_T + the KL terms + the discretised decoder L_0; Nichol & Dhariwal 2021). It "
        "calls the model at every one of its T time steps for each batch of images: about 5 "
        "minutes of one core per 100 images for the book's model (T = 4000).",
        epilog="examples:\n"
        "  python -m tinyddpm evaluate samples.npy\n"
        "  python -m tinyddpm evaluate --nll --pretrained book --n 100\n"
        "  python -m tinyddpm evaluate --nll --checkpoint ckpt.npz --variance beta_tilde")
    p.add_argument("samples", nargs="?", default=None,
                   help="the .npy file of images, e.g. from `sample --npy` (not with --nll)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--batch-size", type=whole_number(1, 1000), default=None,
                   help="images the classifier (or with --nll, the model) sees at a time, up to "
                   "1,000 "
                   "(default: 500; with --nll: 100, which also fixes the noise drawn)")
    nll = p.add_argument_group("likelihood (with --nll)")
    nll.add_argument("--nll", action="store_true",
                     help="measure a model's variational bound in bits/dim on test images")
    which = nll.add_mutually_exclusive_group()
    which.add_argument("--checkpoint", default=None, metavar="FILE",
                       help="a model you trained (`train`)")
    which.add_argument("--pretrained", choices=["book", "conditional", "improved"], default=None,
                       help="a shipped model (a conditional one is measured without a class)")
    nll.add_argument("--n", type=whole_number(1), default=None,
                     help="measure the first N test images (default: 1000)")
    nll.add_argument("--variance", choices=list(VARIANCES), default=None,
                     help="the reverse process's fixed variance: beta_t or the posterior's "
                     "beta_tilde_t (default: beta)")
    nll.add_argument("--steps", type=whole_number(1), default=None,
                     help="the bound of the model sampled in this many ancestral steps (the "
                     "iddpm sampler's time steps, betas respaced; one model call a step and "
                     "batch) (default: all T)")
    nll.add_argument("--no-clip", action="store_true",
                     help="do not clip the model's x_0 estimate to [-1, 1] (the papers' "
                     "bound clips it; unclipped, the first jumps of a chain of few --steps "
                     "can cost thousands of bits/dim)")
    nll.add_argument("--seed", type=whole_number(0, 2**31 - 1), default=None,
                     help="seed of the noise draws (default: 0)")
    from .__main__ import _average_options

    _average_options(nll, "folder with the IDX files (default: the usual places, then the "
                          "embedded subset)")
    p.set_defaults(func=_evaluate_command)
    return p


def main(argv=None):
    from ._cli import parser as new_parser, whole_number

    parser = new_parser(
        "python -m tinyddpm.metrics",
        "Sample-quality metrics: evaluate images, train the reference classifier (--train), or "
        "print the calibration table (--calibrate).")
    parser.add_argument("--train", action="store_true",
                        help=f"train the classifier and write {ASSET_PATH.name}")
    parser.add_argument("--calibrate", action="store_true",
                        help="print the calibration table and write CALIBRATION.md")
    parser.add_argument("--epochs", type=whole_number(1), default=6,
                        help="--train: epochs at the full rate")
    parser.add_argument("--decay-epochs", type=whole_number(0), default=2,
                        help="--train: then this many epochs at a tenth of the rate")
    parser.add_argument("--continue-from", default=None,
                        help="--train: start the decay epochs from a file written by a run with "
                             "the same seed and --epochs (and no decay epochs)")
    parser.add_argument("--seed", type=whole_number(0, 2**32 - 1), default=0,
                        help="--train: seed for weights and data order")
    parser.add_argument("--out", default=None, help="output path for --train / --calibrate "
                        "(default: the shipped asset / CALIBRATION.md)")
    parser.add_argument("--data-dir", default=None, help="folder with the four IDX files "
                        "(default: the usual places, then the embedded subset)")
    parser.add_argument("--limit", type=whole_number(1), default=None,
                        help="--train on the first N training images only (quick trials)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command")
    add_evaluate_command(sub)
    args = parser.parse_args(argv)
    if args.command == "evaluate":
        return args.func(args)
    if args.train:
        train_classifier(epochs=args.epochs, seed=args.seed, out=args.out or ASSET_PATH,
                         decay_epochs=args.decay_epochs, data_dir=args.data_dir,
                         verbose=0 if args.quiet else 1, limit=args.limit,
                         continue_from=args.continue_from)
        return 0
    if args.calibrate:
        table = calibration_table(args.data_dir, seed=args.seed)
        print(table)
        out = Path(args.out or CALIBRATION_PATH)
        text = "# What a FID from `tinyddpm.metrics` means\n\n" + table + READING_GUIDE
        atomic_write(out, lambda f: f.write(text), binary=False)
        print(f"wrote {out}")
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
