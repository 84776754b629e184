"""The improved U-Net of Nichol & Dhariwal (2021) and Dhariwal & Nichol (2021), sized for 28x28.

Changes from the book's U-Net (``unet.py``), each from the papers:

- residual blocks (He et al. 2016) with GroupNorm and SiLU instead of BatchNorm and ReLU: the
  statistics are per image, so they do not average over time steps (DESIGN.md's weak point of
  the book's model) and training and inference compute the same thing;
- the time step enters through an MLP (sinusoidal table -> Dense -> SiLU -> Dense) and is applied
  as a scale and a shift of the normalised activations, "adaptive group norm" (Dhariwal & Nichol
  2021, section 3): AdaGN(h, e) = (1 + y_s) GroupNorm(h) + y_b, (y_s, y_b) = Dense(e);
- multi-head self-attention at the low resolutions (7x7 by default; ``attention=(14, 7)`` adds
  14x14): every pixel looks at every other, which convolutions reach only through many layers;
- dropout inside each residual block (off by default, see below).

The defaults are the shipped recipe's (``MODEL_CARD.md``), sized for 2 CPU cores: a training step
costs about 3x the book model's (``benchmarks/bench_improved.py``; the paper's widths, 128 and
up, would cost 50x). Attention at 14x14 as well costs a quarter more per step (196 pixels
attending to 196, against 49 to 49). The papers' dropout (0.1-0.3) fights overfitting over
hundreds of thousands of steps; a CPU run of an hour or two is far from that, so it is 0 here.

Inputs ``{"X_noisy": (N, 28, 28, 1) float32, "time": (N,) int in 0..T}``; output the predicted
noise, (N, 28, 28, 1). Resolutions 28 -> 14 -> 7 and back, with skip connections concatenated.
With ``learn_sigma=True`` the output has a second channel, v, the learned variance's
interpolation between beta_t and beta_tilde_t (Nichol & Dhariwal 2021, eq. 15; trained with
:class:`tinyddpm.losses.HybridLoss`): (N, 28, 28, 2), eps then v. The samplers take the eps
channel; ``sample(model, n, "iddpm")`` and the likelihood also use v.
"""
from __future__ import annotations

import numpy as np

from . import nn, ops
from .checkpoint import MAX_WIDTH
from .model import Model
from .schedule import schedule_spec
from .unet import _check_T, _per_pixel, _unpack, dummy_inputs


