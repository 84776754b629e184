"""Beyond the laptop: tinyddpm's models in PyTorch and in ONNX, and back, without loss.

    from tinyddpm.export import to_torch, from_torch, save_torch, to_onnx, OnnxModel

    net = to_torch(model)            # a torch.nn.Module: the same weights, BatchNorm statistics
    noise = net(X_noisy, time)       # and time encoding; NHWC in and out, as in tinyddpm
    model = from_torch(net)          # back to tinyddpm (also from a state_dict or a .pt file)
    save_torch(net, "ckpt.pt")       # weights + config, read by torch.load(weights_only=True)
    to_onnx(model, "model.onnx")     # ONNX (opset 17, dynamic batch), checked with onnxruntime
    images = td.sample(OnnxModel("model.onnx"), 64)   # tinyddpm's samplers, onnxruntime's model
    images = td.sample(net, 64)      # and torch's (through TorchModel)

The models: the book's U-Net (``build_diffusion_model()``), the class-conditional one
(``num_classes=10``) and the latent model and its autoencoder (:mod:`tinyddpm.latent`). Their
twins compute what tinyddpm computes, to float32 rounding, in inference and in training mode
(BatchNorm as Keras: momentum 0.99, epsilon 1e-3, biased moving variance; see
:mod:`tinyddpm.export._torch`), and the tests check it against torch and onnxruntime.

Optional dependencies, imported only when used: PyTorch for the torch functions; PyTorch, onnx
and onnxruntime for :func:`to_onnx`; onnx and onnxruntime for :class:`OnnxModel`. Where one is
missing, the call raises :class:`MissingDependency` naming the ``pip install`` (or
``pip install -e ".[export]"`` for all of them).
"""
from __future__ import annotations

import importlib
import json
import os

import numpy as np

__all__ = ["to_torch", "from_torch", "save_torch", "to_onnx", "OnnxModel", "TorchModel",
           "MissingDependency", "TORCH_SUFFIXES", "OPSET"]

TORCH_FORMAT = "tinyddpm-torch"
TORCH_SUFFIXES = (".pt", ".pth")
ONNX_FORMAT = "tinyddpm-onnx"
OPSET = 17
"""The ONNX opset :func:`to_onnx` writes (17: LayerNormalization's, supported by onnxruntime
1.14 and later)."""

_PIP = {"torch": "torch", "onnx": "onnx", "onnxruntime": "onnxruntime"}


class MissingDependency(ImportError):
    """An optional package that this call needs is not installed; the message names the
    ``pip install`` that adds it."""


def require(*names, what="this"):
    """Import the optional packages ``names`` (returned in order), or raise
    :class:`MissingDependency` naming every one that is missing and how to install it."""
    modules, missing = [], []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            missing.append(name)
    if missing:
        words = " and ".join(missing)
        raise MissingDependency(
            f"{what} needs {words}, which {'is' if len(missing) == 1 else 'are'} not installed: "
            f"pip install {' '.join(_PIP[n] for n in missing)} (or pip install -e \".[export]\" "
            "for every optional package of tinyddpm.export)")
    return modules[0] if len(modules) == 1 else modules


# --------------------------------------------------------------------------------- PyTorch

def to_torch(model, sync_batchnorm=False):
    """The tinyddpm ``model`` as a ``torch.nn.Module`` with the same weights, BatchNorm
    statistics and time encoding (copies: the two do not share memory), on the CPU, in the
    model's dtype, in training mode if the model is.

    The book's U-Net and the conditional one: ``net(X_noisy, time)`` / ``net(X_noisy, time,
    label)`` with X_noisy (N, 28, 28, 1) float32 (NHWC, as tinyddpm: no transposing), time (N,)
    int64 in 0..T, label (N,) int64 (num_classes = "no class") -> the predicted noise
    (N, 28, 28, 1), the inputs checked first as tinyddpm's model checks them (ValueError; see
    ``_torch.UNet``). The autoencoder: ``net(x)`` reconstructs, ``net.encoder(x)`` and
    ``net.decoder(z)`` (NHWC) are its halves; the latent model: ``net(X_noisy, time)`` on
    latents. Sub-modules keep tinyddpm's names (``net.down0.sep1``). ``net.tinyddpm_header``
    holds the model's class and config (what :func:`save_torch` writes beside the weights).

    ``sync_batchnorm=True``: in training under ``torch.distributed`` with several processes,
    BatchNorm's batch statistics are those of all the processes' batches together (what
    ``examples/train_torch_ddp.py`` uses, so k processes compute what one does on k times the
    batch).

    Threads: torch and numba share OpenMP's thread count, and tinyddpm's kernels set it to the
    cores + 1 (see ``tinyddpm/_threads.py``); in a process that has run them, call
    ``torch.set_num_threads(n)`` before running torch (as ``examples/train_torch_ddp.py`` does).

    Raises
    ------
    MissingDependency
        PyTorch is not installed.
    TypeError
        ``model`` is not one of the models tinyddpm builds (the message names the module that
        has no twin).
    """
    require("torch", what="to_torch")
    from . import _torch

    _check_built(model, "to_torch")
    net = _torch.twin(model)
    net.tinyddpm_header = _header(model)
    net.train(model.training)
    return _torch.set_sync_batchnorm(net, sync_batchnorm)


