"""Checkpoints: one ``.npz`` file, no pickle, written atomically.

Inside: ``weights/<name>`` (parameters and BatchNorm statistics), ``optimizer/<key>`` (step count
and moments), ``ema/<key>`` (the moving average of the weights, if kept) and ``header``, a JSON
string: format tag, library version, model config (with its schedule: kind, T and parameters),
epoch and batch reached, the batch size, history, and what the trainer adds (the command line's
data seed and run options). It is written atomically (:func:`tinyddpm._files.atomic_write`), so a
crash or a full disk never leaves a half-written checkpoint nor destroys the previous one. Loading
uses ``allow_pickle=False`` (it never runs code) and validates every header field and array.
"""
from __future__ import annotations

import json
import math
import os
import zipfile

import numpy as np

from . import __version__
from ._files import WriteError, atomic_write, in_assets  # noqa: F401 (WriteError: what a save raises)
from .schedule import schedule_spec

FORMAT = "tinyddpm-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, damaged, foreign, or does not fit the model."""


def save_checkpoint(path, model, optimizer=None, extra=None):
    """Write ``model`` (and ``optimizer``) to ``path`` atomically. ``extra`` joins the header.

    Raises
    ------
    WriteError
        The file could not be written (disk full, permission): the message names it and says
        why; a previous file at ``path`` is unchanged.
    """
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
        **({"batch_size": model.batch_size_trained} if getattr(model, "batch_size_trained", None)
           else {}),
        **(extra or {}),
    }
    arrays = {f"weights/{k}": v for k, v in model.state_dict().items()}
    if optimizer is not None:
        arrays.update({f"optimizer/{k}": np.asarray(v) for k, v in optimizer.state_dict().items()})
    if getattr(model, "ema", None) is not None:
        arrays.update({f"ema/{k}": v for k, v in model.ema.state_dict().items()})
    arrays["header"] = np.array(json.dumps(header))
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def read_checkpoint(path):
    """(header, weights, optimizer state, EMA state) dicts from a checkpoint file, validated:
    every header field has its type and range, every array is numeric and finite, weights and
    averages are floats.

    Raises
    ------
    CheckpointError
        The file is missing, not a checkpoint, damaged, or holds a field or an array that is
        wrong; the message names the file and the field.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path!r} is a folder; give the .npz file in it")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} is not a regular file (a pipe or a device?)")
    other = other_model_file(path)
    if other is not None:
        raise CheckpointError(f"{path!r} is {other}")
    try:
        with open(path, "rb") as f:
            if f.read(2) != b"PK":  # every .npz is a zip archive
                raise CheckpointError(f"{path!r} is not a readable tinyddpm checkpoint: it is "
                                      "not an .npz archive (another kind of file, or empty)")
        _check_members(path)  # names and sizes, from the archive's index: before any reading
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
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, RecursionError,
            json.JSONDecodeError) as e:
        why = f"{type(e).__name__}: {e}"
        if "pickle" in why:  # NumPy's own message advises loading it unsafely: never
            why = "it holds pickled Python objects, which tinyddpm never loads (that could run code)"
        raise CheckpointError(f"{path!r} is not a readable tinyddpm checkpoint (damaged, truncated "
                              f"or another kind of file): {why}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is not a tinyddpm checkpoint (format tag "
                              f"{header.get('format') if isinstance(header, dict) else header!r})")
    _check_header(path, header)
    for group, arrays, floats in (("weights", weights, True), ("optimizer", opt, False),
                                  ("ema", ema, True)):
        for key, value in arrays.items():
            _check_array(path, f"{group}/{key}", value, floats and key not in ("steps", "decay"))
    for group, arrays in (("weights", weights), ("ema", ema), ("optimizer", opt)):
        for key, value in arrays.items():
            if (key.endswith("moving_variance") or (group == "optimizer" and key.startswith(
                    "v/"))) and value.size and value.min() < 0:
                raise CheckpointError(f"{path!r}: {group}/{key} holds negative values, which a "
                                      "variance cannot; the file is damaged or was edited")
    for name, value, ok, expected in (
            ("optimizer/iterations", opt.get("iterations"), _whole_array, "a whole number >= 0"),
            ("optimizer/learning_rate", opt.get("learning_rate"), lambda v: v.shape == () and
             v >= 0, "a number >= 0"),
            ("ema/steps", ema.get("steps"), _whole_array, "a whole number >= 0"),
            ("ema/decay", ema.get("decay"), lambda v: v.shape == () and 0 < v < 1,
             "a number in (0, 1)")):
        if value is not None and not ok(value):
            raise CheckpointError(f"{path!r}: {name} must be {expected}, got {value!r}; the "
                                  "file is damaged or was edited")
    return header, weights, opt, ema


def file_kind(path):
    """What a model file that is not a tinyddpm checkpoint holds, read from its bytes alone
    (nothing imported, nothing unpickled): "tinyddpm-torch" (a zip in torch.save's layout whose
    pickle names tinyddpm's format: ``save_torch``, ``export --to torch``,
    ``examples/train_torch_ddp.py``), "torch" (another torch.save file), "tinyddpm-onnx" (an
    ONNX model with tinyddpm's metadata: ``to_onnx``), "onnx" (another ONNX model, by its
    first bytes and its .onnx suffix), or None (anything else, a checkpoint included)."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            if head == b"PK":
                with zipfile.ZipFile(f) as archive:
                    pickles = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "data.pkl"]
                    if not pickles or any(n.startswith("header") for n in archive.namelist()):
                        return None
                    with archive.open(pickles[0]) as pickled:  # read as bytes, never unpickled
                        return "tinyddpm-torch" if b"tinyddpm-torch" in pickled.read(2**20) \
                            else "torch"
            # an ONNX ModelProto opens with its ir_version: field 1, a small varint
            if len(head) == 2 and head[0] == 0x08 and 1 <= head[1] <= 100:
                f.seek(max(0, os.path.getsize(path) - 2**16))  # the metadata comes last
                if b"tinyddpm-onnx" in f.read():
                    return "tinyddpm-onnx"
                return "onnx" if path.lower().endswith(".onnx") else None
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return None
    return None