class ResBlock(nn.Module):
    """h = Conv3x3(SiLU(GN(x))); h = Conv3x3(Dropout(SiLU(AdaGN(h, e)))); out = skip(x) + h,
    with skip a 1x1 convolution where the width changes (Nichol & Dhariwal 2021, appendix A)."""

    def __init__(self, in_width, width, groups=8, dropout=0.1):
        super().__init__()
        self.width = width
        self.norm1 = nn.GroupNormalization(groups)
        self.conv1 = nn.Conv2D(width, 3, padding="same")
        self.time_dense = nn.Dense(2 * width)           # (scale, shift) from the time embedding
        self.norm2 = nn.GroupNormalization(groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2D(width, 3, padding="same")
        self.skip = nn.Conv2D(width, 1) if in_width != width else None

    def forward(self, x, emb):
        h = self.conv1(ops.silu(self.norm1(x)))
        scale_shift = _per_pixel(self.time_dense(ops.silu(emb)))
        scale, shift = scale_shift[..., :self.width], scale_shift[..., self.width:]
        h = self.norm2(h) * (1 + scale) + shift          # adaptive group norm
        h = self.conv2(self.dropout(ops.silu(h)))
        return (x if self.skip is None else self.skip(x)) + h


class AttentionBlock(nn.Module):
    """out = x + Proj(MultiHead(GN(x))): self-attention over the H*W pixels, ``heads`` heads of
    C/heads channels each; Q, K, V and the output projection are 1x1 convolutions (Dense layers
    on the channels). Attention itself is ``ops.attention`` (Vaswani et al. 2017, eq. 1)."""

    def __init__(self, width, heads=4, groups=8):
        super().__init__()
        if width % heads:
            raise ValueError(f"AttentionBlock: {width} channels cannot be split into {heads} heads")
        self.width, self.heads = width, heads
        self.norm = nn.GroupNormalization(groups)
        self.qkv = nn.Dense(3 * width)
        self.proj = nn.Dense(width)

    def forward(self, x):
        n, h, w, c = x.shape
        d = c // self.heads
        qkv = self.qkv(ops.reshape(self.norm(x), (n * h * w, c)))         # (N HW, 3C)
        qkv = ops.transpose(ops.reshape(qkv, (n, h * w, 3, self.heads, d)), (2, 0, 3, 1, 4))
        z = ops.attention(qkv[0], qkv[1], qkv[2])                         # (N, heads, HW, d)
        z = ops.reshape(ops.transpose(z, (0, 2, 1, 3)), (n * h * w, c))
        return x + ops.reshape(self.proj(z), (n, h, w, c))


class ImprovedUNet(Model):
    """See the module docstring. ``widths``: channels at 28x28, 14x14 and 7x7; ``attention``:
    the resolutions (side lengths) that get an attention block after each residual block."""

    def __init__(self, T=4000, widths=(16, 32, 64), attention=(7,), heads=4, dropout=0.0,
                 groups=8, schedule=None, learn_sigma=False):
        super().__init__()
        check_options(widths, attention, heads, dropout, groups)
        widths, attention = [int(w) for w in widths], [int(a) for a in attention]
        self.config = {"model": "improved", "T": int(T), "widths": widths,
                       "attention": attention, "heads": int(heads), "dropout": float(dropout),
                       "groups": int(groups), "schedule": schedule_spec(schedule)}
        if learn_sigma:  # in the config only when used
            self.config["learn_sigma"] = True
        self.image_shape, self.num_classes = (28, 28, 1), None
        emb = 4 * widths[0]
        self.time_encoding = nn.TimeEncoding(T, widths[0])
        self.time_mlp1, self.time_mlp2 = nn.Dense(emb), nn.Dense(emb)
        self.conv_in = nn.Conv2D(widths[0], 3, padding="same")

        def res_attn(in_width, width, side):
            attn = AttentionBlock(width, heads, groups) if side in attention else None
            return ResBlock(in_width, width, groups, dropout), attn

        w0, w1, w2 = widths
        self.down = [res_attn(w0, w0, 28), res_attn(w0, w1, 14), res_attn(w1, w2, 7)]
        self.downsample = [nn.Conv2D(w, 3, strides=2, padding="same") for w in (w0, w1)]
        self.mid = [res_attn(w2, w2, 7), res_attn(w2, w2, 0)]       # attention once, at 7x7
        self.up = [res_attn(2 * w2, w2, 7), res_attn(2 * w1, w1, 14), res_attn(2 * w0, w0, 28)]
        self.upsample = [nn.UpSampling2D(2) for _ in range(2)]
        self.upconv = [nn.Conv2D(w, 3, padding="same") for w in (w1, w0)]
        for name in ("down", "mid", "up"):
            for i, (res, attn) in enumerate(getattr(self, name)):
                setattr(self, f"{name}{i}_res", res)
                if attn is not None:
                    setattr(self, f"{name}{i}_attn", attn)
        for i, (ds, us, uc) in enumerate(zip(self.downsample, self.upsample, self.upconv)):
            setattr(self, f"downsample{i}", ds)
            setattr(self, f"upsample{i}", us)
            setattr(self, f"upconv{i}", uc)
        self.norm_out = nn.GroupNormalization(groups)
        self.conv_out = nn.Conv2D(2 if learn_sigma else 1, 3, padding="same")

    @property
    def conditional(self):
        return False

    @property
    def learns_sigma(self):
        return bool(self.config.get("learn_sigma"))

    @staticmethod
    def _apply(pair, z, emb):
        res, attn = pair
        z = res(z, emb)
        return z if attn is None else attn(z)

    def forward(self, inputs):
        x, time, _ = _unpack(inputs, self.image_shape, self.config["T"])
        emb = self.time_mlp2(ops.silu(self.time_mlp1(self.time_encoding(time))))
        z = self.conv_in(x)
        skips = []
        for level, pair in enumerate(self.down):                 # 28 -> 14 -> 7
            z = self._apply(pair, z, emb)
            skips.append(z)
            if level < 2:
                z = self.downsample[level](z)
        for pair in self.mid:
            z = self._apply(pair, z, emb)
        for level, pair in enumerate(self.up):                   # 7 -> 14 -> 28
            z = self._apply(pair, ops.concatenate([z, skips.pop()], axis=-1), emb)
            if level < 2:
                z = self.upconv[level](self.upsample[level](z))
        return self.conv_out(ops.silu(self.norm_out(z)))


def check_options(widths=(16, 32, 64), attention=(7,), heads=4, dropout=0.0, groups=8):
    """Raise ValueError, naming the option, for an improved U-Net that cannot be built: ``widths``
    not 3 whole numbers in 1..MAX_WIDTH divisible by ``groups``, attention sides other than 28,
    14, 7 (each once), a width with attention that ``heads`` cannot split, ``dropout`` outside
    [0, 1)."""
    def whole(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    def whole_numbers(values):  # a tuple or list of them (not a string, not a bare number)
        return not isinstance(values, str) and hasattr(values, "__len__") and \
            all(whole(v) for v in values)

    for name, value in (("heads", heads), ("groups", groups)):
        if not whole(value) or value < 1:
            raise ValueError(f"build_improved_model: {name} must be a whole number >= 1, got "
                             f"{value!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.floating, np.integer)):
        raise ValueError(f"build_improved_model: dropout must be a number in [0, 1), got "
                         f"{dropout!r}")

    if not whole_numbers(widths):
        raise ValueError(f"build_improved_model: widths must be 3 whole numbers (channels at "
                         f"28x28, 14x14, 7x7), e.g. (16, 32, 64); got {widths!r}")
    widths = [int(w) for w in widths]
    if len(widths) != 3:
        raise ValueError(f"build_improved_model: widths needs 3 values (28x28, 14x14, 7x7), "
                         f"got {widths}")
    if not whole_numbers(attention):
        raise ValueError(f"build_improved_model: attention must be a tuple of sides, e.g. (7,) "
                         f"or (14, 7), or () for none; got {attention!r}")
    sides = [int(a) for a in attention]
    if any(a not in (28, 14, 7) for a in sides) or len(set(sides)) != len(sides):
        raise ValueError(f"build_improved_model: attention: sides among 28, 14, 7, each once; "
                         f"got {tuple(attention)}")
    if not 0 <= float(dropout) < 1:
        raise ValueError(f"build_improved_model: dropout must lie in [0, 1), got {dropout}")
    if min(widths) < 1 or max(widths) > MAX_WIDTH:
        raise ValueError(f"build_improved_model: widths must be whole numbers in 1..{MAX_WIDTH}, "
                         f"got {tuple(widths)}")
    for w in widths:
        if w % int(groups):
            raise ValueError(f"build_improved_model: width {w} is not divisible by "
                             f"groups={groups}")
    for side, w in zip((28, 14, 7), widths):
        if side in sides and w % int(heads):
            raise ValueError(f"build_improved_model: the {w} channels at {side}x{side} (with "
                             f"attention) cannot be split into heads={heads}")


def training_memory(batch_size, widths=(16, 32, 64), attention=(7,), heads=4):
    """About how many bytes training this U-Net takes at ``batch_size``: a fixed ~0.4 GB (the
    data set, the interpreter), the weights with their gradients, moments and average (20 bytes
    a weight, ~100 sum(w^2) weights), and per image the kept activations (~340 bytes per channel
    and pixel, sum over the three sides of w * side^2) and attention maps (~8.5 bytes per head
    and pair of pixels, heads * side^4 for each side with attention).

    Fitted to peak memory measured on `train --steps-per-epoch 1` (improved, learned variances):
    7.4 MB an image for the defaults, 29.6 for widths 64/128/256, 29.6 for attention at 28, 14
    and 7 with 4 heads (estimates: 7.5, 29.9, 29.7)."""
    sides = (28, 14, 7)
    per_image = 340 * sum(w * s * s for w, s in zip(widths, sides)) + \
        8.5 * heads * sum(s ** 4 for s in attention)
    return int(0.4e9 + 20 * 100 * sum(w * w for w in widths) + batch_size * per_image)


def build_improved_model(T=4000, widths=(16, 32, 64), attention=(7,), heads=4, dropout=0.0,
                         groups=8, seed=None, schedule=None, learn_sigma=False):
    """The improved U-Net (see the module docstring), built (weights created).

    ``widths`` (3 ints, each divisible by ``groups`` and by ``heads`` where attention is used):
    channels at 28x28, 14x14, 7x7. ``attention``: sides among (28, 14, 7) with self-attention.
    ``dropout`` in [0, 1). ``learn_sigma``: also output v (see the module docstring; train
    with :class:`tinyddpm.losses.HybridLoss`). Errors: ValueError for widths that groups or
    heads cannot split, and for sides, rates or counts out of range.
    """
    if not isinstance(learn_sigma, bool):
        raise ValueError(f"build_improved_model: learn_sigma must be True or False, got "
                         f"{learn_sigma!r}")
    _check_T("build_improved_model", T)
    if seed is not None:
        nn.set_seed(seed)
    model = ImprovedUNet(T, widths, attention, heads, dropout, groups, schedule, learn_sigma)
    model(dummy_inputs(model))
    return model


__all__ = ["ImprovedUNet", "ResBlock", "AttentionBlock", "build_improved_model", "check_options"]
