"""tinyddpm: denoising diffusion probabilistic models from first principles.

The engine: ``Tensor`` (autograd), ``ops`` and ``functional`` (differentiable ops), ``kernels``
(numba), ``nn`` (layers), ``losses``, ``optimizers``, ``testing.gradcheck``.
"""
__version__ = "0.1.0"

from . import _threads  # noqa: E402
from ._malloc import keep_freed_memory  # noqa: E402

keep_freed_memory()  # reuse freed activation buffers instead of page-faulting on new ones
_threads.setup()  # before numba starts its pool: a spare thread for busy machines (_threads.py)

from . import functional, kernels, losses, nn, ops, optimizers  # noqa: E402
from .losses import HybridLoss, Huber, MeanAbsoluteError, MeanSquaredError  # noqa: E402
from .nn import set_seed  # noqa: E402
from .optimizers import SGD, Adam, Nadam  # noqa: E402
from .tensor import Tensor, no_grad, tensor  # noqa: E402
from .testing import gradcheck  # noqa: E402

# the slides, one name each
from .callbacks import EarlyStopping, ModelCheckpoint  # noqa: E402
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402
from .data import CLASS_NAMES, class_index, load_fashion_mnist, split_train_valid  # noqa: E402
from .diffusion import (forward_step, get_schedule, model_schedule, prepare_batch,  # noqa: E402
                        prepare_dataset, q_sample)
from .likelihood import bits_per_dim  # noqa: E402
from .model import History, Model, TrainingDiverged  # noqa: E402
from .sampling import SAMPLERS, generate, generate_ddim, sample  # noqa: E402
from .schedule import linear_schedule, variance_schedule  # noqa: E402
from .unet import build_diffusion_model  # noqa: E402
from .unet_improved import build_improved_model  # noqa: E402


def load_pretrained(path=None, kind="book"):
    """A shipped model, ready to sample (see :mod:`tinyddpm.pretrained`).

    ``kind``: "book" (the book's U-Net), "conditional" (class-conditional, for
    ``generate_ddim(model, label=..., guidance=...)``), "latent" (latent diffusion) or
    "improved" (the improved U-Net with learned variances; ``sample(model, 50, "iddpm")``).
    ``path``: a sampling-ready .npz of your own instead (``kind`` is then not used).
    Errors: ValueError for an unknown ``kind``; CheckpointError for a ``path`` that is missing or
    not a checkpoint.
    """
    import os

    from . import pretrained
    from .checkpoint import CheckpointError

    if kind not in pretrained.PRETRAINED:
        raise ValueError(f"kind must be one of {', '.join(map(repr, pretrained.PRETRAINED))}, "
                         f"got {kind!r}")
    if path is not None and not os.path.exists(path):
        hint = (f"; the shipped {path} model is load_pretrained(kind={path!r})"
                if path in pretrained.PRETRAINED else "")
        raise CheckpointError(f"load_pretrained: there is no file {os.fspath(path)!r}{hint}")
    return pretrained.load_pretrained(path or pretrained.PRETRAINED[kind])
