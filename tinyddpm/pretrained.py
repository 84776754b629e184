"""The shipped model: the book's U-Net trained with ``python -m tinyddpm train`` (see MODEL_CARD.md).

``load_pretrained()`` returns it ready to sample. ``python -m tinyddpm.pretrained --export
ckpt.npz`` makes the shipped file from a training checkpoint: it takes the moving average of the
weights, re-estimates the BatchNorm statistics for them, and keeps only what sampling needs.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint

PRETRAINED_PATH = Path(__file__).resolve().parent / "assets" / "book_unet.npz"


def load_pretrained(path=PRETRAINED_PATH):
    """The shipped diffusion model, in inference mode (``generate`` / ``generate_ddim`` ready)."""
    from .unet import build_diffusion_model

    if not os.path.exists(path):
        raise CheckpointError(f"the pretrained model {str(path)!r} is missing from this install; "
                              "reinstall tinyddpm, or train one with `python -m tinyddpm train`")
    model = build_diffusion_model()
    load_checkpoint(path, model)
    return model.eval()


def recalibrate_on_training_data(model, batches=200, data_dir=None):
    """Re-estimate the BatchNorm statistics on ``batches`` shuffled training batches (seed 0).

    Needed after ``use_ema_weights()``: the saved statistics belong to the trained weights.
    """
    from .data import load_fashion_mnist, split_train_valid
    from .diffusion import prepare_dataset

    (X_full, _), _ = load_fashion_mnist(data_dir)
    X_train, _ = split_train_valid(X_full, n_valid=len(X_full) // 12)
    data = prepare_dataset(X_train, 32, shuffle=True, seed=0)
    return model.recalibrate_batchnorm(data, batches=batches)


def export_pretrained(checkpoint, out=PRETRAINED_PATH, recalibrate=200, data_dir=None):
    """Write the sampling-ready model from a training ``checkpoint``; returns the header."""
    import tinyddpm as td

    header, *_ = read_checkpoint(checkpoint)
    model = td.build_diffusion_model()
    td.load_checkpoint(checkpoint, model)
    used_ema = model.use_ema_weights()
    if used_ema and recalibrate:
        recalibrate_on_training_data(model, recalibrate, data_dir)
    model.ema = None  # ship the weights only: no optimizer state, no second copy
    history = header.get("history", {})
    extra = {"source_checkpoint": os.path.basename(str(checkpoint)), "weights": "moving average"
             if used_ema else "trained", "batchnorm_recalibrated_batches": recalibrate if used_ema
             else 0, "epochs_trained": header.get("epoch"), "final_loss": (history.get("loss") or
             [None])[-1], "final_val_loss": (history.get("val_loss") or [None])[-1]}
    save_checkpoint(out, model, extra=extra)
    return extra


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tinyddpm.pretrained", description=__doc__)
    parser.add_argument("--export", metavar="CHECKPOINT", required=True,
                        help="training checkpoint to turn into the shipped model")
    parser.add_argument("--out", default=str(PRETRAINED_PATH))
    parser.add_argument("--recalibrate", type=int, default=200, metavar="BATCHES")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    info = export_pretrained(args.export, args.out, args.recalibrate, args.data_dir)
    print(f"wrote {args.out}: {info}")


if __name__ == "__main__":
    main()
