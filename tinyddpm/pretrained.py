"""The shipped model: the book's U-Net trained with ``python -m tinyddpm train`` (see MODEL_CARD.md).

``load_pretrained()`` returns it ready to sample. ``python -m tinyddpm.pretrained --export
ckpt.npz`` makes the shipped file from a training checkpoint: it takes the moving average of the
weights, re-estimates the BatchNorm statistics for them, and keeps only what sampling needs.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from .checkpoint import (CheckpointError, checkpoint_kind, describe_kind, load_checkpoint,
                         read_checkpoint, save_checkpoint)

PRETRAINED_PATH = Path(__file__).resolve().parent / "assets" / "book_unet.npz"
LATENT_PATH = Path(__file__).resolve().parent / "assets" / "latent_unet.npz"
CONDITIONAL_PATH = Path(__file__).resolve().parent / "assets" / "conditional_unet.npz"
IMPROVED_PATH = Path(__file__).resolve().parent / "assets" / "improved_unet.npz"
PRETRAINED = {"book": PRETRAINED_PATH, "conditional": CONDITIONAL_PATH, "latent": LATENT_PATH,
              "improved": IMPROVED_PATH}
"""The shipped models by kind: ``load_pretrained(kind=...)`` and ``sample --pretrained KIND``."""


def model_from_checkpoint(path):
    """Build the model a checkpoint holds -- the book's U-Net, the class-conditional one, the
    improved U-Net or a latent diffusion model, as its header's config says -- and load it.
    Returns (model, header).
    """
    from .unet import build_diffusion_model

    header = read_checkpoint(path)[0]
    config = header.get("config") or {}
    kind = checkpoint_kind(header)
    if kind == "latent":
        from .latent import model_from_checkpoint as latent_model

        return latent_model(path)
    if kind == "improved":
        from .unet_improved import build_improved_model

        model = build_improved_model(**{k: config[k] for k in (
            "T", "widths", "attention", "heads", "dropout", "groups", "schedule")},
            learn_sigma=config.get("learn_sigma", False))
        return model, load_checkpoint(path, model)
    if kind not in ("book", "conditional"):
        raise CheckpointError(f"{str(path)!r} is not a diffusion model to sample: it "
                              f"{describe_kind(path, header)}")
    model = build_diffusion_model(T=config["T"], embed_size=config["embed_size"],
                                  num_classes=config.get("num_classes"),
                                  schedule=config.get("schedule"))
    return model, load_checkpoint(path, model)


def load_pretrained(path=PRETRAINED_PATH):
    """A shipped model, in inference mode (``generate`` / ``generate_ddim`` ready): the book's
    U-Net by default, ``CONDITIONAL_PATH``, ``LATENT_PATH`` or ``IMPROVED_PATH`` for the others."""
    if not os.path.exists(path):
        raise CheckpointError(f"the pretrained model {str(path)!r} is missing from this install; "
                              "reinstall tinyddpm, or train one with `python -m tinyddpm train`")
    return model_from_checkpoint(path)[0].eval()


def recalibrate_on_training_data(model, batches=200, data_dir=None):
    """Re-estimate the BatchNorm statistics on ``batches`` shuffled training batches (seed 0).

    Needed after ``use_ema_weights()``: the saved statistics belong to the trained weights.
    """
    from .data import load_fashion_mnist, split_train_valid
    from .diffusion import prepare_dataset

    if hasattr(model, "autoencoder"):  # a latent model: its U-Net sees encoded images
        from .latent import training_latents

        data = prepare_dataset(training_latents(model, data_dir=data_dir), 32, shuffle=True,
                               seed=0, scale=False)
        return model.recalibrate_batchnorm(data, batches=batches)
    (X_full, y_full), _ = load_fashion_mnist(data_dir)
    (X_train, y_train), _ = split_train_valid(X_full, y_full)
    # a class-conditional model sees labels (and "no class") as in training
    labels = {"labels": y_train} if getattr(model, "num_classes", None) is not None else {}
    data = prepare_dataset(X_train, 32, shuffle=True, seed=0, **labels)
    return model.recalibrate_batchnorm(data, batches=batches)


def export_pretrained(checkpoint, out=None, recalibrate=200, data_dir=None):
    """Write the sampling-ready model from a training ``checkpoint``; returns its path and the
    header's extra fields.

    ``out`` defaults to the shipped file of the checkpoint's kind: ``book_unet.npz``,
    ``conditional_unet.npz``, ``latent_unet.npz`` or ``improved_unet.npz``. The improved U-Net
    has GroupNorm, no BatchNorm, so its averaged weights need no re-estimated statistics."""

    model, header = model_from_checkpoint(checkpoint)
    kind = checkpoint_kind(header)
    if out is None:
        out = PRETRAINED[kind]
    used_ema = model.use_ema_weights()
    recalibrate = recalibrate if kind != "improved" else 0  # GroupNorm: no statistics to redo
    if used_ema and recalibrate:
        recalibrate_on_training_data(model, recalibrate, data_dir)
    model.ema = model.optimizer = None  # ship the weights only: no optimizer state, no copy
    history = header.get("history", {})
    extra = {"source_checkpoint": os.path.basename(str(checkpoint)), "weights": "moving average"
             if used_ema else "trained", "batchnorm_recalibrated_batches": recalibrate if used_ema
             else 0, "epochs_trained": header.get("epoch"), "final_loss": (history.get("loss") or
             [None])[-1], "final_val_loss": (history.get("val_loss") or [None])[-1]}
    save_checkpoint(out, model, extra=extra)
    return {"path": str(out), **extra}


def main(argv=None):
    from ._cli import parser as new_parser, whole_number

    parser = new_parser("python -m tinyddpm.pretrained", __doc__.split("\n\n")[0])
    parser.add_argument("--export", metavar="CHECKPOINT", required=True,
                        help="training checkpoint to turn into the shipped model")
    parser.add_argument("--out", default=None, help="where to write it (default: the shipped "
                        "file of its kind: "
                        f"{', '.join(p.name for p in PRETRAINED.values())})")
    parser.add_argument("--recalibrate", type=whole_number(0), default=200, metavar="BATCHES",
                        help="re-estimate BatchNorm statistics for the averaged weights on this "
                        "many training batches (0: don't)")
    parser.add_argument("--data-dir", default=None, help="folder with the IDX files (default: "
                        "the usual places, then the embedded subset)")
    args = parser.parse_args(argv)
    try:
        info = export_pretrained(args.export, args.out, args.recalibrate, args.data_dir)
    except (CheckpointError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {info.pop('path')}: {info}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
