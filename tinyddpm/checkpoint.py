"""Checkpoints: one ``.npz`` file, no pickle, written atomically.

Inside: ``weights/<name>`` (parameters and BatchNorm statistics), ``optimizer/<key>`` (step count
and moments), ``ema/<key>`` (the moving average of the weights, if kept) and ``header``, a JSON string: format tag, library version, model config, the
schedule's T, epoch and batch reached, history, the data seed and the RNG state. It is written to
a temporary file in the same folder, flushed to disk, then renamed over the target, so a crash
never leaves a half-written checkpoint. Loading uses ``allow_pickle=False``: it never runs code.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile

import numpy as np

from . import __version__

FORMAT = "tinyddpm-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, damaged, foreign, or does not fit the model."""


def save_checkpoint(path, model, optimizer=None, extra=None):
    """Write ``model`` (and ``optimizer``) to ``path`` atomically. ``extra`` joins the header."""
    path = os.fspath(path)
    header = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "library_version": __version__,
        "model_class": type(model).__name__, "config": getattr(model, "config", {}),
        "epoch": int(getattr(model, "epoch", 0)),
        "step_in_epoch": int(getattr(model, "step_in_epoch", 0)),
        "partial_loss_sum": float(getattr(model, "_partial_loss_sum", 0.0)),
        "partial_samples": int(getattr(model, "_partial_samples", 0)),
        "history": getattr(getattr(model, "run_history", None), "history", {}),
        "optimizer_class": type(optimizer).__name__ if optimizer is not None else None,
        **(extra or {}),
    }
    arrays = {f"weights/{k}": v for k, v in model.state_dict().items()}
    if optimizer is not None:
        arrays.update({f"optimizer/{k}": np.asarray(v) for k, v in optimizer.state_dict().items()})
    if getattr(model, "ema", None) is not None:
        arrays.update({f"ema/{k}": v for k, v in model.ema.state_dict().items()})
    arrays["header"] = np.array(json.dumps(header))
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it normal permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_checkpoint(path):
    """(header, weights, optimizer state, EMA state) dicts from a checkpoint file, validated."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    try:
        with open(path, "rb") as f:
            if f.read(2) != b"PK":  # every .npz is a zip archive
                raise CheckpointError(f"{path!r} is not a readable tinyddpm checkpoint: it is "
                                      "not an .npz archive (another kind of file, or empty)")
        with np.load(path, allow_pickle=False) as data:
            if "header" not in data.files:
                raise CheckpointError(f"{path!r} is an .npz file but not a tinyddpm checkpoint "
                                      "(it has no header)")
            header = json.loads(str(data["header"]))
            weights = {k[len("weights/"):]: data[k] for k in data.files if k.startswith("weights/")}
            opt = {k[len("optimizer/"):]: data[k] for k in data.files if k.startswith("optimizer/")}
            ema = {k[len("ema/"):]: data[k] for k in data.files if k.startswith("ema/")}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, json.JSONDecodeError) as e:
        why = f"{type(e).__name__}: {e}"
        if "pickle" in why:  # NumPy's own message advises loading it unsafely: never
            why = "it holds pickled Python objects, which tinyddpm never loads (that could run code)"
        raise CheckpointError(f"{path!r} is not a readable tinyddpm checkpoint (damaged, truncated "
                              f"or another kind of file): {why}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is not a tinyddpm checkpoint (format tag "
                              f"{header.get('format') if isinstance(header, dict) else header!r})")
    if header.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path!r} was written by a newer tinyddpm "
                              f"({header.get('library_version')}); upgrade to read it")
    return header, weights, opt, ema


def load_checkpoint(path, model, optimizer=None):
    """Load weights (and optimizer state, epoch, history) from ``path`` into ``model``.

    Returns the header. The model must have the architecture the checkpoint was saved from.
    """
    from .model import History

    header, weights, opt, ema = read_checkpoint(path)
    config = getattr(model, "config", {})
    if header.get("config") and config and header["config"] != config:
        raise CheckpointError(f"{path!r} holds a model with config {header['config']}, but this "
                              f"model has {config}")
    try:
        model.load_state_dict(weights)
    except ValueError as e:
        raise CheckpointError(f"{path!r} does not fit this model: {e}") from None
    if optimizer is not None and opt:
        try:
            trained = [p for _, p in model.named_trainable_parameters()]
            optimizer.load_state_dict(opt, params=trained)
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{path!r}: optimizer state does not fit: {e}") from None
    if ema and hasattr(model, "ema"):
        from .model import ExponentialMovingAverage

        model.ema = model.ema or ExponentialMovingAverage(float(ema["decay"]))
        model.ema.load_state_dict(ema)
    if hasattr(model, "epoch"):
        model.epoch = header.get("epoch", 0)
        model.step_in_epoch = header.get("step_in_epoch", 0)
        model._partial_loss_sum = header.get("partial_loss_sum", 0.0)
        # files from before the batch-size weighting: sum of batch losses, one "sample" a batch
        model._partial_samples = header.get("partial_samples", model.step_in_epoch)
        model.run_history = History(header.get("history"))
        model.history = History(header.get("history"))
    return header
