"""Train the book's U-Net as a DDPM in PyTorch, on one process or many (DistributedDataParallel).

    torchrun --nproc_per_node 2 examples/train_torch_ddp.py --epochs 20 --out ddp.pt  # 2 CPU processes
    torchrun --nproc_per_node 8 examples/train_torch_ddp.py --epochs 20 --out ddp.pt  # 8 GPUs
    python examples/train_torch_ddp.py --epochs 1 --out ddp.pt                        # one process
    python -m tinyddpm export --checkpoint ddp.pt --to tinyddpm --out ddp.npz         # back

It is the run `python -m tinyddpm train` makes (without validation), in PyTorch:

* the model: ``tinyddpm.export.to_torch(build_diffusion_model(seed=...))`` (``--conditional``:
  ``num_classes=10``), the same architecture and initial weights;
* the data: tinyddpm's loader and pipeline, as ``train`` uses them (``load_fashion_mnist``,
  ``split_train_valid``: the 55,000 training images; ``prepare_dataset(X, batch_size,
  shuffle=True, seed=seed)``: the same shuffle, t ~ U{1..T} and noise, the last partial batch
  kept; with ``--conditional``, labels dropped to "no class" with probability
  ``--label-dropout``): every process draws each global batch, the same one, and takes its
  share (process r of k: images r n / k to (r + 1) n / k), so the batches do not depend on
  the number of processes, and the first step's loss is ``train``'s (tests/test_export.py);
* the loss, Huber (delta 1), the mean over the global batch: each process's
  ``torch.nn.HuberLoss(delta=1.0, reduction="sum")`` times k / (the batch's values), which
  DDP's average of the gradients turns into the gradient of that mean; the optimizer, Keras'
  Nadam: ``torch.optim.NAdam(eps=1e-7, momentum_decay=1.0)``, whose momentum schedule mu_t =
  beta_1 (1 - 0.5 * 0.96^t) is current Keras' (torch's default, momentum_decay=0.004, is old
  Keras' 0.96^(0.004 t)); tests/test_export.py checks a step against tinyddpm's Nadam;
* BatchNorm: Keras' (momentum 0.99, epsilon 1e-3, biased moving variance), with the batch
  statistics of all the processes' batches together (synchronised, like torch's
  SyncBatchNorm). So ``--batch-size``, the global batch split between the processes, gives
  the same run on 1, 2 or 8 processes, up to float rounding (tests/test_export.py runs 2
  processes against 1); an epoch's loss is the mean over its images, as ``train``'s.

Backend: NCCL where CUDA is available (a GPU a process, ``LOCAL_RANK``), gloo on CPU. The first
process writes ``--out`` (atomically) after every epoch: a ``tinyddpm.export.save_torch`` file
(weights, config, epochs and loss history), which ``tinyddpm.export.from_torch`` and ``python
-m tinyddpm export --to tinyddpm`` turn back into a tinyddpm model (to sample it, measure it,
use it in the lessons). Ctrl-C (or SIGTERM) stops every process; the first says what --out
holds (the last finished epoch, written whole) and the script exits with 130 (143 for
SIGTERM), without a traceback. Not here (yet): validation, a moving average of the weights,
resuming.
"""
from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np


def build_parser():
    from tinyddpm._cli import parser, real_number, whole_number

    p = parser("examples/train_torch_ddp.py", __doc__.split("\n\n")[0] + " Launch it with "
               "torchrun (or plain python for one process).",
               epilog="examples:\n"
               "  torchrun --nproc_per_node 2 examples/train_torch_ddp.py --epochs 20 --out "
               "ddp.pt\n"
               "  python -m tinyddpm export --checkpoint ddp.pt --to tinyddpm --out ddp.npz\n"
               "  python -m tinyddpm sample --checkpoint ddp.npz")
    p.add_argument("--epochs", type=whole_number(1), required=True, help="epochs to train")
    p.add_argument("--batch-size", type=whole_number(1), default=32,
                   help="the global batch: images a step, over all processes (a multiple of "
                   "their number, split evenly between them; an epoch's last batch, smaller, as "
                   "evenly as it allows)")
    p.add_argument("--learning-rate", type=real_number(0, low_open=True), default=1e-3,
                   help="Nadam's learning rate")
    p.add_argument("--seed", type=whole_number(0, 2**31 - 1), default=None,
                   help="seed for the weights, the data order and the noise, as `python -m "
                   "tinyddpm train --seed` (default: a random one, printed)")
    p.add_argument("--steps-per-epoch", type=whole_number(1), default=None,
                   help="stop each epoch after this many steps, for quick trials (default: the "
                   "whole training set)")
    p.add_argument("--conditional", action="store_true",
                   help="the class-conditional U-Net (classifier-free guidance)")
    p.add_argument("--label-dropout", type=real_number(0, 1, high_open=True), default=None,
                   metavar="P", help="with --conditional: train on 'no class' with probability "
                   "P (default: 0.1)")
    p.add_argument("--data-dir", default=None, help="folder with the four IDX files (default: "
                   "the usual places, then the embedded subset)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                   help="float64: slower, for checking that runs on different numbers of "
                   "processes agree (in float32 their sums round differently, and Nadam's "
                   "first steps, about lr times the gradient's sign, amplify that for the "
                   "gradients that are near 0)")
    p.add_argument("--out", default="ddp.pt", help="the file to write (.pt)")
    p.add_argument("--quiet", action="store_true", help="no line per epoch")
    return p