def other_model_file(path):
    """None for a file that is not a PyTorch or ONNX model (see :func:`file_kind`); else what it
    is and which tool reads it, as the end of a sentence "'path' is ..."."""
    from ._cli import command

    kind = file_kind(path)
    if kind in ("tinyddpm-torch", "torch"):
        out = os.path.splitext(os.path.basename(path))[0] + ".npz"
        if kind == "tinyddpm-torch":
            return ("a PyTorch file (from `export --to torch` or examples/train_torch_ddp.py), "
                    "not a tinyddpm checkpoint: convert it first with `" + command(
                        "python", "-m", "tinyddpm", "export", "--checkpoint", path, "--to",
                        "tinyddpm", "--out", out) + "`, and give the .npz")
        return ("a PyTorch file, but not one of tinyddpm's (no tinyddpm header): a state_dict of "
                "a tinyddpm model's twin loads in Python, tinyddpm.export.from_torch(torch.load("
                f"{path!r}, weights_only=True), model=<a built tinyddpm model>)")
    if kind in ("tinyddpm-onnx", "onnx"):
        how = (f"run it in Python, td.sample(tinyddpm.export.OnnxModel({path!r}), 64)"
               if kind == "tinyddpm-onnx" else "wrap its session as a function, "
               "td.sample(lambda inputs: ..., T=..., schedule=...)")
        return ("an ONNX model, not a tinyddpm checkpoint: the command line reads the .npz "
                f"checkpoint it was exported from (or the .pt, through `export --to tinyddpm`); "
                f"to sample the ONNX file, {how}")
    return None


