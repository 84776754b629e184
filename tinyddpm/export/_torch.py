"""tinyddpm's modules as torch modules ("twins"): the same weights, the same outputs.

Imported by :mod:`tinyddpm.export` only when asked (it imports torch). Each twin is built from
one tinyddpm module (its sub-modules become twins under the same names, so ``down0.sep1`` is
``down0.sep1`` on both sides) and knows how its weights map to tinyddpm's (``WEIGHTS``:
tinyddpm name -> torch name, layout there and back):

    Conv2D kernel          (kh, kw, Cin, Cout)  <->  weight (Cout, Cin, kh, kw)
    Conv2DTranspose kernel (kh, kw, Cout, Cin)  <->  weight (Cin, Cout, kh, kw)
    depthwise kernel       (kh, kw, C, 1)       <->  depthwise.weight (C, 1, kh, kw), groups C
    pointwise kernel       (1, 1, C, F)         <->  pointwise.weight (F, C, 1, 1)
    Dense kernel           (in, out)            <->  weight (out, in)
    gamma, beta, moving_mean, moving_variance   <->  weight, bias, running_mean, running_var

Layers compute in torch's NCHW; the twins of what a user calls (the models, and the
autoencoder's ``encoder`` and ``decoder``) take and return NHWC, as tinyddpm does, and permute
inside. Keras' padding rule ('same': the odd pixel after) is applied as tinyddpm applies it.
A model that is not listed in :data:`TWINS` (a model written with ``tinyddpm.keras``, a layer
of another kind) is refused with its name: a new model needs its twin here, one class each.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn as tnn

from .. import nn, ops
from ..kernels.conv import conv_output_and_padding
from ..latent import Autoencoder, LatentDiffusion
from ..unet import DiffusionUNet, DownBlock, UpBlock, check_inputs


def _same(a):
    return a


def _conv_to(a):  # (kh, kw, Cin, Cout) -> (Cout, Cin, kh, kw); transposed: (kh,kw,Cout,Cin) ->
    return np.transpose(a, (3, 2, 0, 1))  # (Cin, Cout, kh, kw)


def _conv_back(a):
    return np.transpose(a, (2, 3, 1, 0))


def _depthwise(a):  # (kh, kw, C, 1) <-> (C, 1, kh, kw): the same permutation both ways
    return np.transpose(a, (2, 3, 0, 1))


def _matrix(a):  # Dense (in, out) <-> Linear (out, in)
    return a.T


_ACTIVATIONS = {None: None, ops.relu: F.relu, ops.sigmoid: torch.sigmoid, ops.tanh: torch.tanh,
                ops.silu: F.silu}


def _activation(layer):
    if layer.activation not in _ACTIVATIONS:
        raise TypeError(f"to_torch: {layer._label()} has the activation {layer.activation!r}, "
                        "which has no torch twin (relu, sigmoid, tanh and silu have)")
    return _ACTIVATIONS[layer.activation]


def _keras_pad(x, kernel_size, stride, padding, value=0.0):
    """(x, (ph, pw)): x padded as Keras pads it for this window, or left as it is with the
    symmetric padding to give the torch op (the cheaper way, when the two sides are equal)."""
    (kh, kw) = kernel_size
    _, (pt, pb) = conv_output_and_padding(int(x.shape[2]), kh, stride, padding)
    _, (pl, pr) = conv_output_and_padding(int(x.shape[3]), kw, stride, padding)
    if pt == pb and pl == pr and value == 0.0:
        return x, (pt, pl)
    return F.pad(x, (pl, pr, pt, pb), value=value), (0, 0)


def _per_pixel(v):
    """(N, C) -> (N, C, 1, 1), to add to every pixel."""
    return v[:, :, None, None]


class Twin(tnn.Module):
    """A torch module standing for one tinyddpm module. ``WEIGHTS``: {tinyddpm name: (torch
    name, tinyddpm layout -> torch's, torch's -> tinyddpm's)} for the module's own weights."""

    WEIGHTS = {}

    def __init__(self, module):
        super().__init__()
        for name, child in module._modules.items():
            setattr(self, name, twin(child))
        for name in (*module._parameters, *module._buffers):
            target, to_torch, _ = self.WEIGHTS[name]
            array = np.asarray(getattr(getattr(module, name), "data", getattr(module, name)))
            value = torch.from_numpy(np.array(to_torch(array), order="C"))  # a copy
            if name in module._parameters:
                setattr(self, target, tnn.Parameter(value))
            else:
                self.register_buffer(target, value)
        for target, _, _ in self.WEIGHTS.values():  # those the module lacks (use_bias=False)
            if not hasattr(self, target):
                setattr(self, target, None)


class Conv2D(Twin):
    WEIGHTS = {"kernel": ("weight", _conv_to, _conv_back), "bias": ("bias", _same, _same)}

    def __init__(self, layer):
        super().__init__(layer)
        self.kernel_size, self.stride, self.padding = layer.kernel_size, layer.strides, \
            layer.padding
        self.activation = _activation(layer)

    def forward(self, x):
        x, pad = _keras_pad(x, self.kernel_size, self.stride, self.padding)
        y = F.conv2d(x, self.weight, self.bias, self.stride, pad)
        return y if self.activation is None else self.activation(y)


class SeparableConv2D(Twin):
    WEIGHTS = {"depthwise_kernel": ("depthwise_weight", _depthwise, _depthwise),
               "pointwise_kernel": ("pointwise_weight", _conv_to, _conv_back),
               "bias": ("bias", _same, _same)}

    def __init__(self, layer):
        super().__init__(layer)
        self.kernel_size, self.padding = layer.kernel_size, layer.padding
        self.activation = _activation(layer)

    def forward(self, x):
        x, pad = _keras_pad(x, self.kernel_size, 1, self.padding)
        y = F.conv2d(x, self.depthwise_weight, None, 1, pad, groups=x.shape[1])
        y = F.conv2d(y, self.pointwise_weight, self.bias)
        return y if self.activation is None else self.activation(y)


class Conv2DTranspose(Twin):
    """Keras' output size (H s for 'same', H s + max(k - s, 0) for 'valid') from torch's full
    transposed convolution ((H - 1) s + k), cropped from max(k - s, 0) // 2 ('same') as
    :func:`tinyddpm.functional.conv2d_transpose` does (zeros after, where k < s)."""
    WEIGHTS = {"kernel": ("weight", _conv_to, _conv_back), "bias": ("bias", _same, _same)}

    def __init__(self, layer):
        super().__init__(layer)
        self.kernel_size, self.stride, self.padding = layer.kernel_size, layer.strides, \
            layer.padding
        self.activation = _activation(layer)

    def forward(self, x):
        s, windows = self.stride, []
        for size, k in zip((int(x.shape[2]), int(x.shape[3])), self.kernel_size):
            length = size * s + (0 if self.padding == "same" else max(k - s, 0))
            start = max(k - s, 0) // 2 if self.padding == "same" else 0
            windows.append((start, length, (size - 1) * s + k - start - length))
        (top, height, bottom), (left, width, right) = windows
        if top == bottom and left == right:  # torch's own padding crops both sides equally
            y = F.conv_transpose2d(x, self.weight, self.bias, s, (top, left))
        else:
            y = F.conv_transpose2d(x, self.weight, None, s)[:, :, top:top + height,
                                                              left:left + width]
            y = F.pad(y, (0, width - y.shape[3], 0, height - y.shape[2]))
            y = y if self.bias is None else y + _per_pixel(self.bias[None])
        return y if self.activation is None else self.activation(y)


class Dense(Twin):
    WEIGHTS = {"kernel": ("weight", _matrix, _matrix), "bias": ("bias", _same, _same)}

    def __init__(self, layer):
        super().__init__(layer)
        self.activation = _activation(layer)

    def forward(self, x):
        y = F.linear(x, self.weight, self.bias)
        return y if self.activation is None else self.activation(y)


class Embedding(Twin):
    WEIGHTS = {"embeddings": ("weight", _same, _same)}

    def forward(self, indices):
        return F.embedding(indices, self.weight)


class TimeEncoding(Twin):
    """The fixed sin/cos table of :class:`tinyddpm.nn.TimeEncoding`, copied in the layer's dtype
    (as tinyddpm's layer returns its rows; a buffer that is not saved: the table follows from T
    and the embedding size)."""

    def __init__(self, layer):
        super().__init__(layer)
        table = np.array(layer.table, dtype=layer.dtype)  # a copy
        self.register_buffer("table", torch.from_numpy(table), persistent=False)

    def forward(self, time):
        return self.table[time]


class _SumOverProcesses(torch.autograd.Function):
    """x summed over the processes of ``group``; its gradient is summed the same way (each
    process's share of every process's loss comes back to it, as in torch's SyncBatchNorm)."""

    @staticmethod
    def forward(ctx, x, group):
        import torch.distributed as dist

        ctx.group = group
        x = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx, grad):
        import torch.distributed as dist

        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def _batch_moments(x, group):
    """The mean and (biased) variance of each channel over the batches of every process in
    ``group``: two all-reduces, the mean first (the variance from the centred values, as one
    process computes it)."""
    c = x.shape[1]
    count = torch.full((1,), x.numel() // c, dtype=x.dtype, device=x.device)
    total = _SumOverProcesses.apply(torch.cat([x.sum((0, 2, 3)), count]), group)
    mean = total[:c] / total[c]
    centred = x - _per_pixel(mean[None])
    var = _SumOverProcesses.apply((centred * centred).sum((0, 2, 3)), group) / total[c]
    return mean, var


class BatchNormalization(Twin):
    """Keras' BatchNormalization (momentum 0.99, epsilon 1e-3), written out rather than
    torch's ``BatchNorm2d``, whose moving variance is the unbiased one (and whose momentum is
    1 - Keras'): training normalises with the batch's mean and biased variance and moves

        running = momentum * running + (1 - momentum) * batch statistic,

    inference uses the running statistics; a frozen layer (weights that do not require a
    gradient) infers in training too, as in Keras. ``sync``: under ``torch.distributed`` with
    more than one process, the batch is every process's batch together (statistics all-reduced),
    so k processes with batches of B compute what one does with a batch of k B."""
    WEIGHTS = {"gamma": ("weight", _same, _same), "beta": ("bias", _same, _same),
               "moving_mean": ("running_mean", _same, _same),
               "moving_variance": ("running_var", _same, _same)}

    def __init__(self, layer):
        super().__init__(layer)
        self.momentum, self.eps, self.sync = float(layer.momentum), float(layer.epsilon), False

    def forward(self, x):
        if not (self.training and self.weight.requires_grad):
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        group = _sync_group() if self.sync else None
        if group is None:
            y = F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
            with torch.no_grad():
                var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
        else:
            mean, var = _batch_moments(x, group)
            y = ((x - _per_pixel(mean[None])) * _per_pixel(torch.rsqrt(var + self.eps)[None])
                 * _per_pixel(self.weight[None]) + _per_pixel(self.bias[None]))
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(m).add_(mean.detach(), alpha=1 - m)
            self.running_var.mul_(m).add_(var.detach(), alpha=1 - m)
        return y


def _sync_group():
    """torch.distributed's default group when it holds more than one process, else None."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.group.WORLD
    return None


class MaxPooling2D(Twin):
    def __init__(self, layer):
        super().__init__(layer)
        self.pool, self.stride, self.padding = layer.pool_size, layer.strides, layer.padding

    def forward(self, x):
        x, _ = _keras_pad(x, (self.pool, self.pool), self.stride, self.padding,
                          value=-float("inf"))
        return F.max_pool2d(x, self.pool, self.stride)


class UpSampling2D(Twin):
    def __init__(self, layer):
        super().__init__(layer)
        self.size = layer.size

    def forward(self, x):
        return F.interpolate(x, scale_factor=self.size, mode="nearest")


class ZeroPadding2D(Twin):
    def __init__(self, layer):
        super().__init__(layer)
        (self.top, self.bottom), (self.left, self.right) = layer.padding

    def forward(self, x):
        return F.pad(x, (self.left, self.right, self.top, self.bottom))


class Cropping2D(Twin):
    def __init__(self, layer):
        super().__init__(layer)
        (self.top, self.bottom), (self.left, self.right) = layer.cropping

    def forward(self, x):
        h, w = x.shape[2], x.shape[3]
        return x[:, :, self.top:h - self.bottom, self.left:w - self.right]


class Sequential(Twin):
    """Layers one after the other; NHWC in and out (4-D), as tinyddpm's ``Sequential``."""

    def __init__(self, module):
        super().__init__(module)
        self.count = len(module.layers)

    def forward(self, x):
        x = x.permute(0, 3, 1, 2) if x.dim() == 4 else x
        for i in range(self.count):
            x = getattr(self, f"layer{i}")(x)
        return x.permute(0, 2, 3, 1) if x.dim() == 4 else x


class Down(Twin):
    """:class:`tinyddpm.unet.DownBlock`."""

    def forward(self, z, skip, time_enc):
        z = self.bn1(self.sep1(F.relu(z)))
        z = self.bn2(self.sep2(F.relu(z)))
        cross_skip = z
        z = self.pool(z) + self.skip_conv(skip)
        return z + _per_pixel(self.time_dense(time_enc)), cross_skip


class Up(Twin):
    """:class:`tinyddpm.unet.UpBlock` (UpSample(Conv1x1(skip)), as tinyddpm computes it)."""

    def forward(self, z, skip, time_enc, cross_skip):
        z = self.bn1(self.tconv1(F.relu(z)))
        z = self.bn2(self.tconv2(F.relu(z)))
        z = self.up(z) + self.skip_up(self.skip_conv(skip))
        z = z + _per_pixel(self.time_dense(time_enc))
        return torch.cat([z, cross_skip], dim=1)


def _building_a_graph():
    """True while torch traces or compiles the module (``torch.onnx.export``, ``torch.jit``,
    ``torch.compile``): checks that look at the values of the inputs are left out of a graph."""
    compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)
    return torch.jit.is_tracing() or torch.jit.is_scripting() or compiling()


def _described(name, value):
    """(shape, dtype name, whole numbers?, bounds()) of a tensor, for
    :func:`tinyddpm.unet.check_inputs`."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"the diffusion model: {name!r} must be a torch tensor, received "
                        f"{type(value).__name__} (torch.from_numpy(...) converts an array)")
    whole = not (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool)
    return (tuple(value.shape), str(value.dtype).replace("torch.", ""), whole,
            lambda: tuple(int(v) for v in torch.aminmax(value)))


class UNet(Twin):
    """:class:`tinyddpm.unet.DiffusionUNet`: ``net(X_noisy, time)`` (``label`` too when
    class-conditional) with X_noisy (N, H, W, C) float tensor NHWC as in tinyddpm (computed in
    the model's dtype, as tinyddpm does), time (N,) integer tensor in 0..T, label (N,) integer
    tensor in 0..num_classes (num_classes = no class) -> the predicted noise, (N, H, W, C).

    The inputs are checked as tinyddpm's model checks them (:func:`tinyddpm.unet.check_inputs`:
    the same messages, a ValueError before any work), which reads the smallest and largest time
    step and label (on a GPU, one synchronisation a call). While torch traces or compiles the
    module (``to_onnx``, ``torch.jit.trace``, ``torch.compile``) those value checks are left
    out of the graph: :class:`tinyddpm.export.OnnxModel` checks its inputs before running
    onnxruntime, and a bare onnxruntime session does not (an index out of range is an error
    there, a negative one counts from the end)."""

    def __init__(self, model):
        super().__init__(model)
        self.image_shape, self.num_classes = tuple(model.image_shape), model.num_classes
        self.T = int(model.config["T"])
        self.depth = len(model.down)

    def check_inputs(self, X_noisy, time, label=None):
        """ValueError (or TypeError, for what is not a tensor) unless the inputs are what the
        model takes; see the class's docstring."""
        if (label is None) != (self.num_classes is None):
            raise ValueError("label (N,) is required by a class-conditional model, and refused "
                             "by the others" + (f" (this one has {self.num_classes} classes)"
                                                if self.num_classes else ""))
        x = _described("X_noisy", X_noisy)
        indices = {"time": _described("time", time)}
        if label is not None:
            indices["label"] = _described("label", label)
        check_inputs(x[0], x[1], X_noisy.is_floating_point(), indices, self.image_shape, self.T,
                     self.num_classes)

    def forward(self, X_noisy, time, label=None):
        if not _building_a_graph():
            self.check_inputs(X_noisy, time, label)
        X_noisy = X_noisy.to(self.conv_in.weight.dtype)  # tinyddpm's model casts, as here
        time_enc = self.time_encoding(time)
        if label is not None:
            time_enc = time_enc + self.class_embedding(label)
        z = F.relu(self.bn_in(self.conv_in(self.pad(X_noisy.permute(0, 3, 1, 2)))))
        z = z + _per_pixel(self.time_in(time_enc))
        skip, cross_skips = z, []
        for i in range(self.depth):
            z, cross = getattr(self, f"down{i}")(z, skip, time_enc)
            cross_skips.append(cross)
            skip = z
        for i in range(self.depth):
            z = getattr(self, f"up{i}")(z, skip, time_enc, cross_skips[-1 - i])
            skip = z
        return self.crop(self.conv_out(z)).permute(0, 2, 3, 1)


class AutoencoderTwin(Twin):
    """:class:`tinyddpm.latent.Autoencoder`: ``net(x)`` reconstructs (NHWC, images in
    [-1, 1]); ``net.encoder(x)`` gives the raw (not normalised) latents (N, 7, 7, C) and
    ``net.decoder(z)`` maps them back; the latent normalisation is kept in ``latent_mean``,
    ``latent_std`` and ``latent_bound``."""
    WEIGHTS = {name: (name, _same, _same) for name in ("latent_mean", "latent_std",
                                                        "latent_bound")}

    def forward(self, x):
        return self.decoder(self.encoder(x))


class LatentTwin(Twin):
    """:class:`tinyddpm.latent.LatentDiffusion`: ``net(X_noisy, time)`` on (N, 7, 7, C)
    latents is its U-Net's; ``net.autoencoder`` is the (frozen) autoencoder."""

    def forward(self, X_noisy, time):
        return self.unet(X_noisy, time)


TWINS = {nn.Conv2D: Conv2D, nn.SeparableConv2D: SeparableConv2D,
         nn.Conv2DTranspose: Conv2DTranspose, nn.Dense: Dense, nn.Embedding: Embedding,
         nn.TimeEncoding: TimeEncoding, nn.BatchNormalization: BatchNormalization,
         nn.MaxPooling2D: MaxPooling2D, nn.UpSampling2D: UpSampling2D,
         nn.ZeroPadding2D: ZeroPadding2D, nn.Cropping2D: Cropping2D, nn.Sequential: Sequential,
         DownBlock: Down, UpBlock: Up, DiffusionUNet: UNet, Autoencoder: AutoencoderTwin,
         LatentDiffusion: LatentTwin}
"""Each tinyddpm module class and its twin (the class itself: a subclass may compute something
else, so it is refused rather than guessed)."""


def twin(module):
    """The twin of ``module`` (and, through it, of every module under it), with its weights."""
    kind = TWINS.get(type(module))
    if kind is None:
        raise TypeError(f"to_torch: no torch twin for {type(module).__name__} "
                        f"({module._label()}); it translates the models tinyddpm builds "
                        "(build_diffusion_model, build_autoencoder, build_latent_model)")
    out = kind(module)
    if not module.trainable:  # Keras' freeze: no gradient, and BatchNorm infers
        out.requires_grad_(False)
    return out


def set_sync_batchnorm(net, sync):
    for m in net.modules():
        if isinstance(m, BatchNormalization):
            m.sync = bool(sync)
    return net


def tiny_state(net, model):
    """``model.state_dict()`` as the twin ``net`` holds it: tinyddpm's names, layouts, dtypes."""
    state = {}
    for path, module in model.named_modules():
        other = net.get_submodule(path) if path else net
        for name in (*module._parameters, *module._buffers):
            target, _, back = other.WEIGHTS[name]
            value = getattr(other, target).detach().cpu().numpy()
            state[f"{path}.{name}" if path else name] = np.array(back(value), order="C")
    return state