def keras_nadam(params, learning_rate=1e-3):
    """Keras' Nadam (beta_1 0.9, beta_2 0.999, epsilon 1e-7, current momentum schedule) in
    torch: NAdam with momentum_decay=1.0, since torch's mu_t = beta_1 (1 - 0.5 * 0.96^(t *
    momentum_decay))."""
    import torch

    return torch.optim.NAdam(params, lr=learning_rate, betas=(0.9, 0.999), eps=1e-7,
                             momentum_decay=1.0)


def huber(reduction="mean"):
    """Keras' Huber(delta=1): torch's HuberLoss(delta=1), the mean over every value ("sum": the
    sum, which ``train`` scales to the global batch's mean)."""
    import torch

    return torch.nn.HuberLoss(delta=1.0, reduction=reduction)


def share(n, world, rank):
    """The images of a global batch of ``n`` that process ``rank`` of ``world`` takes: a slice,
    as even as the batch allows (an epoch's last batch may not split evenly)."""
    return slice(rank * n // world, (rank + 1) * n // world)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if args.batch_size % world:
        parser.error(f"--batch-size {args.batch_size} cannot be split evenly between {world} "
                     f"processes: give a multiple of {world}")
    if args.label_dropout is not None and not args.conditional:
        parser.error("--label-dropout applies to a class-conditional model: add --conditional, "
                     "or drop --label-dropout")
    from tinyddpm._files import check_output
    from tinyddpm.export import MissingDependency, require
    try:
        check_output(args.out, "--out", (".pt", ".pth"), need_bytes=16 * 2**20, example="ddp")
        require("torch", what="examples/train_torch_ddp.py")
    except (MissingDependency, ValueError) as e:
        parser.error(str(e))
    import tinyddpm as td
    from tinyddpm.data import DataError
    from tinyddpm.model import Interrupted

    try:
        (X_full, y_full), _ = td.load_fashion_mnist(args.data_dir)
    except DataError as e:
        parser.error(str(e))

    def stop(signum, frame):  # SIGTERM (kill, torchrun stopping the others): as Ctrl-C
        raise Interrupted(signum)
    signal.signal(signal.SIGTERM, stop)
    try:
        return train(args, world, rank, local_rank, X_full, y_full)
    except KeyboardInterrupt as e:
        if rank == 0:
            interrupted(args, sys.argv[1:] if argv is None else argv)
        return 128 + getattr(e, "signal", signal.SIGINT)


def interrupted(args, argv):
    """After Ctrl-C (on the first process): what --out holds, and how to go on."""
    from tinyddpm._cli import command

    world, local = int(os.environ.get("WORLD_SIZE", "1")), os.environ.get("LOCAL_WORLD_SIZE")
    script = sys.argv[0] if sys.argv[0].endswith(".py") else "examples/train_torch_ddp.py"
    if world == 1:
        again = command("python", script, *argv)
    elif local == str(world):  # one machine
        again = command("torchrun", "--nproc_per_node", local, script, *argv)
    else:
        again = "the same torchrun command on each machine"
    if os.path.exists(args.out):
        try:
            from tinyddpm.export import from_torch

            held = f"the model after {from_torch(args.out).epoch} finished epoch(s)"
        except Exception as e:  # e.g. an --out of an earlier run, damaged since
            held = f"a file that does not read back ({type(e).__name__}: {e})"
        print(f"\nInterrupted; {args.out} holds {held} (written whole at the end of each epoch; "
              f"the epoch under way is lost). The script does not resume: use the file "
              f"({back_command(args.out)}), or start again: {again}", file=sys.stderr)
    else:
        print(f"\nInterrupted before the first epoch ended: nothing was saved. Start again: "
              f"{again}", file=sys.stderr)


def back_command(out):
    """The command that turns --out into a tinyddpm checkpoint beside it."""
    from tinyddpm._cli import command

    return command("python", "-m", "tinyddpm", "export", "--checkpoint", out, "--to",
                   "tinyddpm", "--out", os.path.splitext(out)[0] + ".npz")


def train(args, world, rank, local_rank, X_full, y_full):
    import torch
    import torch.distributed as dist

    threads = torch.get_num_threads()  # torchrun's OMP_NUM_THREADS (1 a process), or the cores
    import tinyddpm as td
    from tinyddpm.export import save_torch, to_torch

    dtype = getattr(torch, args.dtype)
    torch.set_default_dtype(dtype)  # NAdam keeps its scalars in it
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo")
    seed = [args.seed if args.seed is not None else int(np.random.default_rng().integers(2**31))]
    if world > 1:
        dist.broadcast_object_list(seed, src=0)  # every process: the first one's
    seed = seed[0]
    say = print if rank == 0 and not args.quiet else (lambda *a, **k: None)

    (X_train, y_train), _ = td.split_train_valid(X_full, y_full)
    model = td.build_diffusion_model(seed=seed, num_classes=10 if args.conditional else None)
    # tinyddpm's kernels ran (to build the model) on numba's OpenMP threads, whose count (the
    # cores + 1) torch shares: put torch's back, or two processes run 6 threads on 2 cores
    torch.set_num_threads(threads)
    # channels_last: the layout the NHWC inputs already have (and torch's faster one on CPU)
    net = to_torch(model, sync_batchnorm=True).to(device, dtype, memory_format=torch.channels_last)
    net.train()
    ddp = (torch.nn.parallel.DistributedDataParallel(net, device_ids=[local_rank] if cuda
                                                     else None) if world > 1 else net)
    optimizer, loss_sum = keras_nadam(ddp.parameters(), args.learning_rate), huber("sum")
    # the batches `python -m tinyddpm train` trains on: its pipeline, seed and labels
    labels = ({"labels": y_train, "label_dropout": 0.1 if args.label_dropout is None else
               args.label_dropout} if args.conditional else {})
    train_set = td.prepare_dataset(X_train, args.batch_size, shuffle=True, seed=seed, **labels)
    names = ["X_noisy", "time"] + (["label"] if args.conditional else [])
    steps = min(len(train_set), args.steps_per_epoch or len(train_set))
    say(f"Training {'the class-conditional' if args.conditional else 'the book' + chr(39) + 's'} "
        f"U-Net in PyTorch on {world} process{'es' if world > 1 else ''} ({device.type}, "
        f"{dist.get_backend() if world > 1 else 'no backend'}): {len(X_train):,} images, global "
        f"batch {args.batch_size}, {steps} steps an epoch, seed {seed}")
    history = []
    for epoch in range(args.epochs):
        train_set.set_epoch(epoch)
        start, total, images = time.perf_counter(), torch.zeros((), device=device), 0
        for _, (inputs, noise) in zip(range(steps), train_set):
            mine = share(len(noise), world, rank)
            inputs = [torch.from_numpy(inputs[k][mine]).to(
                device, dtype if k == "X_noisy" else torch.int64) for k in names]
            target = torch.from_numpy(noise[mine]).to(device, dtype)
            # the sum times k / (the global batch's values): DDP averages the k processes'
            # gradients into the gradient of the global batch's mean, as one process has it
            loss = loss_sum(ddp(*inputs), target) * (world / noise.size)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(noise)
            images += len(noise)
        if world > 1:  # the processes' shares of each batch's mean, summed
            dist.all_reduce(total)
        history.append(float(total) / (world * images))  # the mean over the epoch's images
        if rank == 0:
            save_torch(net, args.out, epoch=epoch + 1, history={"loss": history})
        took = time.perf_counter() - start
        say(f"Epoch {epoch + 1}/{args.epochs}: loss={history[-1]:.4f} "
            f"({images / took:,.0f} images/s) -> {args.out}")
    if world > 1:
        dist.barrier()  # the first process has written --out
        dist.destroy_process_group()
    say(f"Back to tinyddpm: {back_command(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