# What an archive may hold, checked before its arrays are read (a hostile file could ask for a
# 20,000 x 20,000 array in a few MB of zip): the groups of save_checkpoint, and sizes in
# elements far above those of any model the builders make (a 512-channel 3x3 convolution has
# 2.4 million weights; a whole 512-channel improved U-Net with its optimizer and average, ~200
# million numbers).
GROUPS = ("header", "weights/", "optimizer/", "ema/")
MAX_ARRAY = 2 ** 24
MAX_TOTAL = 2 ** 28


def _check_members(path):
    """Refuse an archive with members outside GROUPS, or arrays above MAX_ARRAY elements each or
    MAX_TOTAL in all, reading only each array's header (its first bytes)."""
    total = 0
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        names = [m.filename[:-len(".npy")] if m.filename.endswith(".npy") else m.filename
                 for m in members]
        if "header" not in names:
            raise CheckpointError(f"{path!r} is an .npz file but not a tinyddpm checkpoint (it "
                                  "has no header)")
        for info, name in zip(members, names):
            if not (name == "header" or name.startswith(GROUPS[1:])):
                raise CheckpointError(f"{path!r} is not a tinyddpm checkpoint: it holds {name!r}"
                                      ", which none has (only a header and weights/, optimizer/, "
                                      "ema/ arrays); the file was written by another program or "
                                      "edited")
            with archive.open(info) as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape = read(f)[0]
            size = math.prod(shape)
            total += size
            if size > MAX_ARRAY:
                raise CheckpointError(f"{path!r}: {name} has shape {shape}, more than "
                                      f"{MAX_ARRAY:,} numbers, far beyond any tinyddpm model; the "
                                      "file was not written by tinyddpm or was edited")
            if total > MAX_TOTAL:
                raise CheckpointError(f"{path!r} holds more than {MAX_TOTAL:,} numbers, far beyond "
                                      "any tinyddpm model; the file was not written by tinyddpm "
                                      "or was edited")


def _whole_array(value):
    return value.shape == () and value.dtype.kind in "iu" and value >= 0


def _check_header(path, header):
    """Every field tinyddpm reads from a header, of its type and in its range."""
    def fail(field, expected):
        raise CheckpointError(f"{path!r}: the header field {field!r} must be {expected}, got "
                              f"{header[field]!r}; the file is damaged or was edited")

    def whole(value):
        return _whole(value) and value >= 0

    def number(value):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and \
            math.isfinite(value)

    version = header.get("format_version", 1)
    if not whole(version) or version < 1:
        fail("format_version", "a whole number >= 1")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path!r} has format version {version}, and this tinyddpm "
                              f"({__version__}) reads up to {FORMAT_VERSION}: it was written by "
                              "a newer tinyddpm (upgrade to read it), or edited")
    checks = {"epoch": (lambda v: whole(v) and v <= 10**6, "a whole number in 0..1,000,000"),
              "step_in_epoch": (whole, "a whole number >= 0"),
              "partial_samples": (whole, "a whole number >= 0"),
              "data_seed": (whole, "a whole number >= 0"),
              "batch_size": (lambda v: whole(v) and v >= 1, "a whole number >= 1"),
              "partial_loss_sum": (number, "a finite number"),
              "best": (lambda v: v is None or number(v), "a finite number or null"),
              "config": (lambda v: v is None or isinstance(v, dict), "a JSON object"),
              "run": (lambda v: isinstance(v, dict), "a JSON object"),
              "model_class": (lambda v: isinstance(v, str), "a string"),
              "history": (lambda v: isinstance(v, dict) and all(
                  isinstance(k, str) and isinstance(x, list) and all(number(e) for e in x)
                  for k, x in v.items()), "an object of lists of finite numbers"),
              "optimizer_class": (lambda v: v is None or isinstance(v, str), "a string")}
    for field, (ok, expected) in checks.items():
        if field in header and not ok(header[field]):
            fail(field, expected)
    losses = (header.get("history") or {}).get("loss")
    if losses is not None and len(losses) != header.get("epoch", 0):
        raise CheckpointError(f"{path!r}: the history holds {len(losses)} epochs of loss but the "
                              f"header says {header.get('epoch', 0)} epochs finished; the file is "
                              "damaged or was edited")
    for where, config in _model_configs(header):
        _check_config(path, where, config)
    config = header.get("config")
    model = config.get("model") if isinstance(config, dict) else None
    if (header.get("model_class"), model == "improved") in (("DiffusionUNet", True),
                                                            ("ImprovedUNet", False)):
        raise CheckpointError(f"{path!r}: the header's model_class {header['model_class']!r} and "
                              f"its config (model {model!r}) disagree; the file is damaged or "
                              "was edited")


