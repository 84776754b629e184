"""Speed on a busy machine: tinyddpm and PyTorch, quiet and with competing busy processes.

A classroom server runs many notebook kernels on a few cores. This benchmark measures what that
does to both frameworks, in the same conditions: each case runs in a fresh process, while
``--competitors`` other processes (``while True: pass``, each bounded in time and killed by this
script) keep the cores busy. Two workloads:

* ``sample``: 64 images with DDIM, 50 steps, on the book's U-Net in inference mode (tinyddpm:
  ``generate_ddim`` on the shipped model; torch: the port in ``torch_unet.py`` called 50 times at
  batch 64 under ``no_grad``, with the same DDIM update in NumPy between the calls);
* ``train``: 10 training steps at batch 32 (forward, Huber loss, backward, Nadam).

Each is timed after a warm-up (JIT, caches, allocator) in the same process. The ratio
loaded / quiet is the figure of merit: with 4 competitors on 2 cores a fair share is about 3x.

    python benchmarks/bench_contention.py                     # quiet, 2 and 4 competitors
    python benchmarks/bench_contention.py --no-torch --competitors 0 4
    python benchmarks/bench_contention.py --env GOMP_SPINCOUNT=0 --label "spin 0"   # a variant

``--env KEY=VALUE`` (repeatable) sets variables for the tinyddpm processes only, to compare
threading settings; the results (``benchmarks/results/bench_contention.{json,md}`` unless
``--env`` or ``--out`` says otherwise) record them.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_model import (T, keep_freed_memory_like_tinyddpm, random_batch,  # noqa: E402
                         write_atomic)
from machine import busy_cores  # noqa: E402

SAMPLE_N, SAMPLE_STEPS, TRAIN_BATCH, TRAIN_STEPS = 64, 50, 32, 10
COMPETITOR_LIMIT_S = 900  # a competitor ends itself after this, whatever happens to this script


def ddim_times(steps=SAMPLE_STEPS):
    """Timesteps from T down, the same for both frameworks (tinyddpm's own spacing)."""
    from tinyddpm.sampling import ddim_timesteps
    return ddim_timesteps(T, steps)[::-1]


# --------------------------------------------------------------------------- workers

def tinyddpm_worker(workload):
    import tinyddpm as td
    if workload == "sample":
        model = td.load_pretrained()
        td.generate_ddim(model, SAMPLE_N, steps=3, seed=1)            # warm-up: JIT, caches
        start = time.perf_counter()
        td.generate_ddim(model, SAMPLE_N, steps=SAMPLE_STEPS, seed=0)
        return time.perf_counter() - start
    model = td.build_diffusion_model(seed=0).compile(loss=td.Huber(), optimizer=td.Nadam())
    x, t, noise = random_batch(TRAIN_BATCH, seed=0)
    inputs = {"X_noisy": x, "time": t}
    for _ in range(3):
        model.train_step(inputs, noise)
    start = time.perf_counter()
    for _ in range(TRAIN_STEPS):
        model.train_step(inputs, noise)
    return time.perf_counter() - start


def torch_worker(workload, layout):
    keep_freed_memory_like_tinyddpm()
    import torch
    import torch.nn.functional as TF
    from torch_unet import TorchUNet
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    model = TorchUNet(T).to(memory_format=fmt)

    def image(a):
        return torch.from_numpy(a).reshape(len(a), 1, 28, 28).contiguous(memory_format=fmt)
    if workload == "sample":
        model.eval()
        alpha_bar = np.cos(((np.arange(T + 1) / T + 0.008) / 1.008) * np.pi / 2) ** 2
        alpha_bar = (alpha_bar / alpha_bar[0]).astype(np.float32)

        def ddim(steps, seed):
            x = np.random.default_rng(seed).standard_normal((SAMPLE_N, 28, 28, 1), np.float32)
            times = ddim_times(steps)
            with torch.no_grad():
                for t, t_prev in zip(times, list(times[1:]) + [0]):
                    eps = model(image(x), torch.full((SAMPLE_N,), int(t))).numpy()
                    eps = eps.reshape(x.shape)
                    x0 = np.clip((x - np.sqrt(1 - alpha_bar[t]) * eps) / np.sqrt(alpha_bar[t]),
                                 -1, 1)
                    eps = (x - np.sqrt(alpha_bar[t]) * x0) / np.sqrt(1 - alpha_bar[t])
                    x = np.sqrt(alpha_bar[t_prev]) * x0 + np.sqrt(1 - alpha_bar[t_prev]) * eps
            return x
        ddim(3, 1)
        start = time.perf_counter()
        ddim(SAMPLE_STEPS, 0)
        return time.perf_counter() - start
    optimizer = torch.optim.NAdam(model.parameters(), lr=1e-3, eps=1e-7, momentum_decay=1.0)
    x, t, noise = random_batch(TRAIN_BATCH, seed=0)
    x, t, noise = image(x), torch.from_numpy(t), image(noise)

    def step():
        optimizer.zero_grad(set_to_none=True)
        TF.huber_loss(model(x, t), noise, delta=1.0).backward()
        optimizer.step()
    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(TRAIN_STEPS):
        step()
    return time.perf_counter() - start


# --------------------------------------------------------------------------- driver

def start_competitors(n):
    code = (f"import time\nend = time.monotonic() + {COMPETITOR_LIMIT_S}\n"
            "while time.monotonic() < end:\n    pass\n")
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]


