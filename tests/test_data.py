"""Tests for tinyddpm.data: the IDX reader, the search order, the subset, the split."""
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from tinyddpm import data
from tinyddpm.data import (CLASS_NAMES, DataError, find_fashion_mnist, load_fashion_mnist,
                           load_subset, read_idx, split_train_valid)

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(array, type_code=0x08):
    """An IDX file's bytes, written independently of the reader."""
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write(path, payload, compress=False):
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


@pytest.fixture
def no_data_anywhere(monkeypatch, tmp_path):
    """No TINYDDPM_DATA and no system folders: the loader must fall back to the subset."""
    monkeypatch.delenv("TINYDDPM_DATA", raising=False)
    monkeypatch.setattr(data, "SEARCH_DIRS", (str(tmp_path / "nowhere"),))


def fake_dataset(directory, n_train=12, n_test=5, compress=True, seed=0):
    """Write the four files of a tiny fake Fashion-MNIST into directory; return the arrays."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        X = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n, dtype=np.uint8)
        suffix = ".gz" if compress else ""
        write(directory / f"{split}-images-idx3-ubyte{suffix}", idx_bytes(X), compress)
        write(directory / f"{split}-labels-idx1-ubyte{suffix}", idx_bytes(y), compress)
        arrays[split] = (X, y)
    return arrays


# --------------------------------------------------------------------------- read_idx

@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("shape", [(7,), (3, 28, 28), (2, 3, 4, 5)])
def test_read_idx_round_trip(tmp_path, compress, shape):
    array = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    # the extension says nothing: gzip is detected from the content
    path = write(tmp_path / "file.bin", idx_bytes(array), compress)
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == shape
    np.testing.assert_array_equal(out, array)
    out[...] = 0  # the result is writable


def assert_data_error(path, *words):
    with pytest.raises(DataError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message
    assert "apt-get install --reinstall dataset-fashion-mnist" in message
    for word in words:
        assert word in message
    return info.value


@pytest.mark.parametrize("compress", [False, True])
def test_bad_magic(tmp_path, compress):
    raw = bytearray(idx_bytes(np.zeros((2, 3), np.uint8)))
    raw[0] = 0x12
    assert_data_error(write(tmp_path / "x.idx", bytes(raw), compress), "magic")


def test_wrong_type_code(tmp_path):
    payload = idx_bytes(np.zeros((2, 3), np.uint8), type_code=0x0D)
    assert_data_error(write(tmp_path / "x.idx", payload), "0x0d", "type code")


def test_zero_dimensions_and_short_header(tmp_path):
    assert_data_error(write(tmp_path / "a.idx", bytes([0, 0, 8, 0])), "0 dimensions")
    assert_data_error(write(tmp_path / "b.idx", bytes([0, 0, 8, 3, 0, 0, 0, 5])), "header")
    assert_data_error(write(tmp_path / "c.idx", b"\x00\x00"), "too short")
    assert_data_error(write(tmp_path / "d.idx", b""), "too short")


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_payload(tmp_path, compress):
    payload = idx_bytes(np.ones((4, 28, 28), np.uint8))[:-1]
    assert_data_error(write(tmp_path / "x.idx", payload, compress), "truncated", "3136")


@pytest.mark.parametrize("compress", [False, True])
def test_extra_bytes(tmp_path, compress):
    payload = idx_bytes(np.ones((4, 5), np.uint8)) + b"\x00\x00"
    assert_data_error(write(tmp_path / "x.idx", payload, compress), "2 unexpected bytes")


def test_corrupt_gzip_crc(tmp_path):
    blob = bytearray(gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8))))
    blob[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    error = assert_data_error(write(tmp_path / "x.gz", bytes(blob)), "gzip")
    assert isinstance(error, ValueError)


def test_truncated_gzip(tmp_path):
    blob = gzip.compress(idx_bytes(np.arange(1000) % 256))
    assert_data_error(write(tmp_path / "x.gz", blob[:len(blob) // 2]), "gzip")


def test_garbled_gzip_stream(tmp_path):
    blob = bytearray(gzip.compress(np.random.default_rng(0).bytes(5000)))
    blob[20:40] = bytes(20)  # inside the deflate data
    assert_data_error(write(tmp_path / "x.gz", bytes(blob)), "gzip")


def test_missing_file(tmp_path):
    assert_data_error(tmp_path / "absent.idx", "no such file")


# --------------------------------------------------------------------------- locating and loading

@pytest.mark.parametrize("compress", [False, True])
def test_load_from_explicit_data_dir(tmp_path, compress, no_data_anywhere, capsys):
    arrays = fake_dataset(tmp_path / "fm", compress=compress)
    (X_train, y_train), (X_test, y_test) = load_fashion_mnist(tmp_path / "fm")
    np.testing.assert_array_equal(X_train, arrays["train"][0])
    np.testing.assert_array_equal(y_train, arrays["train"][1])
    np.testing.assert_array_equal(X_test, arrays["t10k"][0])
    np.testing.assert_array_equal(y_test, arrays["t10k"][1])
    assert capsys.readouterr().err == ""  # no subset notice


def test_explicit_data_dir_missing_files_is_an_error(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    fake_dataset(tmp_path / "good")
    monkeypatch.setenv("TINYDDPM_DATA", str(tmp_path / "good"))  # no fallback to it
    with pytest.raises(DataError) as info:
        load_fashion_mnist(tmp_path / "empty")
    message = str(info.value)
    assert str(tmp_path / "empty") in message
    for name in data.FILE_NAMES.values():
        assert name in message


def test_one_missing_file_makes_the_folder_incomplete(tmp_path):
    fake_dataset(tmp_path / "fm")
    (tmp_path / "fm" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        find_fashion_mnist(tmp_path / "fm")


def test_env_var_is_searched_before_system_dirs(tmp_path, monkeypatch):
    fake_dataset(tmp_path / "env", n_train=3)
    fake_dataset(tmp_path / "system", n_train=4)
    monkeypatch.setattr(data, "SEARCH_DIRS", (str(tmp_path / "system"),))
    monkeypatch.setenv("TINYDDPM_DATA", str(tmp_path / "env"))
    assert find_fashion_mnist() == tmp_path / "env"
    assert len(load_fashion_mnist()[0][0]) == 3
    fake_dataset(tmp_path / "explicit", n_train=5)
    assert len(load_fashion_mnist(tmp_path / "explicit")[0][0]) == 5
    monkeypatch.delenv("TINYDDPM_DATA")
    assert find_fashion_mnist() == tmp_path / "system"
    assert len(load_fashion_mnist()[0][0]) == 4


def test_env_var_without_the_files_is_an_error(tmp_path, monkeypatch):
    fake_dataset(tmp_path / "system")
    monkeypatch.setattr(data, "SEARCH_DIRS", (str(tmp_path / "system"),))
    monkeypatch.setenv("TINYDDPM_DATA", str(tmp_path / "wrong"))
    with pytest.raises(DataError, match="TINYDDPM_DATA"):
        load_fashion_mnist()


def test_system_dirs_in_order_and_incomplete_ones_skipped(tmp_path, monkeypatch):
    monkeypatch.delenv("TINYDDPM_DATA", raising=False)
    fake_dataset(tmp_path / "first")
    (tmp_path / "first" / "train-images-idx3-ubyte.gz").unlink()
    fake_dataset(tmp_path / "second")
    fake_dataset(tmp_path / "third")
    dirs = tuple(str(tmp_path / d) for d in ("first", "second", "third"))
    monkeypatch.setattr(data, "SEARCH_DIRS", dirs)
    assert find_fashion_mnist() == tmp_path / "second"


def test_home_dir_is_expanded(tmp_path, monkeypatch):
    monkeypatch.delenv("TINYDDPM_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    fake_dataset(tmp_path / ".keras" / "datasets" / "fashion-mnist")
    monkeypatch.setattr(data, "SEARCH_DIRS", (str(tmp_path / "nowhere"),
                                              "~/.keras/datasets/fashion-mnist"))
    assert find_fashion_mnist() == tmp_path / ".keras" / "datasets" / "fashion-mnist"


def test_corrupt_file_in_found_folder_raises_no_fallback(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TINYDDPM_DATA", raising=False)
    fake_dataset(tmp_path / "fm")
    bad = tmp_path / "fm" / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(b"garbage that is not IDX"))
    monkeypatch.setattr(data, "SEARCH_DIRS", (str(tmp_path / "fm"),))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz"):
        load_fashion_mnist()
    assert "subset" not in capsys.readouterr().err


def test_image_and_label_counts_must_agree(tmp_path):
    fake_dataset(tmp_path / "fm", compress=False)
    write(tmp_path / "fm" / "t10k-labels-idx1-ubyte", idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(DataError, match="5 images but .* 4 labels"):
        load_fashion_mnist(tmp_path / "fm")


def test_images_must_be_28x28(tmp_path):
    fake_dataset(tmp_path / "fm", compress=False)
    write(tmp_path / "fm" / "t10k-images-idx3-ubyte", idx_bytes(np.zeros((5, 28, 27), np.uint8)))
    with pytest.raises(DataError, match=r"\(N, 28, 28\)"):
        load_fashion_mnist(tmp_path / "fm")


# --------------------------------------------------------------------------- the embedded subset

def test_subset_fallback(no_data_anywhere, capsys):
    assert find_fashion_mnist() is None
    (X_train, y_train), (X_test, y_test) = load_fashion_mnist()
    assert X_train.shape == (4000, 28, 28) and X_test.shape == (1000, 28, 28)
    assert X_train.dtype == X_test.dtype == y_train.dtype == y_test.dtype == np.uint8
    assert y_train.shape == (4000,) and y_test.shape == (1000,)
    np.testing.assert_array_equal(np.bincount(y_train, minlength=10), [400] * 10)
    np.testing.assert_array_equal(np.bincount(y_test, minlength=10), [100] * 10)
    assert 60 < X_train.mean() < 90  # real garments, not noise or blanks (full set: ~72.9)
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "5,000 images" in err and "subset" in err
    assert "apt-get install dataset-fashion-mnist" in err and "TINYDDPM_DATA" in err


def test_subset_file_is_small_and_excludes_validation_images():
    assert data.SUBSET_PATH.stat().st_size < 5e6
    with np.load(data.SUBSET_PATH) as npz:
        assert npz["train_index"].max() < 55_000
        assert len(np.unique(npz["train_index"])) == 4000


def test_missing_subset_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="make-subset"):
        load_subset(tmp_path / "absent.npz")


def test_class_names():
    assert len(CLASS_NAMES) == 10
    assert CLASS_NAMES[0] == "T-shirt/top" and CLASS_NAMES[9] == "Ankle boot"


# --------------------------------------------------------------------------- split

def test_split_train_valid():
    X = np.arange(10 * 2 * 2, dtype=np.uint8).reshape(10, 2, 2) * 6
    y = np.arange(10)
    (X_train, y_train), (X_valid, y_valid) = split_train_valid(X, y, n_valid=3)
    assert X_train.dtype == X_valid.dtype == np.float32
    np.testing.assert_allclose(X_train, X[:7] / 255.0, rtol=1e-6)
    np.testing.assert_allclose(X_valid, X[7:] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y_train, np.arange(7))
    np.testing.assert_array_equal(y_valid, [7, 8, 9])
    X_train2, X_valid2 = split_train_valid(X, n_valid=3)
    np.testing.assert_array_equal(X_valid2, X_valid)


def test_split_train_valid_defaults_to_the_books_ratio():
    """5,000 of 60,000 as in the book, and the same 1/12 for the embedded subset, so the
    README's example runs on a fresh clone."""
    for n, valid in ((60_000, 5_000), (4_000, 333)):
        X_train, X_valid = split_train_valid(np.zeros((n, 1), np.uint8))
        assert (len(X_train), len(X_valid)) == (n - valid, valid)


