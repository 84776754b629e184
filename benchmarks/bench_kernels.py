"""Time tinyddpm's convolution-family ops at the shapes of the book's U-Net, beside PyTorch.

For every conv, depthwise conv, transposed conv, max pool, up-sampling and batch norm of the
reference model (``/work/shared/DESIGN.md``, "The reference model"; batch 32, NHWC, float32) this
times the forward and the backward (input and weight gradients) of the tinyddpm functional op,
the median of ``--repeats`` runs after a warm-up, and reports:

* ms, and GFLOP/s for convolutions (2 * MACs forward, 4 * MACs backward: input + weight
  gradients), GB/s for the memory-bound ops, counting only compulsory traffic (forward: read x,
  write y; backward: read dy (and x for batch norm), write dx) -- a lower bound on the bytes
  a two-pass kernel moves;
* NumPy's float32 1024 x 1024 matmul GFLOP/s in the same run: the roofline a GEMM-shaped
  convolution can approach;
* torch's time on the same op in NCHW and in channels_last, keeping whichever is faster
  (``torch.set_num_threads(--threads)``), and the ratio torch_time / tinyddpm_time (above 1:
  tinyddpm is faster).

torch runs in a separate process, after the tinyddpm timings: its OpenMP threads keep spinning
after each op, and on a 2-core machine that steals the cores from numba and OpenBLAS (and the
other way round), which made both sides' timings several times slower when they were interleaved
in one process. That process gets the same glibc malloc setting tinyddpm makes on import
(``tinyddpm._malloc``), so both sides reuse freed buffers alike.

Keras' asymmetric 'same' padding (stride 2 on even sizes) is written for torch as an explicit
``F.pad`` (with -inf for max pooling), as a faithful port does.

    python benchmarks/bench_kernels.py                  # full run, Markdown table
    python benchmarks/bench_kernels.py --quick          # under a minute
    python benchmarks/bench_kernels.py --json out.json  # also write the numbers
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

try:
    import tinyddpm  # noqa: F401
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numba  # noqa: E402

from tinyddpm import functional as F  # noqa: E402
from tinyddpm.tensor import Tensor  # noqa: E402

from machine import blas_threads, busy_cores, matmul_roofline  # noqa: E402  (benchmarks/)

torch = TF = None  # imported only in the worker process that times torch (see run_torch_worker)

DTYPE = np.float32


# --------------------------------------------------------------------------- the model's shapes

def model_ops():
    """(kind, label, params, count) for every conv-family op of the reference U-Net.

    params holds per-image sizes; count is how often that op and shape occur in one forward pass.
    """
    ops = [("conv", "stem conv 3x3 valid", dict(h=34, w=34, cin=1, cout=16, k=3, s=1,
                                                 pad="valid"), 1)]
    # down blocks: [ReLU, SeparableConv 3x3 same, BN] x 2, max pool, 1x1 stride-2 skip conv
    c_in, hw = 16, 32
    for width in (32, 64, 128):
        for c in (c_in, width):
            ops.append(("depthwise", "depthwise 3x3 same", dict(h=hw, w=hw, c=c, k=3), 1))
            ops.append(("conv", "pointwise 1x1", dict(h=hw, w=hw, cin=c, cout=width, k=1, s=1,
                                                      pad="same"), 1))
        ops.append(("conv", "skip conv 1x1 stride 2", dict(h=hw, w=hw, cin=c_in, cout=width, k=1,
                                                           s=2, pad="same"), 1))
        c_in, hw = width, hw // 2
    # up blocks: [ReLU, Conv2DTranspose 3x3 same, BN] x 2, up-sample, and the skip path, run as
    # UpSample(Conv1x1(skip)) (the same result as the book's Conv1x1(UpSample(skip)), 4x cheaper)
    skip_c, concat_c = 128, (192, 96, 48)
    for width, out_c in zip((64, 32, 16), concat_c):
        for c in (c_in, width):
            ops.append(("conv_t", "Conv2DTranspose 3x3 same", dict(h=hw, w=hw, cin=c, cout=width,
                                                                   k=3), 1))
        ops.append(("conv", "1x1 conv of the skip", dict(h=hw, w=hw, cin=skip_c, cout=width, k=1,
                                                         s=1, pad="same"), 1))
        skip_c, c_in, hw = out_c, out_c, 2 * hw
    ops.append(("conv", "head conv 3x3 same", dict(h=32, w=32, cin=48, cout=1, k=3, s=1,
                                                   pad="same"), 1))
    for hw, c in ((32, 32), (16, 64), (8, 128)):
        ops.append(("maxpool", "MaxPooling2D 3x3/2 same", dict(h=hw, w=hw, c=c), 1))
    # up-sampling: the block output and the skip conv's output, in each up block
    for hw, c in ((4, 64), (8, 32), (16, 16)):
        ops.append(("upsample", "UpSampling2D x2", dict(h=hw, w=hw, c=c), 2))
    # batch norm: once in the stem, twice in every block
    for hw, c, count in ((32, 16, 1), (32, 32, 2), (16, 64, 2), (8, 128, 2), (4, 64, 2),
                         (8, 32, 2), (16, 16, 2)):
        ops.append(("batchnorm", "BatchNormalization", dict(h=hw, w=hw, c=c), count))
    return ops


def keras_pads(size, k, stride, padding):
    if padding == "valid":
        return 0, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def out_size(size, k, stride, padding):
    return (size - k) // stride + 1 if padding == "valid" else -(-size // stride)


# --------------------------------------------------------------------------- work per op

def describe(kind, p, n):
    """(shape text, fwd FLOPs or None, fwd bytes, bwd FLOPs or None, bwd bytes) at batch n."""
    b = np.dtype(DTYPE).itemsize
    if kind == "conv":
        ho, wo = out_size(p["h"], p["k"], p["s"], p["pad"]), out_size(p["w"], p["k"], p["s"],
                                                                      p["pad"])
        macs = n * ho * wo * p["k"] ** 2 * p["cin"] * p["cout"]
        shape = f"{p['h']}x{p['w']}x{p['cin']} -> {ho}x{wo}x{p['cout']}"
        return shape, 2 * macs, None, 4 * macs, None
    if kind == "conv_t":
        macs = n * p["h"] * p["w"] * p["k"] ** 2 * p["cin"] * p["cout"]
        shape = f"{p['h']}x{p['w']}x{p['cin']} -> {p['h']}x{p['w']}x{p['cout']}"
        return shape, 2 * macs, None, 4 * macs, None
    if kind == "depthwise":
        macs = n * p["h"] * p["w"] * p["k"] ** 2 * p["c"]
        shape = f"{p['h']}x{p['w']}x{p['c']}"
        return shape, 2 * macs, None, 4 * macs, None
    size = n * p["h"] * p["w"] * p["c"] * b
    if kind == "maxpool":
        out = size // 4
        return f"{p['h']}x{p['w']}x{p['c']} -> {p['h'] // 2}x{p['w'] // 2}x{p['c']}", None, \
            size + out, None, out + size
    if kind == "upsample":
        return f"{p['h']}x{p['w']}x{p['c']} -> {2 * p['h']}x{2 * p['w']}x{p['c']}", None, \
            5 * size, None, 5 * size
    if kind == "batchnorm":  # forward: read x, write y; backward: read dy and x, write dx
        return f"{p['h']}x{p['w']}x{p['c']}", None, 2 * size, None, 3 * size
    raise ValueError(kind)


# --------------------------------------------------------------------------- timing

def median_time(fn, repeats, before=None):
    """Median wall time of ``fn()`` over ``repeats`` runs, after one warm-up run."""
    if before:
        before()
    fn()
    times = []
    for _ in range(repeats):
        if before:
            before()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_pair(forward, leaves, repeats, backward_call):
    """(forward seconds, backward seconds): backward re-runs on one retained graph, leaf
    gradients cleared before each run so they are written, not accumulated."""
    t_fwd = median_time(forward, repeats)
    y = forward()
    g = backward_call(y)

    def clear():
        for t in leaves:
            t.grad = None
    t_bwd = median_time(g, repeats, before=clear)
    return t_fwd, t_bwd


def tiny_case(kind, p, n, rng):
    """(forward callable, leaf tensors) for the tinyddpm op."""
    def tensor(*shape, scale=1.0):
        return Tensor((rng.standard_normal(shape) * scale).astype(DTYPE), requires_grad=True)
    if kind == "conv":
        x = tensor(n, p["h"], p["w"], p["cin"])
        k = tensor(p["k"], p["k"], p["cin"], p["cout"], scale=0.1)
        bias = tensor(p["cout"])
        return (lambda: F.conv2d(x, k, bias, stride=p["s"], padding=p["pad"])), [x, k, bias]
    if kind == "conv_t":
        x = tensor(n, p["h"], p["w"], p["cin"])
        k = tensor(p["k"], p["k"], p["cout"], p["cin"], scale=0.1)
        bias = tensor(p["cout"])
        return (lambda: F.conv2d_transpose(x, k, bias, padding="same")), [x, k, bias]
    if kind == "depthwise":
        x = tensor(n, p["h"], p["w"], p["c"])
        k = tensor(p["k"], p["k"], p["c"], 1, scale=0.3)
        return (lambda: F.depthwise_conv2d(x, k, padding="same")), [x, k]
    x = tensor(n, p["h"], p["w"], p["c"])
    if kind == "maxpool":
        return (lambda: F.max_pool2d(x, 3, 2, "same")), [x]
    if kind == "upsample":
        return (lambda: F.upsample2d(x, 2)), [x]
    if kind == "batchnorm":
        gamma, beta = tensor(p["c"]), tensor(p["c"])
        moving = {"mean": np.zeros(p["c"], DTYPE), "var": np.ones(p["c"], DTYPE)}

        def forward():  # what BatchNormalization does in training, moving statistics included
            stats = {}
            y = F.batch_norm_train(x, gamma, beta, 1e-3, stats=stats)
            moving["mean"] = 0.99 * moving["mean"] + 0.01 * stats["mean"]
            moving["var"] = 0.99 * moving["var"] + 0.01 * stats["var"]
            return y
        return forward, [x, gamma, beta]
    raise ValueError(kind)


def torch_case(kind, p, n, rng, channels_last):
    """(forward callable, leaf tensors) for the same op in torch (NCHW logical layout)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def tensor(*shape, scale=1.0, image=True):
        t = torch.from_numpy((rng.standard_normal(shape) * scale).astype(DTYPE))
        if image and len(shape) == 4:
            t = t.contiguous(memory_format=fmt)
        return t.requires_grad_(True)
    if kind in ("conv", "conv_t", "depthwise"):
        x = tensor(n, p.get("cin", p.get("c")), p["h"], p["w"])
    else:
        x = tensor(n, p["c"], p["h"], p["w"])
    if kind == "conv":
        k, s = p["k"], p["s"]
        w = tensor(p["cout"], p["cin"], k, k, scale=0.1)
        bias = tensor(p["cout"], image=False)
        pt, pb = keras_pads(p["h"], k, s, p["pad"])
        pl, pr = keras_pads(p["w"], k, s, p["pad"])
        if pt == pb and pl == pr:
            return (lambda: TF.conv2d(x, w, bias, stride=s, padding=(pt, pl))), [x, w, bias]
        return (lambda: TF.conv2d(TF.pad(x, (pl, pr, pt, pb)), w, bias, stride=s)), [x, w, bias]
    if kind == "conv_t":
        w = tensor(p["cin"], p["cout"], p["k"], p["k"], scale=0.1)
        bias = tensor(p["cout"], image=False)
        pad = p["k"] // 2
        return (lambda: TF.conv_transpose2d(x, w, bias, padding=pad)), [x, w, bias]
    if kind == "depthwise":
        w = tensor(p["c"], 1, p["k"], p["k"], scale=0.3)
        return (lambda: TF.conv2d(x, w, padding=p["k"] // 2, groups=p["c"])), [x, w]
    if kind == "maxpool":
        pt, pb = keras_pads(p["h"], 3, 2, "same")
        pl, pr = keras_pads(p["w"], 3, 2, "same")
        return (lambda: TF.max_pool2d(TF.pad(x, (pl, pr, pt, pb), value=-float("inf")), 3, 2)), [x]
    if kind == "upsample":
        return (lambda: TF.interpolate(x, scale_factor=2, mode="nearest")), [x]
    if kind == "batchnorm":
        gamma, beta = tensor(p["c"], image=False), tensor(p["c"], image=False)
        mean, var = torch.zeros(p["c"]), torch.ones(p["c"])
        return (lambda: TF.batch_norm(x, mean, var, gamma, beta, training=True, momentum=0.01,
                                      eps=1e-3)), [x, gamma, beta]
    raise ValueError(kind)


def bench_tiny(kind, p, n, repeats, seed):
    forward, leaves = tiny_case(kind, p, n, np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1)

    def backward_call(y):
        g = rng.standard_normal(y.shape).astype(DTYPE)
        return lambda: y.backward(g)
    return time_pair(forward, leaves, repeats, backward_call)


def bench_torch(kind, p, n, repeats, seed):
    """Best of NCHW and channels_last (by forward + backward): (fwd s, bwd s, format name)."""
    best = None
    for channels_last in (False, True):
        forward, leaves = torch_case(kind, p, n, np.random.default_rng(seed), channels_last)

        def backward_call(y):
            g = torch.randn_like(y)
            return lambda: y.backward(g, retain_graph=True)
        t_fwd, t_bwd = time_pair(forward, leaves, repeats, backward_call)
        name = "channels_last" if channels_last else "NCHW"
        if best is None or t_fwd + t_bwd < best[0] + best[1]:
            best = (t_fwd, t_bwd, name)
    return best


# --------------------------------------------------------------------------- report

def fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def rate(work, seconds):
    return None if work is None else work / seconds / 1e9


def markdown(rows, roofline, info):
    torch_text = (f"torch {info['torch']} with {info['torch_threads']} threads"
                  if info["torch"] else "no torch timings")
    lines = [f"NumPy float32 1024x1024 matmul: **{roofline:.0f} GFLOP/s** (roofline, the better of "
             "two measurements); "
             f"batch {info['batch']}, float32, {info['numba']}, BLAS threads "
             f"{info['blas_threads']}, {torch_text}, median of {info['repeats']} after a warm-up.",
             "Rate: GFLOP/s for convolutions (2 MACs forward, 4 MACs backward), GB/s (compulsory "
             "traffic) for the others. Ratio = torch time / tinyddpm time (above 1: tinyddpm "
             "faster).", "",
             "| op | shape (per image) | n/step | fwd ms | bwd ms | fwd rate | bwd rate "
             "| torch fwd ms | torch bwd ms | torch layout | ratio fwd | ratio bwd |",
             "|---|---|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|"]
    for r in rows:
        unit = "GF/s" if r["fwd_flops"] is not None else "GB/s"
        fr = rate(r["fwd_flops"] or r["fwd_bytes"], r["fwd_s"])
        br = rate(r["bwd_flops"] or r["bwd_bytes"], r["bwd_s"])
        tf, tb = r.get("torch_fwd_s"), r.get("torch_bwd_s")
        lines.append(
            f"| {r['op']} | {r['shape']} | {r['count']} | {r['fwd_s'] * 1e3:.2f} | "
            f"{r['bwd_s'] * 1e3:.2f} | {fmt(fr, 1)} {unit} | {fmt(br, 1)} {unit} | "
            f"{fmt(tf and tf * 1e3)} | {fmt(tb and tb * 1e3)} | {r.get('torch_layout', '-')} | "
            f"{fmt(tf and tf / r['fwd_s'])} | {fmt(tb and tb / r['bwd_s'])} |")
    fwd_total = sum(r["count"] * r["fwd_s"] for r in rows)
    bwd_total = sum(r["count"] * r["bwd_s"] for r in rows)
    line = (f"| **total, n/step times each** | | | {fwd_total * 1e3:.1f} | "
            f"{bwd_total * 1e3:.1f} | | |")
    if rows and "torch_fwd_s" in rows[0]:
        tf = sum(r["count"] * r["torch_fwd_s"] for r in rows)
        tb = sum(r["count"] * r["torch_bwd_s"] for r in rows)
        line += (f" {tf * 1e3:.1f} | {tb * 1e3:.1f} | | {tf / fwd_total:.2f} | "
                 f"{tb / bwd_total:.2f} |")
    else:
        line += " - | - | - | - | - |"
    lines.append(line)
    lines.append("")
    lines.append(f"tinyddpm forward + backward of these ops, as often as in one training step: "
                 f"{(fwd_total + bwd_total) * 1e3:.1f} ms")
    return "\n".join(lines)


def import_torch():
    global torch, TF
    try:
        import torch as _torch
        import torch.nn.functional as _TF
    except ImportError:
        return False
    torch, TF = _torch, _TF
    return True


def selected_ops(only):
    return [(i, op) for i, op in enumerate(model_ops())
            if not only or only.lower() in op[1].lower()]


def run_torch_worker(args, repeats):
    """Time torch on the selected ops (this process imports torch; the parent never does)."""
    try:  # the allocator setting tinyddpm makes for itself (importing it already did this)
        from tinyddpm._malloc import keep_freed_memory
        keep_freed_memory()
    except ImportError:
        pass
    if not import_torch():
        print(json.dumps(None))
        return 0
    torch.set_num_threads(args.threads)
    results = {}
    for i, (kind, label, p, _) in selected_ops(args.only):
        tf, tb, layout = bench_torch(kind, p, args.batch, repeats, seed=i)
        results[i] = dict(torch_fwd_s=tf, torch_bwd_s=tb, torch_layout=layout)
        print(f"  torch {label:30s} fwd {tf * 1e3:8.2f} ms  bwd {tb * 1e3:8.2f} ms ({layout})",
              file=sys.stderr, flush=True)
    print(json.dumps(dict(version=torch.__version__, threads=torch.get_num_threads(),
                          results=results)))
    return 0


def torch_in_subprocess(args, repeats):
    """Run this script as a torch worker; returns its parsed JSON (None without torch)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--torch-worker",
               "--batch", str(args.batch), "--repeats", str(repeats),
               "--threads", str(args.threads)]
    if args.only:
        command += ["--only", args.only]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Forward/backward timings of tinyddpm's conv-family ops at the reference "
                    "U-Net's shapes, beside NumPy's matmul roofline and PyTorch.")
    parser.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per measurement, after one warm-up (default 20; 5 "
                             "with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats: finishes in under a minute")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads for numba and torch (default 2, the machine's cores); "
                             "tinyddpm's matrix products run on the numba threads")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch timings")
    parser.add_argument("--only", default=None,
                        help="run only ops whose label contains this text (e.g. 'depthwise')")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the results here")
    parser.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    repeats = args.repeats or (5 if args.quick else 20)
    if repeats < 1 or args.batch < 1 or args.threads < 1:
        parser.error("--repeats, --batch and --threads must be positive")
    if args.torch_worker:
        return run_torch_worker(args, repeats)

    parallel = parallel_kernels()
    if parallel:  # only then: setting the thread count launches numba's thread pool
        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    load = busy_cores()
    if load is not None and load > 0.3:
        print(f"warning: {load:.1f} cores were busy just before starting: something else is "
              "running, so the timings will be noisy", file=sys.stderr)
    started = time.perf_counter()
    roofline = matmul_roofline(repeats)
    rows = []
    for i, (kind, label, p, count) in selected_ops(args.only):
        shape, fwd_flops, fwd_bytes, bwd_flops, bwd_bytes = describe(kind, p, args.batch)
        t_fwd, t_bwd = bench_tiny(kind, p, args.batch, repeats, seed=i)
        rows.append(dict(index=i, op=label, kind=kind, params=p, shape=shape, count=count,
                         fwd_s=t_fwd, bwd_s=t_bwd, fwd_flops=fwd_flops, bwd_flops=bwd_flops,
                         fwd_bytes=fwd_bytes, bwd_bytes=bwd_bytes))
        print(f"  {label:30s} {shape:24s} fwd {t_fwd * 1e3:8.2f} ms  bwd {t_bwd * 1e3:8.2f} ms",
              file=sys.stderr, flush=True)
    roofline_end = matmul_roofline(repeats)  # the machine is shared: measure before and after

    torch_info = None if args.no_torch else torch_in_subprocess(args, repeats)
    if torch_info:
        for row in rows:
            r = torch_info["results"][str(row["index"])]
            row.update(r, ratio_fwd=r["torch_fwd_s"] / row["fwd_s"],
                       ratio_bwd=r["torch_bwd_s"] / row["bwd_s"])

    info = dict(batch=args.batch, repeats=repeats, numba=numba_description(parallel),
                numba_parallel_kernels=parallel,
                blas_threads=", ".join(blas_threads() or ["unknown"]),
                torch=torch_info and torch_info["version"],
                torch_threads=torch_info and torch_info["threads"],
                numpy=np.__version__, numba_version=numba.__version__,
                python=platform.python_version(),
                cpu_count=os.cpu_count(), busy_cores_at_start=load, roofline_gflops=roofline,
                roofline_end_gflops=roofline_end, seconds=time.perf_counter() - started)
    print(markdown(rows, max(roofline, roofline_end), info))
    print(f"\n(matmul before the tinyddpm timings {roofline:.0f} GFLOP/s, after them "
          f"{roofline_end:.0f} GFLOP/s; the run took {info['seconds']:.0f} s)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(dict(info=info, rows=rows), f, indent=1)
    return 0


def parallel_kernels():
    """Names of tinyddpm's numba kernels compiled with parallel=True."""
    import tinyddpm.kernels as K
    names = []
    for module in vars(K).values():
        if getattr(module, "__name__", "").startswith("tinyddpm.kernels.") and \
                isinstance(module, type(K)):
            for name, obj in vars(module).items():
                if getattr(obj, "targetoptions", {}).get("parallel"):
                    names.append(f"{module.__name__.rsplit('.', 1)[1]}.{name}")
    return sorted(names)


def numba_description(parallel):
    if not parallel:
        return "numba kernels serial (none has parallel=True)"
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "layer not started"
    return f"numba threads {numba.get_num_threads()} ({layer}) in {len(parallel)} parallel kernels"


if __name__ == "__main__":
    sys.exit(main())
