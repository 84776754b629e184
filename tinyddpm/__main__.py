"""Command line: ``python -m tinyddpm train ...`` and ``python -m tinyddpm sample ...``."""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def _train(args):
    import tinyddpm as td

    (X_full, _), _ = td.load_fashion_mnist(args.data_dir)
    n_valid = 5000 if len(X_full) >= 20000 else len(X_full) // 12  # the embedded subset is small
    X_train, X_valid = td.split_train_valid(X_full, n_valid=n_valid)
    seed = args.seed if args.seed is not None else int(np.random.default_rng().integers(2**31))
    model = td.build_diffusion_model(seed=seed)
    model.compile(loss=td.Huber(), optimizer=td.Nadam(learning_rate=args.learning_rate),
                  ema=args.ema)
    ckpt = args.checkpoint
    best_path = os.path.splitext(ckpt)[0] + ".best.npz"
    if args.resume:
        if not os.path.exists(ckpt):
            sys.exit(f"--resume: no checkpoint at {ckpt!r}; start without --resume")
        header = td.load_checkpoint(ckpt, model, model.optimizer)
        seed = header.get("data_seed", seed)
        print(f"Resuming from {ckpt}: {model.epoch} epochs and {model.step_in_epoch} batches done "
              f"(data seed {seed})")
    elif os.path.exists(ckpt):
        sys.exit(f"{ckpt!r} already exists: pass --resume to continue it, or choose another "
                 "--checkpoint")
    train_set = td.prepare_dataset(X_train, args.batch_size, shuffle=True, seed=seed)
    valid_set = td.prepare_dataset(X_valid, args.batch_size, seed=seed + 1)
    print(f"Training the book's U-Net ({model.count_params():,} weights) on {len(X_train):,} "
          f"images, validating on {len(X_valid):,}; batch {args.batch_size}, seed {seed}")
    latest = td.ModelCheckpoint(ckpt, save_on_interrupt=True, extra={"data_seed": seed})
    best = td.ModelCheckpoint(best_path, save_best_only=True, extra={"data_seed": seed})
    if args.resume and model.history.history.get("val_loss"):
        best.best = min(model.history.history["val_loss"])
    start = time.perf_counter()
    try:
        model.fit(train_set, epochs=args.epochs, validation_data=valid_set,
                  callbacks=[latest, best], verbose=0 if args.quiet else 1,
                  steps_per_epoch=args.steps_per_epoch)
    except KeyboardInterrupt:
        print(f"\nInterrupted. The state after epoch {model.epoch + 1}, batch "
              f"{model.step_in_epoch} is saved in {ckpt}; continue with:\n  python -m tinyddpm "
              f"train --epochs {args.epochs} --checkpoint {ckpt} --resume"
              + (f" --data-dir {args.data_dir}" if args.data_dir else ""))
        return 130
    except td.TrainingDiverged as e:
        print(f"\nStopped: {e}\nThe last good checkpoint is {ckpt}.", file=sys.stderr)
        return 1
    print(f"Done in {time.perf_counter() - start:.0f} s. Latest state: {ckpt}; best validation "
          f"loss: {best_path}")
    return 0


def _sample(args):
    import tinyddpm as td
    from tinyddpm.plotting import save_grid

    model = td.build_diffusion_model()
    header = td.load_checkpoint(args.checkpoint, model)
    used_ema = not args.no_ema and model.use_ema_weights()
    if used_ema and args.recalibrate:
        # the BatchNorm statistics in the checkpoint belong to the trained weights, not to their
        # average: re-estimate them (measured after 6 epochs, DDIM-50, 1,000 samples: FID 25.2
        # and 7/10 classes without this step, 12.5 and 10/10 with it)
        from tinyddpm.pretrained import recalibrate_on_training_data

        used = recalibrate_on_training_data(model, args.recalibrate, args.data_dir)
        print(f"BatchNorm statistics re-estimated for the averaged weights ({used} batches)")
    model.eval()
    start = time.perf_counter()
    if args.sampler == "ddpm":
        images = td.generate(model, args.n, seed=args.seed)
    else:
        images = td.generate_ddim(model, args.n, steps=args.steps, eta=args.eta, seed=args.seed,
                                  progress=True)
    took = time.perf_counter() - start
    what = "DDPM, %d steps" % (model.config["T"] - 1) if args.sampler == "ddpm" else \
        f"DDIM, {args.steps} steps"
    weights = "moving-average weights" if used_ema else "weights"
    print(f"{args.n} images ({what}) from {args.checkpoint} ({weights}, epoch "
          f"{header.get('epoch')}) in {took:.1f} s")
    save_grid(images, args.out)
    print(f"grid: {args.out}")
    if args.npy:
        np.save(args.npy, images[..., 0].astype(np.float32))
        print(f"array: {args.npy} (shape {images[..., 0].shape}, float32 in [0, 1])")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m tinyddpm",
                                     description="Train the book's diffusion model and sample from it.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train the book's U-Net on Fashion-MNIST",
                           description="Train the book's U-Net as a DDPM on the 55,000/5,000 split "
                           "of Fashion-MNIST (the embedded subset where the full set is absent). "
                           "Saves the latest state to --checkpoint after every epoch and on "
                           "Ctrl-C, and the best validation loss to <checkpoint>.best.npz.")
    train.add_argument("--epochs", type=int, required=True, help="total number of epochs")
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--learning-rate", type=float, default=1e-3, help="Nadam learning rate")
    train.add_argument("--data-dir", default=None, help="folder with the four IDX files")
    train.add_argument("--checkpoint", default="ckpt.npz", help="latest-state checkpoint path")
    train.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    train.add_argument("--seed", type=int, default=None, help="seed for weights and data order")
    train.add_argument("--steps-per-epoch", type=int, default=None,
                       help="stop each epoch after this many batches (quick trials)")
    train.add_argument("--ema", type=float, default=None, metavar="DECAY",
                       help="keep a moving average of the weights for sampling, e.g. 0.999")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=_train)

    sample = sub.add_parser("sample", help="generate images from a checkpoint",
                            description="Generate images with the full DDPM loop of the slides "
                            "or with DDIM, and save them as a PNG grid (and a .npy array).")
    sample.add_argument("--checkpoint", required=True)
    sample.add_argument("--n", type=int, default=64, help="number of images")
    sample.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddim")
    sample.add_argument("--steps", type=int, default=50, help="DDIM steps")
    sample.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0: deterministic)")
    sample.add_argument("--seed", type=int, default=None)
    sample.add_argument("--out", default="grid.png", help="PNG grid path")
    sample.add_argument("--npy", default=None, help="also save an (n, 28, 28) float32 array")
    sample.add_argument("--no-ema", action="store_true",
                        help="use the trained weights even where the checkpoint has an average")
    sample.add_argument("--recalibrate", type=int, default=200, metavar="BATCHES",
                        help="with averaged weights, re-estimate BatchNorm statistics on this "
                        "many training batches first (0: don't)")
    sample.add_argument("--data-dir", default=None, help="folder with the IDX files (for "
                        "--recalibrate)")
    sample.set_defaults(func=_sample)

    from tinyddpm.metrics import add_evaluate_command
    add_evaluate_command(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # epoch lines reach a log file at once
    from tinyddpm.checkpoint import CheckpointError
    from tinyddpm.data import DataError

    try:
        return args.func(args)
    except (CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
