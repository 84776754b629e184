"""Fashion-MNIST: the IDX reader, where the data lives, the embedded subset, the split.

The book (Géron, *Hands-On Machine Learning*, 3rd ed., ch. 17) loads Fashion-MNIST with
``tf.keras.datasets.fashion_mnist.load_data()``, scales the pixels to [0, 1] by /255 and keeps
the last 5,000 of the 60,000 training images as the validation set. This module does the same
from the four IDX files, with no download:

>>> (X_train_full, y_train_full), (X_test, y_test) = load_fashion_mnist()
>>> (X_train, y_train), (X_valid, y_valid) = split_train_valid(X_train_full, y_train_full)

Where the files are looked for, in order:

1. ``data_dir``, when given (no fallback: missing files there are an error);
2. ``$TINYDDPM_DATA``, when set (no fallback either: a wrong setting is an error);
3. ``/usr/share/datasets/fashion-mnist`` (the ``dataset-fashion-mnist`` package);
4. ``~/.keras/datasets/fashion-mnist`` (where Keras downloads it).

A folder counts only if it holds all four files (each either gzipped or raw). A default place
(3, 4) that cannot be read (permissions) is skipped with a one-line notice; damaged files there
are an error that names the file and the fix. When no
folder does, the loader falls back to a small subset shipped with the package (4,000 training and
1,000 test images) and says so in one line on stderr.
"""
import gzip
import math
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "CLASS_NAMES", "DataError", "read_idx", "find_fashion_mnist", "load_fashion_mnist",
    "load_subset", "split_train_valid", "make_subset",
]

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def class_index(name_or_number):
    """The label of a class given by number (0-9) or name, any case: ``class_index("sneaker")``
    is 7; "t-shirt", "top", "ankle boot", "trousers" work too. A ValueError lists the classes."""
    value = str(name_or_number).strip()
    if value.isdigit() and int(value) < len(CLASS_NAMES):
        return int(value)

    def norm(text):
        return "".join(c for c in text.lower() if c.isalnum())

    wanted = norm(value)
    for i, name in enumerate(CLASS_NAMES):
        forms = {norm(name), *(norm(part) for part in name.split("/"))}
        if wanted in forms or wanted.rstrip("s") in forms:
            return i
    choices = ", ".join(f"{i} {name}" for i, name in enumerate(CLASS_NAMES))
    raise ValueError(f"unknown class {name_or_number!r}; the ten Fashion-MNIST classes are: "
                     f"{choices} (give the name or the number)")

#: The folders searched after ``data_dir`` and ``$TINYDDPM_DATA`` ("~" expanded at call time).
SEARCH_DIRS = ("/usr/share/datasets/fashion-mnist", "~/.keras/datasets/fashion-mnist")

#: The four files, by role; each may also carry a ``.gz`` suffix.
FILE_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

SUBSET_PATH = Path(__file__).resolve().parent / "assets" / "fashion_mnist_subset.npz"

INSTALL_HINT = ("`apt-get install dataset-fashion-mnist`, or set TINYDDPM_DATA to a folder "
                "holding the four IDX files")
REINSTALL_HINT = ("reinstall it with `apt-get install --reinstall dataset-fashion-mnist` "
                  "(or download the file again)")


class DataError(ValueError):
    """A data file is missing, corrupt or not what it should be.

    The message names the file and says how to fix it.
    """


# --------------------------------------------------------------------------- IDX files

_GZIP_MAGIC = b"\x1f\x8b"
_IDX_UBYTE = 0x08
_IDX_TYPES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "int16",
              0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}