def _check_built(model, what):
    from ..nn import Module

    if not isinstance(model, Module):
        raise TypeError(f"{what}: expected a tinyddpm model (e.g. td.build_diffusion_model()), "
                        f"got {type(model).__name__}")
    model._require_built(f"{what}()")


def _header(model):
    return {"model_class": type(model).__name__,
            "config": json.loads(json.dumps(getattr(model, "config", {}) or {}))}


def from_torch(source, model=None):
    """A tinyddpm model from torch, in inference mode: the inverse of :func:`to_torch`.

    ``source``: a module :func:`to_torch` made (or its ``DistributedDataParallel`` wrapper); a
    file :func:`save_torch` (or ``examples/train_torch_ddp.py``) wrote, as a path (read with
    ``torch.load(weights_only=True)``: loading never runs code) or as the dict it holds; or a
    bare ``state_dict()`` of such a module (``module.`` prefixes of a DDP wrapper are dropped),
    which says nothing of the architecture: give ``model`` then, a built tinyddpm model to load
    it into. ``model`` is filled in place and returned; without it one is built from the
    config that ``source`` carries, in the dtype of its weights (float32, or float64: a
    ``to_torch(model.astype(np.float64))`` comes back float64). The epoch count and loss history
    a file records are kept (``model.epoch``, ``model.run_history``), so a ``save_checkpoint``
    of the result reads as a checkpoint of that run.

    What cannot be checked: the schedule (and, for a .pt file, T: the time table is not saved)
    comes from the file's header, since the weights do not reveal it; a file edited by hand can
    lie about it (a checkpoint's header is taken on trust the same way).

    Raises
    ------
    MissingDependency
        PyTorch is not installed.
    ValueError
        The source is not a tinyddpm torch file or module, or does not fit ``model`` (missing
        or unexpected weights, other shapes, another config, another dtype), or holds NaN,
        non-float, mixed or half-precision weights; the message names the file or the weight.
        (A missing file: FileNotFoundError.)
    """
    torch = require("torch", what="from_torch")
    from ..checkpoint import _check_array
    from . import _torch

    name, header = "from_torch", None  # name: the file, in messages
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        source = _read_torch_file(name)
    what = repr(name) if name != "from_torch" else name
    if hasattr(source, "module") and isinstance(source.module, _torch.Twin):  # DDP's wrapper
        source = source.module
    if isinstance(source, _torch.Twin):
        header, state = getattr(source, "tinyddpm_header", None), source.state_dict()
    elif isinstance(source, dict) and source.get("format") == TORCH_FORMAT:
        header = {k: v for k, v in source.items() if k != "state_dict"}
        state = source.get("state_dict")
        if not isinstance(state, dict):
            raise ValueError(f"{what}: the file holds no state_dict")
    elif isinstance(source, dict):
        state = source
        if state and all(k.startswith("module.") for k in state):
            state = {k[len("module."):]: v for k, v in state.items()}
    else:
        raise TypeError(f"{what}: expected a module made by to_torch, a state_dict, or a .pt "
                        f"file written by save_torch, got {type(source).__name__}")
    if header is not None:
        _check(header, name)
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{what}: {key!r} is a {type(value).__name__}, not a tensor")
    dtype = _weights_dtype(state, what)
    if model is None:
        if header is None:
            raise ValueError(f"{what}: a bare state_dict does not say which model it holds: "
                             "pass model=<a built tinyddpm model of that architecture>, e.g. "
                             "from_torch(state, model=td.build_diffusion_model())")
        model = _build(header, name)
        if dtype is not None and dtype != np.float32:
            model.astype(dtype)
    else:
        _check_built(model, "from_torch")
        if header is not None and _header(model)["config"] != header.get("config"):
            raise ValueError(f"{what} holds a {header.get('model_class')} with config "
                             f"{header.get('config')}, which does not match the model given "
                             f"({_header(model)['config']})")
        if dtype is not None and np.dtype(model.dtype) != dtype:
            raise ValueError(f"{what} holds {dtype.name} weights, and the model given is "
                             f"{np.dtype(model.dtype).name}: pass model.astype(np.{dtype.name})")
    net = _torch.twin(model)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        words = " ".join(str(e).split())  # torch's message, on one line
        raise ValueError(f"{what} does not fit the tinyddpm model "
                         f"({type(model).__name__}): {words}") from None
    weights = _torch.tiny_state(net, model)
    for key, value in weights.items():
        _check_array(name, f"weights/{key}", value, floats=True,
                     advice="the run that made them diverged, or the file is damaged: convert an "
                     "earlier file")
    model.load_state_dict(weights)
    if header is not None and "epoch" in header and hasattr(model, "epoch"):
        from ..model import History

        model.epoch = header["epoch"]
        model.run_history = History(header.get("history"))
    return model.eval()