MAX_WIDTH = 512  # channels of a U-Net level (the improved builder's bound too): 512 at each
#                 level is already ~100x the default improved U-Net's weights

# The fields of a diffusion U-Net's config: (check, what it must be). The bounds keep a damaged
# or edited file from asking for a model that cannot be built (an embedding of 1e9 numbers).
_CONFIG_FIELDS = {
    "T": (lambda v: _whole(v) and 1 <= v <= 100_000, "a whole number in 1..100,000"),
    "embed_size": (lambda v: _whole(v) and 2 <= v <= 1024 and v % 2 == 0,
                   "an even whole number in 2..1024"),
    "widths": (lambda v: isinstance(v, list) and 1 <= len(v) <= 6 and
               all(_whole(w) and 2 <= w <= MAX_WIDTH for w in v),
               f"a list of 1 to 6 widths in 2..{MAX_WIDTH}"),
    "num_classes": (lambda v: _whole(v) and 1 <= v <= 1000, "a whole number in 1..1,000"),
    "image_shape": (lambda v: isinstance(v, list) and len(v) == 3 and
                    all(_whole(d) and 1 <= d <= 4096 for d in v), "a list [H, W, C]"),
}
# ... and those of the improved U-Net (unet_improved.py), whose config says "model": "improved"
_IMPROVED_FIELDS = {
    "attention": (lambda v: isinstance(v, list) and all(s in (28, 14, 7) for s in v),
                  "a list of sides among 28, 14, 7"),
    "heads": (lambda v: _whole(v) and 1 <= v <= 64, "a whole number in 1..64"),
    "dropout": (lambda v: isinstance(v, float) and 0 <= v < 1, "a number in [0, 1)"),
    "groups": (lambda v: _whole(v) and 1 <= v <= 64, "a whole number in 1..64"),
    "learn_sigma": (lambda v: v is True, "true (or absent)"),
}


def _whole(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _model_configs(header):
    """(where, config) of each diffusion U-Net the header describes."""
    config = header.get("config")
    if header.get("model_class") in ("DiffusionUNet", "ImprovedUNet"):
        return [("config", config if isinstance(config, dict) else {})]
    if isinstance(config, dict) and config.get("latent"):
        return [("config.unet", config.get("unet"))]
    return []


def _check_config(path, where, config):
    if not isinstance(config, dict):
        raise CheckpointError(f"{path!r}: {where} must be a JSON object, got {config!r}; the "
                              "file is damaged or was edited")
    if "model" in config and config["model"] != "improved":
        raise CheckpointError(f"{path!r}: {where}.model must be \"improved\" (or absent, for the "
                              f"book's U-Net), got {config['model']!r}; the file is damaged or "
                              "was edited")
    improved = config.get("model") == "improved"
    required = ("T", "widths", *((f for f in _IMPROVED_FIELDS if f != "learn_sigma")
                                 if improved else ("embed_size",)))
    for field, (ok, expected) in {**_CONFIG_FIELDS, **_IMPROVED_FIELDS}.items():
        if field in config or field in required:
            if field not in config:
                raise CheckpointError(f"{path!r}: {where}.{field} is missing; the file is "
                                      "damaged or was edited")
            if not ok(config[field]):
                raise CheckpointError(f"{path!r}: {where}.{field} must be {expected}, got "
                                      f"{config[field]!r}; the file is damaged or was edited")
    if improved:  # fields that are each in range may still not go together (heads, widths)
        from .unet_improved import check_options

        try:
            check_options(config["widths"], config["attention"], config["heads"],
                          config["dropout"], config["groups"])
        except ValueError as e:
            raise CheckpointError(f"{path!r}: {where}: {str(e).split(': ', 1)[-1]}; the file is "
                                  "damaged or was edited") from None
    try:
        schedule_spec(config.get("schedule"))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path!r}: the config's schedule is not valid: {e}") from None