def stop(processes):
    for p in processes:
        p.kill()
    for p in processes:
        p.wait()


def run_case(framework, workload, competitors, args):
    """Seconds for one workload in a fresh process while ``competitors`` busy processes run."""
    env = dict(os.environ)
    if framework == "tinyddpm":
        env.update(args.env)
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", framework,
               "--workload", workload, "--layout", args.layout]
    busy = start_competitors(competitors)
    try:
        if competitors:
            time.sleep(0.5)  # let them get going
        load = busy_cores(0.3)
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env, check=True,
                              timeout=args.case_timeout)
    finally:
        stop(busy)
    seconds = float(done.stdout.strip().splitlines()[-1])
    print(f"  {framework:8s} {workload:6s} {competitors} competitors: {seconds:7.2f} s "
          f"(busy cores before: {load:.1f})" if load is not None else "", file=sys.stderr,
          flush=True)
    return seconds


def markdown(results, args):
    lines = [f"Competing busy processes: {', '.join(map(str, args.competitors))}; "
             f"{args.rounds} round(s), median; {os.cpu_count()} cores. "
             f"tinyddpm settings: {args.label}.", "",
             "| workload | framework | " + " | ".join(
                 f"{c} competitors (s)" if c else "quiet (s)" for c in args.competitors)
             + " | " + " | ".join(f"ratio at {c}" for c in args.competitors if c) + " |",
             "|---|---|" + "--:|" * (2 * len(args.competitors) - 1)]
    for workload, by_framework in results.items():
        for framework, by_load in by_framework.items():
            quiet = by_load.get("0")
            cells = [f"{by_load[str(c)]:.2f}" for c in args.competitors]
            ratios = [f"{by_load[str(c)] / quiet:.1f}" if quiet else "-"
                      for c in args.competitors if c]
            lines.append(f"| {workload} | {framework} | " + " | ".join(cells + ratios) + " |")
    what = (f"sample: {SAMPLE_N} images, DDIM {SAMPLE_STEPS} steps; train: {TRAIN_STEPS} steps at "
            f"batch {TRAIN_BATCH}; torch {args.layout}, {os.cpu_count()} threads.")
    return "\n".join(lines + ["", what]) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--competitors", type=int, nargs="+", default=[0, 2, 4],
                   help="numbers of busy processes to run beside each case (default: 0 2 4)")
    p.add_argument("--workloads", nargs="+", choices=["sample", "train"],
                   default=["sample", "train"], help="(default: sample train)")
    p.add_argument("--rounds", type=int, default=1, help="repeat every case (default: 1)")
    p.add_argument("--no-torch", action="store_true", help="measure tinyddpm only")
    p.add_argument("--layout", choices=["nchw", "channels_last"], default="channels_last",
                   help="torch's memory layout (default: channels_last, its faster one here)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="an environment variable for the tinyddpm processes (repeatable)")
    p.add_argument("--label", default=None, help="a name for the tinyddpm settings")
    p.add_argument("--case-timeout", type=float, default=600,
                   help="seconds before a case is given up (default: 600)")
    p.add_argument("--out", default=None,
                   help="results path without extension (default: benchmarks/results/"
                   "bench_contention, or bench_contention_variant with --env)")
    p.add_argument("--worker", choices=["tinyddpm", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--workload", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        args.env = dict(item.split("=", 1) for item in args.env)
    except ValueError:
        p.error("--env takes KEY=VALUE")
    args.label = args.label or (", ".join(f"{k}={v}" for k, v in args.env.items())
                                or "as installed")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        seconds = (tinyddpm_worker(args.workload) if args.worker == "tinyddpm"
                   else torch_worker(args.workload, args.layout))
        print(seconds)
        return 0
    frameworks = ["tinyddpm"]
    if not args.no_torch:
        try:
            import torch  # noqa: F401
            frameworks.append("torch")
        except ImportError:
            print("torch is not installed: tinyddpm only", file=sys.stderr)
    runs = {w: {f: {str(c): [] for c in args.competitors} for f in frameworks}
            for w in args.workloads}
    for _ in range(args.rounds):
        for competitors in args.competitors:
            for workload in args.workloads:
                for framework in frameworks:
                    runs[workload][framework][str(competitors)].append(
                        run_case(framework, workload, competitors, args))
    results = {w: {f: {c: statistics.median(s) for c, s in by_load.items()}
                   for f, by_load in by_f.items()} for w, by_f in runs.items()}
    text = markdown(results, args)
    print(text)
    out = Path(args.out) if args.out else HERE / "results" / (
        "bench_contention_variant" if args.env else "bench_contention")
    write_atomic(out.with_suffix(".json"), json.dumps(
        dict(settings=args.label, env=args.env, competitors=args.competitors, runs=runs,
             median_s=results, layout=args.layout, cores=os.cpu_count()), indent=1))
    write_atomic(out.with_suffix(".md"), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