def _weights_dtype(state, what):
    """The one float dtype of a state_dict's floating tensors (float32 or float64, as numpy's
    dtype), or None where it holds none; ValueError for a mixture or another precision."""
    torch = require("torch", what="from_torch")

    dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
    if len(dtypes) > 1:
        raise ValueError(f"{what} mixes weights of dtypes {sorted(map(str, dtypes))}; tinyddpm "
                         "computes in one: convert the module with .float() (or .double()) first")
    if not dtypes:
        return None
    (dtype,) = dtypes
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{what} holds {str(dtype).replace('torch.', '')} weights; tinyddpm "
                         "computes in float32 or float64: convert the module with .float() (or "
                         ".double()) first")
    return np.dtype("float32" if dtype == torch.float32 else "float64")


def _check(header, name):
    """Every field of a torch file's header (or a twin's), as a checkpoint's are checked."""
    from ..checkpoint import CheckpointError, _check_header

    try:
        _check_header(name, header)
    except CheckpointError as e:
        raise ValueError(str(e)) from None


def _build(header, name):
    """A fresh, built tinyddpm model of the class and config ``header`` records (``name``:
    where it comes from, for messages)."""
    from ..checkpoint import checkpoint_kind

    kind, config = checkpoint_kind(header), header.get("config") or {}
    if kind not in BUILDERS:
        raise ValueError(f"{name!r} holds a {header.get('model_class')!r}, which from_torch does "
                         "not build (it builds the book's U-Net, the conditional one, the "
                         "autoencoder and the latent model): pass model=<a built tinyddpm "
                         "model of that architecture>")
    try:
        return BUILDERS[kind](config)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{name!r} says it holds a {header.get('model_class')!r}, but its config "
                         f"{config} does not describe one ({type(e).__name__}: {e}); the file "
                         "is damaged or was edited") from None


def _build_unet(config):
    from ..unet import DiffusionUNet, dummy_inputs

    model = DiffusionUNet(config["T"], config["embed_size"], config["widths"],
                          config.get("image_shape", (28, 28, 1)), config.get("num_classes"),
                          config.get("schedule"))
    model(dummy_inputs(model))
    return model


def _build_autoencoder(config):
    from ..latent import build_autoencoder

    return build_autoencoder(config["widths"], config["latent_channels"])


def _build_latent(config):
    from ..latent import build_latent_model

    ae, unet = config["autoencoder"], config["unet"]
    return build_latent_model(_build_autoencoder(ae), unet["T"], unet["embed_size"],
                              unet["widths"], schedule=unet.get("schedule"))


BUILDERS = {"book": _build_unet, "conditional": _build_unet, "autoencoder": _build_autoencoder,
            "latent": _build_latent}