def _check_array(path, name, value, floats, advice="load an earlier checkpoint (e.g. the "
                 ".best.npz beside it)"):
    """A stored array is numeric (a float type where ``floats``) and finite; ``advice``: what to
    do about NaN or infinite values."""
    if value.dtype.kind not in ("f" if floats else "fiub"):
        raise CheckpointError(f"{path!r}: {name} has dtype {value.dtype}, not "
                              f"{'a float' if floats else 'a number'} type; the file is damaged "
                              "or was not written by tinyddpm")
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise CheckpointError(f"{path!r}: {name} holds NaN or infinite values, so the model "
                              f"cannot be used; {advice}")


def _normalized(config):
    """A config with the fields of later versions filled in as they were then: a model config
    without "schedule" was trained with the cosine schedule."""
    if not isinstance(config, dict):
        return config
    out = {k: _normalized(v) for k, v in config.items()}
    if "schedule" not in out and ("embed_size" in out or out.get("latent")):
        out["schedule"] = schedule_spec(None)
    return out


KINDS = {
    "book": ("the book's U-Net",
             "python -m tinyddpm train --resume --epochs {epochs} --checkpoint {path}",
             "python -m tinyddpm sample --checkpoint {path}"),
    "conditional": ("a class-conditional U-Net",
                    "python -m tinyddpm train --resume --epochs {epochs} --checkpoint {path}",
                    "python -m tinyddpm sample --checkpoint {path} --class all"),
    "improved": ("the improved U-Net (Nichol & Dhariwal 2021)",
                 "python -m tinyddpm train --resume --epochs {epochs} --checkpoint {path}",
                 "python -m tinyddpm sample --checkpoint {path}"),
    "latent": ("a latent diffusion model (from `train-latent`)",
               "python -m tinyddpm train-latent --resume --epochs {epochs} --checkpoint {path}",
               "python -m tinyddpm sample --checkpoint {path}"),
}


def checkpoint_kind(header):
    """Which model a checkpoint holds: "book", "conditional", "improved", "latent",
    "autoencoder" (phase 1 of ``train-latent``) or "other" (a model saved from Python)."""
    config = header.get("config") or {}
    if config.get("latent"):
        return "latent"
    if header.get("model_class") == "Autoencoder":
        return "autoencoder"
    if header.get("model_class") == "DiffusionUNet":
        return "conditional" if config.get("num_classes") else "book"
    if header.get("model_class") == "ImprovedUNet" and config.get("model") == "improved":
        return "improved"
    return "other"


