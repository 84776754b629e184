"""Train the book's U-Net as a DDPM in PyTorch, on one process or many (DistributedDataParallel).

    torchrun --nproc_per_node 2 examples/train_torch_ddp.py --epochs 20 --out ddp.pt  # 2 CPU processes
    torchrun --nproc_per_node 8 examples/train_torch_ddp.py --epochs 20 --out ddp.pt  # 8 GPUs
    python examples/train_torch_ddp.py --epochs 1 --out ddp.pt                        # one process
    python -m tinyddpm export --checkpoint ddp.pt --to tinyddpm --out ddp.npz         # back

It is the run `python -m tinyddpm train` makes, in PyTorch:

* the model: ``tinyddpm.export.to_torch(build_diffusion_model(seed=...))`` (``--conditional``:
  ``num_classes=10``), the same architecture and initial weights;
* the data: tinyddpm's loader (``load_fashion_mnist``, ``split_train_valid``: the 55,000
  training images); a ``DistributedSampler`` deals each process its share of every epoch's
  shuffled images;
* the batches: ``tinyddpm.prepare_batch`` (t ~ U{1..T}, the model's cosine schedule, X_noisy =
  sqrt(abar_t) x + sqrt(1 - abar_t) eps; with ``--conditional``, labels dropped to "no class"
  with probability ``--label-dropout``), each image with its own generator seeded (seed,
  epoch, image index): an image gets the same t and noise whatever the number of processes;
* the loss, Huber (delta 1): ``torch.nn.HuberLoss(delta=1.0)``; the optimizer, Keras' Nadam:
  ``torch.optim.NAdam(eps=1e-7, momentum_decay=1.0)``, whose momentum schedule mu_t = beta_1
  (1 - 0.5 * 0.96^t) is current Keras' (torch's default, momentum_decay=0.004, is old Keras'
  0.96^(0.004 t)); tests/test_export.py checks a step against tinyddpm's Nadam;
* BatchNorm: Keras' (momentum 0.99, epsilon 1e-3, biased moving variance), with the batch
  statistics of all the processes' batches together (synchronised, like torch's
  SyncBatchNorm). So ``--batch-size``, the global batch split evenly between the processes,
  gives the same run on 1, 2 or 8 processes, up to float rounding (tests/test_export.py runs 2
  processes against 1).

Backend: NCCL where CUDA is available (a GPU a process, ``LOCAL_RANK``), gloo on CPU. The first
process writes ``--out`` (atomically) after every epoch: a ``tinyddpm.export.save_torch`` file
(weights, config, epochs and loss history), which ``tinyddpm.export.from_torch`` and ``python
-m tinyddpm export --to tinyddpm`` turn back into a tinyddpm model (to sample it, measure it,
use it in the lessons). Not here (yet): validation, a moving average of the weights, resuming.
"""
from __future__ import annotations

import os
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
                   "their number, split evenly between them)")
    p.add_argument("--learning-rate", type=real_number(0, low_open=True), default=1e-3,
                   help="Nadam's learning rate")
    p.add_argument("--seed", type=whole_number(0, 2**31 - 1), default=None,
                   help="seed for the weights, the data order and the noise (default: a random "
                   "one, printed)")
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


def huber():
    """Keras' Huber(delta=1), the mean over every value: torch's HuberLoss(delta=1)."""
    import torch

    return torch.nn.HuberLoss(delta=1.0)


def noised_images(X, y, alpha_cumprod, seed, label_dropout):
    """A torch ``Dataset``: item i of epoch ``dataset.epoch`` is image i through
    ``tinyddpm.prepare_batch`` with the generator seeded (seed, epoch, i), as tensors
    (X_noisy (28, 28, 1) float32, time int64[, label int64], noise)."""
    import torch

    import tinyddpm as td

    class NoisedImages(torch.utils.data.Dataset):
        epoch = 0

        def __len__(self):
            return len(X)

        def __getitem__(self, i):
            rng = np.random.default_rng([seed, self.epoch, i])
            labels = None if y is None else y[i:i + 1]
            inputs, noise = td.prepare_batch(X[i:i + 1], alpha_cumprod, rng=rng, y=labels,
                                             label_dropout=label_dropout)
            item = [torch.from_numpy(inputs["X_noisy"][0]), torch.tensor(int(inputs["time"][0]))]
            if "label" in inputs:
                item.append(torch.tensor(int(inputs["label"][0])))
            return (*item, torch.from_numpy(noise[0]))

    return NoisedImages()


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
    try:
        check_output(args.out, "--out", (".pt", ".pth"), need_bytes=16 * 2**20, example="ddp")
    except ValueError as e:
        parser.error(str(e))
    import torch
    import torch.distributed as dist
    from torch.utils.data import DataLoader, DistributedSampler

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

    (X_full, y_full), _ = td.load_fashion_mnist(args.data_dir)
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
    optimizer, loss_fn = keras_nadam(ddp.parameters(), args.learning_rate), huber()
    data = noised_images(X_train, y_train if args.conditional else None,
                         td.model_schedule(model)[1], seed,
                         0.1 if args.label_dropout is None else args.label_dropout)
    sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=seed,
                                 drop_last=True)
    loader = DataLoader(data, batch_size=args.batch_size // world, sampler=sampler,
                        drop_last=True)
    steps = min(len(loader), args.steps_per_epoch or len(loader))
    say(f"Training {'the class-conditional' if args.conditional else 'the book' + chr(39) + 's'} "
        f"U-Net in PyTorch on {world} process{'es' if world > 1 else ''} ({device.type}, "
        f"{dist.get_backend() if world > 1 else 'no backend'}): {len(X_train):,} images, global "
        f"batch {args.batch_size}, {steps} steps an epoch, seed {seed}")
    history = []
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        data.epoch = epoch
        start, total = time.perf_counter(), torch.zeros((), device=device)
        for step, (*inputs, noise) in zip(range(steps), loader):
            inputs = [v.to(device, dtype if v.is_floating_point() else None) for v in inputs]
            loss = loss_fn(ddp(*inputs), noise.to(device, dtype))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
        if world > 1:  # the mean of every process's mean: the global batch's mean
            dist.all_reduce(total)
            total /= world
        history.append(float(total) / steps)
        if rank == 0:
            save_torch(net, args.out, epoch=epoch + 1, history={"loss": history})
        took = time.perf_counter() - start
        say(f"Epoch {epoch + 1}/{args.epochs}: loss={history[-1]:.4f} "
            f"({steps * args.batch_size / took:,.0f} images/s) -> {args.out}")
    if world > 1:
        dist.barrier()  # the first process has written --out
        dist.destroy_process_group()
    say(f"Back to tinyddpm: python -m tinyddpm export --checkpoint {args.out} --to tinyddpm "
        "--out ddp.npz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