"""How :func:`from_torch` builds each kind of model (``tinyddpm.checkpoint.checkpoint_kind``)
from the config a file records; a new kind of model is one entry here and its twin in
``_torch.TWINS``."""


def save_torch(net, path, **extra):
    """Write ``net`` (a module :func:`to_torch` made, or its DDP wrapper) to ``path`` (.pt or
    .pth) atomically: ``{"format": "tinyddpm-torch", "format_version": 1, "library_version",
    "model_class", "config", "state_dict", **extra}`` (``extra``: e.g. ``epoch`` and
    ``history``, JSON-like values), all of it readable with ``torch.load(path,
    weights_only=True)``. Returns ``path``.

    Raises
    ------
    ValueError
        ``path`` does not end in .pt or .pth, is a folder, or lies in a folder that does not
        exist or cannot be written (checked as the command line checks ``--out``, before
        writing; no folder is created).
    TypeError
        ``net`` is not a twin.
    tinyddpm._files.WriteError
        The file could not be written; a previous file at ``path`` is unchanged.
    """
    torch = require("torch", what="save_torch")
    from .. import __version__
    from .._files import atomic_write, check_output
    from . import _torch

    net = getattr(net, "module", net)
    reserved = {"format", "format_version", "library_version", "model_class", "config",
                "state_dict"} & set(extra)
    if reserved:
        raise ValueError(f"save_torch: {sorted(reserved)} are written by save_torch itself")
    if not isinstance(net, _torch.Twin) or not hasattr(net, "tinyddpm_header"):
        raise TypeError(f"save_torch: expected a module made by to_torch, got "
                        f"{type(net).__name__}")
    check_output(path, "save_torch: path", TORCH_SUFFIXES, example="model")
    payload = {"format": TORCH_FORMAT, "format_version": 1, "library_version": __version__,
               **net.tinyddpm_header, **extra,
               "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}}
    return atomic_write(path, lambda f: torch.save(payload, f))


def _read_torch_file(path):
    torch = require("torch", what="from_torch")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} does not exist" if not os.path.exists(path) else
                                f"{path!r} is not a regular file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch's unpickler refuses anything but tensors and plain data
        raise ValueError(f"{path!r} is not a readable torch file of tinyddpm's (damaged, or "
                         f"holding Python objects, which are never loaded): "
                         f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(data, dict) or data.get("format") != TORCH_FORMAT:
        raise ValueError(f"{path!r} is not a tinyddpm torch file (no format tag "
                         f"{TORCH_FORMAT!r}): write one with tinyddpm.export.save_torch, or "
                         "load a bare state_dict with from_torch(torch.load(path), model=...)")
    return data


class TorchModel:
    """The torch twin of a diffusion U-Net (the book's or the conditional one, from
    :func:`to_torch` or :func:`from_torch`'s files; or its ``DistributedDataParallel``
    wrapper) as a model tinyddpm's samplers take: torch computes, tinyddpm's samplers drive it.
    ``td.sample(net, 64)`` wraps a twin this way by itself.

    ``model(inputs)`` maps ``{"X_noisy": (N, 28, 28, 1) floats, "time": (N,) ints}`` (and
    ``"label"``; NumPy arrays) to the predicted noise, a NumPy array in the twin's dtype: the
    inputs are checked as tinyddpm's model checks them (a ValueError naming the input), moved
    to the twin's device and dtype, and run under ``torch.inference_mode`` in inference mode
    (a twin in training mode is put back in it after the call, its BatchNorm statistics
    untouched). ``config`` (T, the schedule), ``num_classes`` and ``image_shape`` are the
    twin's (``net.tinyddpm_header``), so the samplers use the schedule it was trained with.

    Raises
    ------
    MissingDependency
        PyTorch is not installed.
    TypeError
        ``net`` is not the twin of a diffusion U-Net (a latent model's twin: sample
        ``from_torch(net)`` in tinyddpm; a module of one's own: wrap it as a function, see
        :func:`tinyddpm.sample`).
    """

    def __init__(self, net):
        require("torch", what="TorchModel")
        from . import _torch

        module = getattr(net, "module", net)  # DDP's wrapper
        if not isinstance(module, _torch.UNet) or not hasattr(module, "tinyddpm_header"):
            hint = (": a latent model's twin denoises latents that its autoencoder then decodes; "
                    "sample it in tinyddpm, td.sample(tinyddpm.export.from_torch(net), 64)"
                    if isinstance(module, _torch.LatentTwin) else
                    ": wrap a module of your own as a function, td.sample(lambda inputs: ..., "
                    "T=..., schedule=...)")
            raise TypeError(f"TorchModel (and td.sample) take the torch twin of a diffusion U-Net "
                            f"(to_torch(td.build_diffusion_model())), got "
                            f"{type(module).__name__}{hint}")
        self.net = module
        self.header = module.tinyddpm_header
        self.config = self.header["config"]
        self.num_classes, self.image_shape = module.num_classes, module.image_shape

    def __call__(self, inputs):
        import torch

        from ..tensor import Tensor
        from ..unet import _unpack

        x, time, label = _unpack(inputs, self.image_shape, self.config["T"], self.num_classes)
        weight = self.net.conv_in.weight
        args = [torch.as_tensor(np.asarray(x.data if isinstance(x, Tensor) else x),
                                dtype=weight.dtype,
                                device=weight.device),
                *(torch.as_tensor(v, dtype=torch.int64, device=weight.device)
                  for v in (time, label) if v is not None)]
        training = self.net.training
        self.net.eval()
        try:
            with torch.inference_mode():
                return self.net(*args).cpu().numpy()
        finally:
            self.net.train(training)

    def __repr__(self):
        return (f"TorchModel({self.header['model_class']}, T={self.config['T']}, "
                f"{(self.config.get('schedule') or {'kind': 'cosine'})['kind']} schedule"
                + (f", {self.num_classes} classes" if self.num_classes else "") + ")")


# ------------------------------------------------------------------------------------ ONNX

def to_onnx(model, path, check=True):
    """Write the diffusion U-Net ``model`` (the book's, or the class-conditional one) to
    ``path`` (.onnx) as an ONNX model, atomically; returns ``path``.

    The graph (ONNX opset :data:`OPSET`, through ``torch.onnx.export`` of :func:`to_torch`'s
    twin, in inference mode): inputs ``X_noisy`` (N, 28, 28, 1) float32 (NHWC, as tinyddpm),
    ``time`` (N,) int64 in 0..T and, for a conditional model, ``label`` (N,) int64; output
    ``noise``, the predicted noise (N, 28, 28, 1); N is free (dynamic batch). The file's
    metadata (``metadata_props``) records the model's class and config (T, the schedule, the
    classes), which :class:`OnnxModel` reads back, so tinyddpm's samplers run on the file
    alone. ``check``: before writing, run the graph with onnxruntime on a batch of three and
    compare with tinyddpm's own outputs (a file that does not reproduce the model is never
    written).

    Raises
    ------
    MissingDependency
        PyTorch or onnx (or, with ``check``, onnxruntime) is not installed.
    ValueError
        ``path`` does not end in .onnx, is a folder, or lies in a folder that does not exist or
        cannot be written (checked before any work; no folder is created); ``model`` is not a
        float32 diffusion U-Net (a latent
        model's U-Net and decoder would be two graphs: export ``to_torch`` instead); or
        onnxruntime's outputs differ from tinyddpm's (nothing is written).
    tinyddpm._files.WriteError
        The file could not be written; a previous file at ``path`` is unchanged.
    """
    torch, onnx = require("torch", "onnx", what="to_onnx")
    if check:
        require("onnxruntime", what="to_onnx(check=True)")
    import io
    import warnings

    from .. import __version__
    from .._files import atomic_write, check_output
    from ..unet import DiffusionUNet, dummy_inputs

    check_output(path, "to_onnx: path", (".onnx",), example="model")
    if not isinstance(model, DiffusionUNet):
        raise ValueError(f"to_onnx exports a diffusion U-Net (the book's, or the conditional "
                         f"one), got a {type(model).__name__}" + (
                             ": a latent model is its U-Net and its decoder, two graphs; "
                             "to_torch(model) gives both" if hasattr(model, "unet") else ""))
    _check_built(model, "to_onnx")
    if model.dtype != np.float32:
        raise ValueError(f"to_onnx writes float32 graphs, and this model is "
                         f"{np.dtype(model.dtype).name}: convert it with model.astype(np.float32)")
    net = to_torch(model).eval()
    names = ["X_noisy", "time"] + (["label"] if model.num_classes is not None else [])
    example = tuple(torch.from_numpy(v) for v in dummy_inputs(model, 2).values())
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # torch's TorchScript exporter: see the README's "Beyond
        warnings.simplefilter("ignore")  # the laptop" for why it is used (fast, opset 17)
        torch.onnx.export(net, example, buffer, input_names=names, output_names=["noise"],
                          opset_version=OPSET, dynamic_axes={n: {0: "N"} for n in
                                                             [*names, "noise"]},
                          do_constant_folding=True, dynamo=False)
    proto = onnx.load_from_string(buffer.getvalue())
    for dim, size in zip(proto.graph.output[0].type.tensor_type.shape.dim[1:],
                         model.image_shape):  # the exporter leaves H and W of the output open
        dim.dim_value = size
    meta = {"tinyddpm.format": ONNX_FORMAT, "tinyddpm.format_version": "1",
            "tinyddpm.library_version": __version__, **{
                f"tinyddpm.{k}": json.dumps(v) for k, v in _header(model).items()}}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (f"tinyddpm {type(model).__name__}: inputs {', '.join(names)}; output "
                        "noise (the predicted noise); NHWC")
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    if check:
        _compare_with_tinyddpm(model, OnnxModel(data, source=os.fspath(path)))
    return atomic_write(path, lambda f: f.write(data))


def _compare_with_tinyddpm(model, onnx_model, n=3):
    """onnxruntime's outputs on ``n`` random inputs against tinyddpm's (inference mode)."""
    from ..unet import dummy_inputs

    rng = np.random.default_rng(0)
    inputs = dummy_inputs(model, n)
    inputs["X_noisy"] = rng.standard_normal(inputs["X_noisy"].shape, dtype=np.float32)
    inputs["time"] = np.linspace(0, model.config["T"], n).astype(np.int64)
    if "label" in inputs:
        inputs["label"] = rng.integers(0, model.num_classes + 1, n)
    expected = model(inputs, training=False).data
    got = onnx_model(inputs)
    error = float(np.abs(got - expected).max())
    if not error <= 1e-4 * max(1.0, float(np.abs(expected).max())):
        raise ValueError(f"to_onnx: onnxruntime's outputs differ from tinyddpm's by up to "
                         f"{error:.3g} (on {n} random inputs); nothing was written")


class OnnxModel:
    """A file :func:`to_onnx` wrote, run with onnxruntime, as a model tinyddpm's samplers take:
    ``td.sample(OnnxModel("model.onnx"), 64)``, ``generate``, ``generate_ddim`` (with ``label``
    and ``guidance`` for a conditional model).

    ``model(inputs)`` maps ``{"X_noisy": (N, 28, 28, 1) floats, "time": (N,) ints}`` (and
    ``"label"``) to the predicted noise, a float32 array; the inputs are checked first as
    tinyddpm's model checks them (time steps whole numbers in 0..T, labels in 0..num_classes,
    X_noisy's shape and a float dtype: a ValueError naming the input, before onnxruntime runs).
    ``config`` (T, the schedule, ...),
    ``num_classes`` and ``image_shape`` come from the file's metadata, verified on loading
    against the graph itself: its inputs and output (names, types, shapes) and its time
    encoding table (T + 1 rows of the sin/cos encoding, so a T in the metadata that is not the
    graph's is caught). The schedule cannot be checked that way (the graph does not hold it):
    it is taken from the metadata, so a file edited by hand can lie about it. ``providers``:
    onnxruntime's execution providers (default: all that are available, e.g. CUDA first where
    installed).

    Raises
    ------
    MissingDependency
        onnx or onnxruntime is not installed.
    ValueError
        The file is not an ONNX model written by ``to_onnx``, or its metadata does not match its
        graph; the message names the file and what is wrong. (A missing file:
        FileNotFoundError.)
    """

    def __init__(self, path, providers=None, source=None):
        onnx, ort = require("onnx", "onnxruntime", what="OnnxModel")
        if isinstance(path, bytes):  # to_onnx's check, before the file exists
            data, self.path = path, source or "<memory>"
        else:
            self.path = os.fspath(path)
            if not os.path.isfile(self.path):
                raise FileNotFoundError(f"{self.path!r} does not exist" if not os.path.exists(
                    self.path) else f"{self.path!r} is not a regular file")
            with open(self.path, "rb") as f:
                data = f.read()
        try:
            proto = onnx.load_from_string(data)
        except Exception as e:  # protobuf's DecodeError and friends
            raise ValueError(f"{self.path!r} is not an ONNX model ({type(e).__name__}: "
                             f"{str(e)[:200]})") from None
        self.header = _onnx_header(self.path, proto)
        self.config = self.header["config"]
        self.num_classes = self.config.get("num_classes")
        self.image_shape = tuple(self.config.get("image_shape", (28, 28, 1)))
        self.input_names = ["X_noisy", "time"] + (["label"] if self.num_classes else [])
        _check_graph(self.path, proto, self.config, self.input_names, self.image_shape)
        self.session = ort.InferenceSession(data, providers=providers or
                                            ort.get_available_providers())

    def __call__(self, inputs):
        from ..tensor import Tensor
        from ..unet import _unpack

        x, time, label = _unpack(inputs, self.image_shape, self.config["T"], self.num_classes)
        feed = {"X_noisy": np.asarray(x.data if isinstance(x, Tensor) else x, np.float32),
                "time": time.astype(np.int64)}
        if label is not None:
            feed["label"] = label.astype(np.int64)
        return self.session.run(["noise"], feed)[0]

    def __repr__(self):
        return (f"OnnxModel({self.path!r}: {self.header['model_class']}, T={self.config['T']}, "
                f"{(self.config.get('schedule') or {'kind': 'cosine'})['kind']} schedule"
                + (f", {self.num_classes} classes" if self.num_classes else "") + ")")


def _onnx_header(path, proto):
    """The tinyddpm header in an ONNX file's metadata, validated as a checkpoint's."""
    from ..checkpoint import checkpoint_kind

    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get("tinyddpm.format") != ONNX_FORMAT:
        raise ValueError(f"{path!r} is an ONNX model, but not one written by tinyddpm's "
                         "to_onnx (no tinyddpm metadata): wrap it as a function, "
                         "td.sample(lambda inputs: ..., T=..., schedule=...)")
    try:
        header = {k: json.loads(meta[f"tinyddpm.{k}"]) for k in ("model_class", "config")}
    except (KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"{path!r}: the tinyddpm metadata is damaged ({type(e).__name__}: "
                         f"{e})") from None
    _check(header, path)
    if checkpoint_kind(header) not in ("book", "conditional"):
        raise ValueError(f"{path!r}: the metadata names a {header['model_class']!r}, not a "
                         "diffusion U-Net; the file was edited")
    return header


def _check_graph(path, proto, config, input_names, image_shape):
    """The graph's inputs, output and time table agree with the metadata's config."""
    from onnx import TensorProto, numpy_helper

    from ..nn import TimeEncoding

    def described(value):
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        return tensor.elem_type, dims

    expected = {"X_noisy": (TensorProto.FLOAT, [None, *image_shape]),
                "time": (TensorProto.INT64, [None]), "label": (TensorProto.INT64, [None])}
    inputs = {v.name: described(v) for v in proto.graph.input}
    outputs = {v.name: described(v) for v in proto.graph.output}
    wanted = {n: expected[n] for n in input_names}
    if inputs != wanted or outputs != {"noise": expected["X_noisy"]}:
        raise ValueError(f"{path!r}: the graph's inputs {inputs} and outputs {outputs} are not "
                         f"those its metadata describes ({wanted}, noise "
                         f"{expected['X_noisy']}; None: the free batch size); the file was "
                         "edited")
    T, size = config["T"], config["embed_size"]
    table = TimeEncoding(T, size).table
    tensors = [*proto.graph.initializer, *(a.t for node in proto.graph.node
                                          if node.op_type == "Constant" for a in node.attribute
                                          if a.name == "value")]
    for tensor in tensors:
        if list(tensor.dims) == [T + 1, size] and np.allclose(numpy_helper.to_array(tensor),
                                                              table, atol=1e-6):
            return
    raise ValueError(f"{path!r}: the graph holds no time encoding of T + 1 = {T + 1} steps of "
                     f"size {size}, which its metadata (T = {T}) says it has; the file was "
                     "edited")