def describe_kind(path, header):
    """'holds <what it is>: <the command that takes it>' for messages about a file of the wrong
    kind."""
    kind = checkpoint_kind(header)
    path = os.fspath(path)
    if kind == "other":
        return (f"holds a model of class {header.get('model_class', 'unknown')!r} saved from "
                "Python, which the "
                "command line does not train or sample; load it with load_checkpoint(path, "
                "model) or keras.models.load_model(path)")
    if kind == "autoencoder":
        suffix = ".autoencoder.npz"
        run = path[:-len(suffix)] + ".npz" if path.endswith(suffix) else None
        how = (f"continue that run with `python -m tinyddpm train-latent --resume --epochs "
               f"<latent epochs> --checkpoint {run}`" if run else f"`train-latent` looks for it "
               f"as <checkpoint>{suffix} beside the run's --checkpoint (so rename it, e.g. to "
               f"run{suffix}, and continue with `python -m tinyddpm train-latent --resume "
               "--epochs <latent epochs> --checkpoint run.npz`)")
        return (f"holds the autoencoder of a latent diffusion run (phase 1 of `train-latent`), "
                f"which generates nothing by itself: {how}")
    what, train, sample = KINDS[kind]
    epochs = header.get("epoch", 0) + 10
    if in_assets(path):  # never train into the package's own file: start a run of your own
        options = {"book": "", "conditional": " --conditional", "improved": " --model improved" + (
            " --learn-sigma" if (header.get("config") or {}).get("learn_sigma") else "")}
        tune = (f"fine-tune it in a run of your own with `python -m tinyddpm train{options[kind]}"
                f" --init-from {path} --epochs 5 --checkpoint mine.npz`; " if kind in options
                else "")
        return f"holds {what}, shipped with tinyddpm: {tune}sample it with " \
               f"`{sample.format(path=path)}`"
    return (f"holds {what}: continue its training with `{train.format(path=path, epochs=epochs)}`"
            f" (--epochs: the total to reach); sample it with `{sample.format(path=path)}`")




def load_checkpoint(path, model, optimizer=None):
    """Load weights (and optimizer state, epoch, history) from ``path`` into ``model``.

    Returns the header. The model must have the architecture the checkpoint was saved from.
    """
    from .model import History

    header, weights, opt, ema = read_checkpoint(path)
    config = getattr(model, "config", {})
    if header.get("config") and config and _normalized(header["config"]) != _normalized(config):
        raise CheckpointError(f"{path!r} holds a model with config {header['config']}, which "
                              f"does not match the model it is loaded into ({config})")
    own = {**{k: p.dtype for k, p in model.named_parameters()},
           **{k: np.asarray(b).dtype for k, b in model.named_buffers()}}
    for key, value in weights.items():
        if key in own and value.dtype != own[key]:
            raise CheckpointError(f"{path!r}: weights/{key} is {value.dtype}, but this model's "
                                  f"weights are {own[key]}; the file is damaged or was not "
                                  "written by tinyddpm")
    try:
        model.load_state_dict(weights)
    except ValueError as e:
        raise CheckpointError(f"{path!r} does not fit this model: {e}") from None
    if optimizer is not None and opt:
        saved_class = header.get("optimizer_class")
        if saved_class and saved_class != type(optimizer).__name__:
            raise CheckpointError(f"{path!r} holds the state of a {saved_class} optimizer, not of "
                                  f"the {type(optimizer).__name__} it is loaded into")
        try:
            trained = [p for _, p in model.named_trainable_parameters()]
            optimizer.load_state_dict(opt, params=trained)
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{path!r}: optimizer state does not fit: {e}") from None
    if ema and hasattr(model, "ema"):
        from .model import ExponentialMovingAverage

        try:
            model.ema = model.ema or ExponentialMovingAverage(float(ema["decay"]))
            model.ema.load_state_dict(ema)
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{path!r}: the moving average of the weights is not valid: "
                                  f"{e}") from None
    if hasattr(model, "epoch"):
        model.epoch = header.get("epoch", 0)
        model.step_in_epoch = header.get("step_in_epoch", 0)
        model._partial_loss_sum = header.get("partial_loss_sum", 0.0)
        # files from before the batch-size weighting: sum of batch losses, one "sample" a batch
        model._partial_samples = header.get("partial_samples", model.step_in_epoch)
        model.batch_size_trained = header.get("batch_size")
        model.run_history = History(header.get("history"))
        model.history = History(header.get("history"))
    return header