def test_split_validation():
    X = np.zeros((10, 2, 2), np.uint8)
    with pytest.raises(ValueError, match="n_valid"):
        split_train_valid(X, n_valid=10)
    with pytest.raises(TypeError, match="uint8"):
        split_train_valid(X.astype(np.float32), n_valid=3)
    with pytest.raises(ValueError, match="labels"):
        split_train_valid(X, np.zeros(9), n_valid=3)


@pytest.mark.skipif(not SYSTEM_DIR.is_dir(), reason="Fashion-MNIST not installed system-wide")
def test_real_fashion_mnist():
    (X_train_full, y_train_full), (X_test, y_test) = load_fashion_mnist(SYSTEM_DIR)
    assert X_train_full.shape == (60000, 28, 28) and X_test.shape == (10000, 28, 28)
    assert y_train_full.shape == (60000,) and y_test.shape == (10000,)
    np.testing.assert_array_equal(np.bincount(y_train_full), [6000] * 10)
    (X_train, y_train), (X_valid, y_valid) = split_train_valid(X_train_full, y_train_full)
    assert X_train.shape == (55000, 28, 28) and X_valid.shape == (5000, 28, 28)
    assert X_train.dtype == np.float32 and 0 <= X_train.min() and X_train.max() == 1
    np.testing.assert_array_equal(y_valid, y_train_full[55000:])
    # the subset was drawn from these files
    with np.load(data.SUBSET_PATH) as npz:
        np.testing.assert_array_equal(npz["X_train"], X_train_full[npz["train_index"]])
        np.testing.assert_array_equal(npz["y_test"], y_test[npz["test_index"]])