def read_idx(path):
    """Read an IDX file of unsigned bytes, gzipped or raw, into a uint8 array.

    The IDX format (LeCun's MNIST format) is a 4-byte magic number, then one big-endian
    uint32 per dimension, then the data, C order::

        0x00 0x00 <type code> <ndim> | dim_0 ... dim_{ndim-1} | prod(dims) bytes

    Only type code 0x08 (unsigned byte) is supported, which is what (Fashion-)MNIST uses.
    Gzip compression is detected from the content (the 0x1f 0x8b magic), not the file name.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    numpy.ndarray
        uint8 array of shape ``dims`` (a fresh, writable array).

    Raises
    ------
    DataError
        When the file is unreadable, the gzip stream is corrupt, the magic number or type
        code is wrong, the header is cut short, or the payload is not exactly prod(dims) bytes.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if raw[:2] == _GZIP_MAGIC:
        raw = _gunzip(raw, path)
    return _parse_idx(raw, path)


class _Unreadable(DataError):
    """A data file that exists but cannot be read (permissions)."""


def _read_bytes(path):
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file. Check the path, or {REINSTALL_HINT}.") from None
    except OSError as exc:
        raise _Unreadable(f"{path}: cannot be read ({exc.strerror or exc}). "
                          "Check that it is a readable file.") from exc


def _gunzip(raw, path):
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DataError(f"{path}: corrupt gzip stream ({exc}); the file is damaged or "
                        f"incomplete: {REINSTALL_HINT}.") from exc


def _parse_idx(raw, path):
    def fail(what):
        return DataError(f"{path}: {what}; {REINSTALL_HINT}.")

    if len(raw) < 4:
        raise fail(f"only {len(raw)} bytes, too short for an IDX header")
    zero0, zero1, type_code, ndim = raw[:4]
    if zero0 != 0 or zero1 != 0:
        raise fail(f"not an IDX file (magic number starts 0x{zero0:02x} 0x{zero1:02x}, "
                   "expected 0x00 0x00)")
    if type_code != _IDX_UBYTE:
        kind = _IDX_TYPES.get(type_code, "unknown")
        raise fail(f"IDX type code 0x{type_code:02x} ({kind}) is not supported, "
                   "only 0x08 (unsigned byte)")
    if ndim == 0:
        raise fail("IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise fail(f"header cut short: {ndim} dimensions need {header_len} header bytes, "
                   f"the file has {len(raw)}")
    dims = struct.unpack(f">{ndim}I", raw[4:header_len])
    expected = math.prod(dims)
    payload = len(raw) - header_len
    if payload < expected:
        raise fail(f"truncated: dimensions {dims} need {expected} data bytes, found {payload}")
    if payload > expected:
        raise fail(f"{payload - expected} unexpected bytes after the {expected} data bytes "
                   f"of dimensions {dims}")
    return np.frombuffer(raw, np.uint8, count=expected, offset=header_len).reshape(dims).copy()


# --------------------------------------------------------------------------- locating the data

def _data_files(directory):
    """The four files in ``directory`` (role -> Path), or None unless all four exist. A folder
    that cannot be read raises OSError."""
    files = {}
    for role, name in FILE_NAMES.items():
        found = [directory / n for n in (name, name + ".gz") if (directory / n).is_file()]
        if not found:
            return None
        files[role] = found[0]
    return files


def _require_data(directory, origin):
    directory = Path(directory).expanduser()
    try:
        files = _data_files(directory)
    except OSError as exc:
        raise DataError(f"{origin}: {directory} cannot be read ({exc.strerror or exc}); check "
                        "its permissions, or point to another folder") from None
    if files is None:
        expected = ", ".join(f"{n}[.gz]" for n in FILE_NAMES.values())
        raise DataError(f"{origin}: {directory} does not hold the Fashion-MNIST files "
                        f"(expected {expected}). Point it at the right folder, or install "
                        f"the data with {INSTALL_HINT}.")
    return directory


def find_fashion_mnist(data_dir=None):
    """The folder that holds the four Fashion-MNIST IDX files, or None.

    Searches ``data_dir``, then ``$TINYDDPM_DATA``, then :data:`SEARCH_DIRS`. An explicit
    ``data_dir`` or ``$TINYDDPM_DATA`` that lacks a file raises :class:`DataError` rather than
    falling back. None means the loader will use the embedded subset.

    Returns
    -------
    pathlib.Path or None
    """
    if data_dir is not None:
        return _require_data(data_dir, f"data_dir={str(data_dir)!r}")
    env = os.environ.get("TINYDDPM_DATA")
    if env:
        return _require_data(env, f"TINYDDPM_DATA={env!r}")
    for directory in _default_places():
        return directory
    return None


def _default_places():
    """The folders of :data:`SEARCH_DIRS` that hold the four files, in order. One that cannot
    be read (no permission) is skipped with a notice: the user never named it."""
    for candidate in SEARCH_DIRS:
        directory = Path(candidate).expanduser()
        try:
            found = _data_files(directory) is not None
        except OSError as exc:
            _skip_notice(directory, exc.strerror or exc)
            continue
        if found:
            yield directory


def _skip_notice(directory, why):
    print(f"tinyddpm: skipped {directory} ({why}); looking further", file=sys.stderr)


# --------------------------------------------------------------------------- loading

def load_fashion_mnist(data_dir=None):
    """Load Fashion-MNIST as uint8 arrays, like ``tf.keras.datasets.fashion_mnist.load_data()``.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Folder holding the four IDX files. By default the search described in the module
        docstring; when it finds nothing, the embedded subset is returned and a one-line
        notice goes to stderr. Call :func:`find_fashion_mnist` to know which one you get.

    Returns
    -------
    (X_train_full, y_train_full), (X_test, y_test)
        Images uint8 (N, 28, 28) in 0..255, labels uint8 (N,) in 0..9 (see CLASS_NAMES).
        60,000 + 10,000 images for the full set, 4,000 + 1,000 for the subset.

    Raises
    ------
    DataError
        When a file found is corrupt, or an explicit location lacks the files.
    """
    if data_dir is not None or os.environ.get("TINYDDPM_DATA"):
        return _load_folder(find_fashion_mnist(data_dir))
    for directory in _default_places():
        try:
            return _load_folder(directory)
        except _Unreadable as exc:  # a default place the user never named: go on, say why
            _skip_notice(directory, exc)  # (damaged files there are an error: reinstall them)
    (X_train, y_train), (X_test, y_test) = load_subset()
    print(f"tinyddpm: Fashion-MNIST not found, using the embedded subset of "
          f"{len(X_train) + len(X_test):,} images ({len(X_train):,} train, "
          f"{len(X_test):,} test); for the full 70,000: {INSTALL_HINT}.", file=sys.stderr)
    return (X_train, y_train), (X_test, y_test)


def _load_folder(directory):
    files = _data_files(directory)
    train = _load_pair(files["train_images"], files["train_labels"])
    test = _load_pair(files["test_images"], files["test_labels"])
    return train, test


def _load_pair(images_path, labels_path):
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{images_path}: images of shape {images.shape}, expected "
                        f"(N, 28, 28); {REINSTALL_HINT}.")
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: labels of shape {labels.shape}, expected (N,); "
                        f"{REINSTALL_HINT}.")
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds "
                        f"{len(labels)} labels; the files do not belong together: "
                        f"{REINSTALL_HINT}.")
    if labels.size and labels.max() >= len(CLASS_NAMES):
        raise DataError(f"{labels_path}: label {labels.max()} outside 0..9; {REINSTALL_HINT}.")
    return images, labels


def load_subset(path=SUBSET_PATH):
    """Load the embedded subset: ((X_train, y_train), (X_test, y_test)), uint8.

    4,000 training images (400 a class, drawn from the first 55,000 so none of the book's
    validation images is among them) and 1,000 test images (100 a class), in their original
    order. Built by :func:`make_subset`.
    """
    path = Path(path)
    rebuild = ("reinstall tinyddpm, or rebuild the subset with "
               "`python -m tinyddpm.data --make-subset` where the full data is installed")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in ("X_train", "y_train", "X_test", "y_test")}
    except FileNotFoundError:
        raise DataError(f"{path}: the embedded subset is missing; {rebuild}.") from None
    except (OSError, ValueError, KeyError, zlib.error) as exc:
        raise DataError(f"{path}: the embedded subset is unreadable ({exc}); {rebuild}.") from exc
    for split in ("train", "test"):
        X, y = arrays[f"X_{split}"], arrays[f"y_{split}"]
        if (X.dtype != np.uint8 or y.dtype != np.uint8 or X.ndim != 3
                or X.shape[1:] != (28, 28) or y.shape != (len(X),)):
            raise DataError(f"{path}: the {split} arrays have the wrong shape or dtype; {rebuild}.")
    return (arrays["X_train"], arrays["y_train"]), (arrays["X_test"], arrays["y_test"])


def split_train_valid(X_train_full, y=None, n_valid=None):
    """The book's split: the last ``n_valid`` training images are the validation set.

    Pixels are scaled to float32 in [0, 1]: ``X = X_uint8 / 255``.

    Parameters
    ----------
    X_train_full : numpy.ndarray of uint8, shape (N, ...)
    y : numpy.ndarray, shape (N,), optional
        Labels, split the same way (kept as they are).
    n_valid : int, optional
        Size of the validation set, 0 < n_valid < N. By default ``N // 12``: 5,000 of 60,000
        as in the book, and the same ratio for the embedded subset (333 of its 4,000).

    Returns
    -------
    (X_train, X_valid) when ``y`` is None, else ((X_train, y_train), (X_valid, y_valid)).
    """
    if not isinstance(X_train_full, np.ndarray) or X_train_full.dtype != np.uint8:
        raise TypeError("X_train_full must be a uint8 numpy array (pixels 0..255), got "
                        f"{type(X_train_full).__name__} {getattr(X_train_full, 'dtype', '')}")
    n = len(X_train_full)
    if n_valid is None:
        n_valid = n // 12
    if isinstance(n_valid, bool) or not isinstance(n_valid, (int, np.integer)):
        raise TypeError(f"n_valid must be an int, got {type(n_valid).__name__}")
    if not 0 < n_valid < n:
        raise ValueError(f"n_valid={n_valid} must be between 1 and {n - 1} for {n} images; "
                         f"for a small set try n_valid={max(1, n // 12)}")
    X = X_train_full.astype(np.float32) / 255
    X_train, X_valid = X[:-n_valid], X[-n_valid:]
    if y is None:
        return X_train, X_valid
    y = np.asarray(y)
    if y.shape[:1] != (n,):
        raise ValueError(f"y has {y.shape[:1]} labels but X_train_full has {n} images")
    return (X_train, y[:-n_valid]), (X_valid, y[-n_valid:])


# --------------------------------------------------------------------------- the embedded subset

def make_subset(data_dir=None, out=SUBSET_PATH, n_train=4000, n_test=1000, n_valid=5000, seed=42):
    """Build the embedded subset from the full data and save it with ``np.savez_compressed``.

    Draws ``n_train // 10`` training images a class from the first ``60,000 - n_valid``
    (so the book's validation images are not leaked into it) and ``n_test // 10`` test images
    a class, with ``np.random.default_rng(seed)``; keeps them in their original order.
    Saves uint8 ``X_train, y_train, X_test, y_test`` and the chosen indices
    ``train_index, test_index`` (int32) for provenance.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    directory = find_fashion_mnist(data_dir)
    if directory is None:
        raise DataError(f"making the subset needs the full Fashion-MNIST: {INSTALL_HINT}.")
    (X_train, y_train), (X_test, y_test) = load_fashion_mnist(directory)
    rng = np.random.default_rng(seed)
    train_index = _balanced_choice(y_train[:len(y_train) - n_valid], n_train, rng)
    test_index = _balanced_choice(y_test, n_test, rng)
    from ._files import atomic_write

    arrays = dict(X_train=X_train[train_index], y_train=y_train[train_index],
                  X_test=X_test[test_index], y_test=y_test[test_index],
                  train_index=train_index.astype(np.int32), test_index=test_index.astype(np.int32))
    return Path(atomic_write(out, lambda f: np.savez_compressed(f, **arrays)))


def _balanced_choice(labels, n, rng):
    per_class = n // len(CLASS_NAMES)
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
             for c in range(len(CLASS_NAMES))]
    return np.sort(np.concatenate(picks))


def _main(argv=None):
    from ._cli import parser as new_parser, whole_number

    parser = new_parser("python -m tinyddpm.data", "Fashion-MNIST utilities: where the data is "
                        "found, and (--make-subset) the embedded subset.")
    parser.add_argument("--make-subset", action="store_true",
                        help="build the embedded subset from the full data")
    parser.add_argument("--data-dir", help="folder with the four IDX files")
    parser.add_argument("--out", default=str(SUBSET_PATH), help="where to write the subset")
    parser.add_argument("--seed", type=whole_number(0, 2**32 - 1), default=42,
                        help="seed of the subset's balanced draw")
    args = parser.parse_args(argv)
    if args.make_subset:
        out = make_subset(args.data_dir, args.out, seed=args.seed)
        print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    else:
        print(f"Fashion-MNIST folder: {find_fashion_mnist(args.data_dir) or 'not found (subset)'}")


if __name__ == "__main__":
    _main()
