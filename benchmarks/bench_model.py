"""Whole-model benchmark: the book's U-Net trained and sampled in tinyddpm, beside PyTorch.

On the reference model (``/work/shared/DESIGN.md``, "The reference model"; float32, random inputs
of the right shapes and ranges: x ~ N(0, 1) of shape (N, 28, 28, 1), t ~ U{1..4000}, target
noise ~ N(0, 1)) this measures, for tinyddpm and for the faithful PyTorch port in
``torch_unet.py`` (when torch is installed):

* training throughput, images/s: forward + Huber loss + backward + Nadam step
  (tinyddpm: ``Model.train_step`` with ``Huber()`` and ``Nadam()``; torch:
  ``F.huber_loss`` and ``NAdam(lr=1e-3, eps=1e-7, momentum_decay=1.0)``, the momentum schedule
  of current Keras), at batch 32 and 128 (``--quick`` skips 128);
* sampling throughput, image-steps/s: one U-Net call in inference mode (``eval()``, no graph) at
  batch 64 -- one of the T denoising steps of ``generate``;
* FLOPs per image, counted analytically as 2 x the multiply-adds of every conv and dense layer
  (training = 3 x forward: the backward computes the input and the weight gradients), and the
  GFLOP/s each measurement achieves, beside NumPy's float32 1024 x 1024 matmul measured in the
  same run (the roofline a GEMM-shaped convolution can approach);
* peak resident memory (``ru_maxrss``) of a fresh process right after its batch-32 training
  measurement, everything included: interpreter, libraries, JIT caches, model, graph, optimizer;
* for tinyddpm, where a training step's time goes: every op's forward and backward timed by
  wrapping the ``forward``/``backward`` of each ``tinyddpm.tensor.Function`` subclass, plus the
  Python around them and the optimizer (``--breakdown``, on by default);
* a correctness guard: tinyddpm's weights copied into the torch port give the same output on the
  same input (max |difference| < 1e-3), in inference mode and in training mode.

Each measurement is the median over ``--repeats`` timed runs of a few calls, after a warm-up,
pooled over ``--rounds`` rounds in which the frameworks take turns (tinyddpm, torch, tinyddpm,
...), so that load from outside the machine's control, which comes in bursts on shared hosts,
falls on both sides alike.

Every framework runs in its own fresh subprocess (this script with ``--worker``), one after the
other: torch's OpenMP threads keep spinning after each op, and on a 2-core machine that steals the
cores from numba and OpenBLAS (see ``bench_kernels.py``); a fresh process also makes the peak
memory that framework's own. torch runs once in NCHW and once in ``channels_last``, and each
measurement keeps the faster layout (``torch.set_num_threads(--threads)``). Both processes get the
same glibc malloc setting (``tinyddpm._malloc.keep_freed_memory``: freed blocks are kept for reuse
instead of being unmapped), which tinyddpm makes on import; the torch process loads that file
alone, without importing tinyddpm.

    python benchmarks/bench_model.py            # full run, 3 rounds (about 2 minutes)
    python benchmarks/bench_model.py --quick    # 1 round, fewer repeats, no batch 128
    python benchmarks/bench_model.py --no-torch --no-breakdown

Results go to ``benchmarks/results/bench_model.json`` and ``.md`` (``bench_model_quick.*`` with
``--quick``) and the Markdown table is printed.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
if importlib.util.find_spec("tinyddpm") is None:  # a checkout that is not installed
    sys.path.insert(0, str(ROOT))
if str(HERE) not in sys.path:  # torch_unet.py, however this script was started
    sys.path.insert(0, str(HERE))

from machine import blas_threads, busy_cores, matmul_roofline  # noqa: E402  (benchmarks/)

T = 4000                  # diffusion steps of the reference model
IMAGE = (28, 28, 1)       # NHWC image shape (tinyddpm's); the torch port reads it as (1, 28, 28)
MEMORY_BATCH = 32         # the training batch whose peak memory is reported
SAMPLE_BATCH = 64
EXPECTED_PARAMS = 280_369
CHECK_TOLERANCE = 1e-3


# --------------------------------------------------------------------------- plan and data

def plan(args):
    """What to measure and how often; the workers derive the same plan from the same flags."""
    repeats = args.repeats or (3 if args.quick else 10)
    return dict(
        repeats=repeats,
        images_per_run=32 if args.quick else 96,
        train_batches=[MEMORY_BATCH] if args.quick else [MEMORY_BATCH, 128],
        sample_batch=SAMPLE_BATCH,
        warmup=2 if args.quick else 3,
        budget_s=5 if args.quick else 30,  # per measurement, past the first 3 runs
        breakdown_steps=3 if args.quick else 10,
        rounds=args.rounds or (1 if args.quick else 3),
    )


def calls_per_run(p, batch):
    """Calls timed together in one run: ``images_per_run`` images' worth, at least one call."""
    return max(1, p["images_per_run"] // batch)


def random_batch(n, seed):
    """(x (n, 28, 28, 1) float32 ~ N(0, 1), t (n,) int64 ~ U{1..T}, noise ~ N(0, 1)), the same for
    every framework given the same seed."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *IMAGE), dtype=np.float32)
    t = rng.integers(1, T + 1, size=n, dtype=np.int64)
    noise = rng.standard_normal((n, *IMAGE), dtype=np.float32)
    return x, t, noise


# --------------------------------------------------------------------------- FLOPs

def layer_macs(widths=(32, 64, 128), embed=64, book_order=False):
    """[(layer, multiply-adds per image)] of every conv and dense layer of the reference U-Net.

    ``book_order=False`` counts what tinyddpm and the torch port run: the up blocks' skip conv
    1x1 before the up-sampling (identical result, 1/4 of the work); ``True``, the book's order.
    """
    rows = []
    hw, first = 32, widths[0] // 2
    rows.append(("stem conv 3x3 1->16", hw * hw * 9 * 1 * first))
    rows.append(("stem time dense", embed * first))
    c = first
    for i, w in enumerate(widths):
        px = hw * hw
        rows += [(f"down{i} depthwise 3x3 (x{c})", px * 9 * c),
                 (f"down{i} pointwise {c}->{w}", px * c * w),
                 (f"down{i} depthwise 3x3 (x{w})", px * 9 * w),
                 (f"down{i} pointwise {w}->{w}", px * w * w),
                 (f"down{i} skip conv 1x1/2 {c}->{w}", (hw // 2) ** 2 * c * w),
                 (f"down{i} time dense", embed * w)]
        c, hw = w, hw // 2
    for i, (w, cross) in enumerate(zip((*reversed(widths[:-1]), first), reversed(widths))):
        px = hw * hw
        skip_px = 4 * px if book_order else px
        rows += [(f"up{i} conv-transpose 3x3 {c}->{w}", px * 9 * c * w),
                 (f"up{i} conv-transpose 3x3 {w}->{w}", px * 9 * w * w),
                 (f"up{i} skip conv 1x1 {c}->{w}", skip_px * c * w),
                 (f"up{i} time dense", embed * w)]
        c, hw = w + cross, hw * 2
    rows.append((f"head conv 3x3 {c}->1", hw * hw * 9 * c * 1))
    return rows


def model_flops():
    """Forward and training FLOPs per image (2 x MACs; training = 3 x forward)."""
    forward = 2 * sum(m for _, m in layer_macs())
    return dict(forward=forward, train=3 * forward,
                forward_book_order=2 * sum(m for _, m in layer_macs(book_order=True)))


# ------------------------------------------------------------------ timing, memory, machine

def time_runs(fn, repeats, per_run, warmup, jit_count=None, max_extra_warmup=10,
              budget_s=None, min_runs=3):
    """Seconds per call: the median (and min, max) over ``repeats`` runs of ``per_run`` calls each,
    after at least ``warmup`` untimed calls. With ``budget_s``, runs stop once that much time went
    into them (at least ``min_runs``), so a pathologically slow case cannot stall the benchmark.
    ``cpu_s``: the process's CPU time per call (all threads; spinning thread pools count).

    ``jit_count()``, if given, counts the JIT-compiled specialisations (tinyddpm's numba kernels):
    the warm-up goes on (up to ``max_extra_warmup`` more calls) until a call compiles nothing --
    numba compiles, or reloads from its cache, on first use, which can take seconds -- and
    compilations during the timed runs are reported (``jit_during_timing``).
    """
    count = jit_count() if jit_count else 0
    calls = 0
    while True:
        fn()
        calls += 1
        before, count = count, jit_count() if jit_count else 0
        if calls >= warmup and count == before or calls >= warmup + max_extra_warmup:
            break
    samples, cpu, start = [], [], time.perf_counter()
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(per_run):
            fn()
        samples.append((time.perf_counter() - t0) / per_run)
        cpu.append((time.process_time() - c0) / per_run)
        if budget_s and len(samples) >= min_runs and time.perf_counter() - start > budget_s:
            break
    return dict(median_s=statistics.median(samples), min_s=min(samples), max_s=max(samples),
                cpu_s=statistics.median(cpu), samples_s=samples, runs=len(samples),
                calls_per_run=per_run, warmup=calls,
                jit_during_timing=(jit_count() - count) if jit_count else None)


def threads_description():
    """How tinyddpm used the cores: numba's threads, and whether the products ran on them."""
    import numba
    from tinyddpm.kernels import blas
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "threading layer not started"
    where = ("products split over them, NumPy's OpenBLAS on one thread" if blas.SHARED_POOL
             else "products in NumPy's BLAS")
    return f"{numba.get_num_threads()} numba threads ({layer}), {where}"


def numba_specialisations():
    """How many compiled specialisations tinyddpm's numba kernels hold (grows while they JIT)."""
    import tinyddpm.kernels as K
    count = 0
    for module in vars(K).values():
        if getattr(module, "__name__", "").startswith("tinyddpm.kernels.") and \
                isinstance(module, type(K)):
            for obj in vars(module).values():
                signatures = getattr(obj, "signatures", None)
                if isinstance(signatures, list):
                    count += len(signatures)
    return count


def memory_mib():
    """{'rss': current resident MiB, 'peak': ru_maxrss MiB} of this process (Linux units: KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rss = None
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    except OSError:
        pass
    return dict(rss=rss, peak=peak)


def keep_freed_memory_like_tinyddpm():
    """Apply ``tinyddpm._malloc.keep_freed_memory`` without importing tinyddpm (loads that one
    file), so the torch process gets the same glibc malloc setting and no numba in its memory."""
    spec = importlib.util.find_spec("tinyddpm")
    folder = Path(spec.submodule_search_locations[0]) if spec else ROOT / "tinyddpm"
    file_spec = importlib.util.spec_from_file_location("_tinyddpm_malloc", folder / "_malloc.py")
    module = importlib.util.module_from_spec(file_spec)
    file_spec.loader.exec_module(module)
    return module.keep_freed_memory()


# --------------------------------------------------------------------------- tinyddpm's breakdown

def op_label(cls, args, kwargs):
    """A row name for one op call: the Function's class, with the kernel size for convolutions."""
    name = {"_HuberFn": "Huber loss"}.get(cls.__name__, cls.__name__)
    kernel = args[1] if len(args) > 1 else None
    if cls.__name__.startswith("Conv2D") and getattr(kernel, "ndim", 0) == 4:
        name += f" {kernel.shape[0]}x{kernel.shape[1]}"
        if kwargs.get("stride", 1) != 1:
            name += f" stride {kwargs['stride']}"
    return name


class OpProfiler:
    """Wall time of every tinyddpm op's forward and backward, keyed by :func:`op_label`.

    While installed (``with profiler:``) the ``forward`` and ``backward`` staticmethods of every
    ``Function`` subclass that defines them are replaced by timing wrappers; ``Function.apply``
    and ``Tensor.backward`` call them through the class, so every call is seen. The forward
    wrapper leaves the label on the op's context for the backward. Leaving restores the originals.
    """

    def __init__(self, function_base):
        self.base = function_base
        self.forward = defaultdict(float)
        self.backward = defaultdict(float)
        self.calls = defaultdict(int)
        self._replaced = []

    def reset(self):
        for table in (self.forward, self.backward, self.calls):
            table.clear()

    def __enter__(self):
        for cls in self._subclasses(self.base):
            for phase in ("forward", "backward"):
                original = vars(cls).get(phase)
                if original is None:
                    continue
                fn = original.__func__ if isinstance(original, staticmethod) else original
                wrapper = self._wrap_forward(cls, fn) if phase == "forward" else \
                    self._wrap_backward(cls, fn)
                self._replaced.append((cls, phase, original))
                setattr(cls, phase, staticmethod(wrapper))
        return self

    def __exit__(self, *exc):
        while self._replaced:
            cls, phase, original = self._replaced.pop()
            setattr(cls, phase, original)
        return False

    @staticmethod
    def _subclasses(cls):
        found, stack = [], list(cls.__subclasses__())
        while stack:
            sub = stack.pop()
            found.append(sub)
            stack.extend(sub.__subclasses__())
        return found

    def _wrap_forward(self, cls, fn):
        totals, calls, clock = self.forward, self.calls, time.perf_counter

        def forward(ctx, *args, **kwargs):
            key = op_label(cls, args, kwargs)
            ctx.profile_key = key
            t0 = clock()
            try:
                return fn(ctx, *args, **kwargs)
            finally:
                totals[key] += clock() - t0
                calls[key] += 1
        return forward

    def _wrap_backward(self, cls, fn):
        totals, clock = self.backward, time.perf_counter

        def backward(ctx, grad):
            key = getattr(ctx, "profile_key", cls.__name__)
            t0 = clock()
            try:
                return fn(ctx, grad)
            finally:
                totals[key] += clock() - t0
        return backward


class _PhaseTimer:
    """Wraps a callable, adding each call's wall time to ``totals[name]``."""

    def __init__(self, fn, totals, name):
        self.fn, self.totals, self.name = fn, totals, name

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.totals[self.name] += time.perf_counter() - t0


def profile_training(model, inputs, targets, steps):
    """Per-op breakdown of ``steps`` calls of the real ``model.train_step``.

    Besides the ops (:class:`OpProfiler`), ``Tensor.backward`` and the optimizer's ``step`` are
    timed, so the step splits into forward + loss (the rest), backward and optimizer, and the
    Python outside the ops in each phase shows.
    """
    from tinyddpm.tensor import Function, Tensor
    phases = defaultdict(float)
    original_backward = Tensor.backward
    timed_backward = _PhaseTimer(original_backward, phases, "backward")
    Tensor.backward = lambda self, *args, **kwargs: timed_backward(self, *args, **kwargs)
    model.optimizer.step = _PhaseTimer(model.optimizer.step, phases, "optimizer")
    try:
        with OpProfiler(Function) as prof:
            model.train_step(inputs, targets)  # one step with the wrappers in place, not counted
            prof.reset()
            phases.clear()
            for _ in range(steps):
                t0 = time.perf_counter()
                model.train_step(inputs, targets)
                phases["step"] += time.perf_counter() - t0
    finally:
        Tensor.backward = original_backward
        del model.optimizer.step  # the instance attribute; the class's method shows again
    per = {k: v / steps for k, v in phases.items()}
    step = per["step"]
    per["forward"] = step - per["backward"] - per["optimizer"]
    rows = [dict(name=k, calls=prof.calls[k] / steps, fwd_s=prof.forward[k] / steps,
                 bwd_s=prof.backward.get(k, 0.0) / steps)
            for k in set(prof.forward) | set(prof.backward)]
    ops_fwd, ops_bwd = sum(r["fwd_s"] for r in rows), sum(r["bwd_s"] for r in rows)
    rows += [dict(name="(forward: Python outside the ops: layer calls, input checks, graph "
                       "recording, rest of train_step)", calls=None,
                  fwd_s=per["forward"] - ops_fwd, bwd_s=0.0),
             dict(name="(backward: graph walk, gradient accumulation)", calls=None, fwd_s=0.0,
                  bwd_s=per["backward"] - ops_bwd),
             dict(name=f"({type(model.optimizer).__name__} step)", calls=None, fwd_s=0.0, bwd_s=0.0,
                  other_s=per["optimizer"])]
    for r in rows:
        r["total_s"] = r["fwd_s"] + r["bwd_s"] + r.get("other_s", 0.0)
        r["share"] = r["total_s"] / step
    rows.sort(key=lambda r: -r["total_s"])
    return dict(steps=steps, step_s=step, forward_s=per["forward"], backward_s=per["backward"],
                optimizer_s=per["optimizer"], ops_per_step=sum(prof.calls.values()) / steps,
                rows=rows)


# --------------------------------------------------------------------------- workers

def tinyddpm_worker(args, p):
    """Measure tinyddpm in this (fresh) process; returns the JSON-able results."""
    import tinyddpm
    from tinyddpm import Huber, Nadam, build_diffusion_model, no_grad
    from tinyddpm._malloc import keep_freed_memory
    malloc = keep_freed_memory()  # already done on import; repeated to learn whether it took
    model = build_diffusion_model(seed=0).compile(loss=Huber(), optimizer=Nadam())
    out = dict(version=tinyddpm.__version__, malloc_keep_freed=malloc,
               params=model.count_params(), blas_threads=blas_threads(),
               setup_memory_mib=memory_mib(), train={})
    for batch in p["train_batches"]:
        x, t, noise = random_batch(batch, seed=batch)
        inputs = {"X_noisy": x, "time": t}
        out["train"][batch] = time_runs(lambda: model.train_step(inputs, noise), p["repeats"],
                                        calls_per_run(p, batch), p["warmup"],
                                        numba_specialisations, budget_s=p["budget_s"])
        if batch == MEMORY_BATCH:
            out["train_memory_mib"] = memory_mib()
        log(f"tinyddpm train b{batch}", out["train"][batch])
    x, t, _ = random_batch(p["sample_batch"], seed=p["sample_batch"])
    model.eval()
    with no_grad():
        out["sample"] = time_runs(lambda: model({"X_noisy": x, "time": t}), p["repeats"],
                                  calls_per_run(p, p["sample_batch"]), p["warmup"],
                                  numba_specialisations, budget_s=p["budget_s"])
    model.train()
    log(f"tinyddpm sample b{p['sample_batch']}", out["sample"])
    out["numba_specialisations"] = numba_specialisations()
    out["threads"] = threads_description()
    if args.breakdown:
        x, t, noise = random_batch(MEMORY_BATCH, seed=MEMORY_BATCH)
        out["breakdown"] = profile_training(model, {"X_noisy": x, "time": t}, noise,
                                            p["breakdown_steps"])
        out["breakdown"]["unprofiled_step_s"] = out["train"][MEMORY_BATCH]["median_s"]
    return out


def torch_worker(args, p):
    """Measure the torch port in this (fresh) process, in the layout ``args.layout``."""
    malloc = keep_freed_memory_like_tinyddpm()
    try:
        import torch
        import torch.nn.functional as TF
    except ImportError:
        return None
    from torch_unet import TorchUNet, count_params
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fmt = torch.channels_last if args.layout == "channels_last" else torch.contiguous_format
    model = TorchUNet(T).to(memory_format=fmt)
    optimizer = torch.optim.NAdam(model.parameters(), lr=1e-3, eps=1e-7, momentum_decay=1.0)

    def tensors(batch):
        x, t, noise = random_batch(batch, seed=batch)
        as_image = lambda a: torch.from_numpy(a).reshape(batch, 1, 28, 28).contiguous(  # noqa: E731
            memory_format=fmt)                       # C = 1: NHWC and NCHW hold the same bytes
        return as_image(x), torch.from_numpy(t), as_image(noise)

    out = dict(version=torch.__version__, threads=torch.get_num_threads(), layout=args.layout,
               malloc_keep_freed=malloc, params=count_params(model),
               setup_memory_mib=memory_mib(), train={})
    for batch in p["train_batches"]:
        x, t, noise = tensors(batch)

        def train_step():
            model.train()
            optimizer.zero_grad(set_to_none=True)
            loss = TF.huber_loss(model(x, t), noise, delta=1.0)
            loss.backward()
            optimizer.step()
            return loss.item()
        out["train"][batch] = time_runs(train_step, p["repeats"], calls_per_run(p, batch),
                                        p["warmup"], budget_s=p["budget_s"])
        if batch == MEMORY_BATCH:
            out["train_memory_mib"] = memory_mib()
        log(f"torch {args.layout} train b{batch}", out["train"][batch])
    x, t, _ = tensors(p["sample_batch"])
    model.eval()
    with torch.no_grad():
        out["sample"] = time_runs(lambda: model(x, t), p["repeats"],
                                  calls_per_run(p, p["sample_batch"]), p["warmup"],
                                  budget_s=p["budget_s"])
    log(f"torch {args.layout} sample b{p['sample_batch']}", out["sample"])
    return out


def check_worker(args, p):
    """tinyddpm's weights (made non-trivial) copied into the torch port: same outputs?"""
    try:
        import torch
    except ImportError:
        return None
    from tinyddpm import build_diffusion_model
    from torch_unet import TorchUNet, count_params, load_tinyddpm_state
    torch.set_num_threads(args.threads)
    model = build_diffusion_model(seed=1)
    rng = np.random.default_rng(1)
    state = model.state_dict()
    for name, a in state.items():  # biases, BatchNorm affine and statistics away from 0 and 1
        if name.endswith(("bias", "beta", "moving_mean")):
            state[name] = rng.normal(0, 0.1, a.shape).astype(a.dtype)
        elif name.endswith(("gamma", "moving_variance")):
            state[name] = rng.uniform(0.5, 1.5, a.shape).astype(a.dtype)
    model.load_state_dict(state)
    port = load_tinyddpm_state(TorchUNet(T), model.state_dict())
    x, t, _ = random_batch(8, seed=8)
    xt, tt = torch.from_numpy(x).reshape(8, 1, 28, 28), torch.from_numpy(t)
    from tinyddpm import no_grad
    diffs = {}
    for mode in ("inference", "training"):  # training: batch statistics (updates the moving ones)
        model.train(mode == "training")
        port.train(mode == "training")
        with no_grad(), torch.no_grad():
            a = model({"X_noisy": x, "time": t}).data
            b = port(xt, tt).numpy().reshape(a.shape)
        diffs[mode] = float(np.abs(a - b).max())
    return dict(params_tinyddpm=model.count_params(), params_torch=count_params(port),
                max_abs_diff=diffs, output_scale=float(np.abs(a).max()), batch=8,
                passed=all(d < CHECK_TOLERANCE for d in diffs.values())
                and model.count_params() == count_params(port) == EXPECTED_PARAMS)


def log(what, timing):
    jit = timing.get("jit_during_timing")
    print(f"  {what:34s} {timing['median_s'] * 1e3:8.1f} ms per call (median of "
          f"{timing['runs']} x {timing['calls_per_run']}, after {timing['warmup']} warm-up calls"
          + (f"; {jit} JIT compilations while timed!" if jit else "") + ")",
          file=sys.stderr, flush=True)


def run_worker(name, args, layout=None, breakdown=None):
    """Run this script as ``--worker name`` in a fresh process; its JSON (or None), with the
    cores other processes kept busy just before it started (``busy_cores_before``)."""
    breakdown = args.breakdown if breakdown is None else breakdown
    load = busy_cores()
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", name,
               "--threads", str(args.threads)]
    if args.quick:
        command.append("--quick")
    if args.repeats:
        command += ["--repeats", str(args.repeats)]
    if not breakdown:
        command.append("--no-breakdown")
    if layout:
        command += ["--layout", layout]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result is not None:
        result["busy_cores_before"] = load
    return result


def merge_rounds(results):
    """One worker's results from several rounds as one: each measurement's timed runs pooled
    (median, min and max over all of them), everything else from the first round."""
    merged = dict(results[0])

    def pool(timings):
        samples = [s for t in timings for s in t["samples_s"]]
        return dict(timings[0], median_s=statistics.median(samples), min_s=min(samples),
                    max_s=max(samples), cpu_s=statistics.median(t["cpu_s"] for t in timings),
                    samples_s=samples, runs=len(samples),
                    round_medians_s=[t["median_s"] for t in timings])
    if "train" in merged:
        merged["train"] = {b: pool([r["train"][b] for r in results]) for b in merged["train"]}
    if "sample" in merged:
        merged["sample"] = pool([r["sample"] for r in results])
    merged["rounds"] = len(results)
    return merged


# --------------------------------------------------------------------------- results

def summarise(tiny, torch_runs, flops, roofline):
    """Rows of the main table: per measurement, both frameworks' numbers and the ratio."""
    def layouts(kind, batch=None):
        """Each torch layout that ran this measurement: [(timing, layout, run)]."""
        options = [(r[kind] if batch is None else r[kind].get(str(batch)), r["layout"], r)
                   for r in torch_runs]
        return [o for o in options if o[0]]

    def best(kind, batch=None):
        """The torch layout that ran this measurement fastest: (timing, layout, run)."""
        options = layouts(kind, batch)
        return min(options, key=lambda o: o[0]["median_s"]) if options else (None, None, None)

    def entry(timing, batch, flops_per_image):
        if timing is None:
            return None
        rate = batch / timing["median_s"]
        gflops = rate * flops_per_image / 1e9
        return dict(per_s=rate, ms=timing["median_s"] * 1e3, best_ms=timing["min_s"] * 1e3,
                    best_per_s=batch / timing["min_s"], gflops=gflops,
                    roofline_share=gflops / roofline,
                    cpu_per_wall=timing["cpu_s"] / timing["median_s"],
                    spread=(timing["max_s"] - timing["min_s"]) / timing["median_s"],
                    round_ms=[v * 1e3 for v in timing.get("round_medians_s", [])])

    def row(key, what, unit, tiny_timing, kind, batch, flops_per_image):
        torch_batch = batch if kind == "train" else None  # torch results: train per batch
        t_timing, layout, _ = best(kind, torch_batch)
        return dict(key=key, what=what, unit=unit,
                    tinyddpm=entry(tiny_timing, batch, flops_per_image),
                    torch=entry(t_timing, batch, flops_per_image), layout=layout,
                    ratio_by_layout={name: timing["median_s"] / tiny_timing["median_s"]
                                     for timing, name, _ in layouts(kind, torch_batch)})

    rows = [row(f"train_b{batch}", f"training, batch {batch}", "images/s",
                tiny["train"][str(batch)], "train", batch, flops["train"])
            for batch in sorted(int(b) for b in tiny["train"])]
    rows.append(row(f"sample_b{SAMPLE_BATCH}", f"sampling, batch {SAMPLE_BATCH}",
                    "image-steps/s", tiny["sample"], "sample", SAMPLE_BATCH, flops["forward"]))
    for r in rows:
        r["ratio"] = r["torch"] and r["tinyddpm"]["per_s"] / r["torch"]["per_s"]
        r["ratio_best"] = r["torch"] and r["tinyddpm"]["best_per_s"] / r["torch"]["best_per_s"]
    _, layout, run = best("train", MEMORY_BATCH)
    memory = dict(tinyddpm=tiny["train_memory_mib"]["peak"],
                  tinyddpm_setup=tiny["setup_memory_mib"]["rss"],
                  torch=run and run["train_memory_mib"]["peak"],
                  torch_setup=run and run["setup_memory_mib"]["rss"], layout=layout)
    memory["ratio"] = memory["torch"] and memory["tinyddpm"] / memory["torch"]
    return rows, memory


def yes(flag):
    return {True: "yes", False: "no"}.get(flag, "-")


def fmt(value, spec=".1f"):
    return "-" if value is None else format(value, spec)


def markdown(rows, memory, info, breakdown, check, top=15):
    """The report: headline table, notes, tinyddpm's breakdown, the correctness check."""
    f = info["flops"]
    torch_text = (f"torch {info['torch']} ({info['torch_threads']} threads, the faster of NCHW "
                  "and channels_last per row)" if info["torch"] else "torch not measured")
    lines = [
        f"## tinyddpm vs PyTorch on the book's U-Net ({info['cpu_count']} cores, float32)", "",
        f"Roofline: NumPy float32 1024x1024 matmul **{info['roofline_gflops']:.0f} GFLOP/s** "
        f"(better of before/after: {info['roofline_before']:.0f} / {info['roofline_after']:.0f}). "
        f"Model: {f['forward'] / 1e6:.1f} MFLOP per image forward as run "
        f"({f['forward_book_order'] / 1e6:.1f} in the book's order of the up blocks' skip conv), "
        f"training {f['train'] / 1e6:.1f} MFLOP (3x forward). tinyddpm {info['tinyddpm']} "
        f"({info['tiny_threads']}; BLAS threads {info['blas_threads']}) vs {torch_text}. "
        f"Medians of {info['rounds']} x {info['repeats']} runs ({info['rounds']} rounds, "
        f"each framework in a fresh process in turn, the runs pooled; fewer where a case "
        f"passed its time budget) after a warm-up. Both processes "
        f"keep freed memory (glibc mallopt "
        f"M_MMAP_THRESHOLD/M_TRIM_THRESHOLD, as tinyddpm/_malloc.py), applied: tinyddpm "
        f"{yes(info['malloc']['tinyddpm'])}, torch {yes(info['malloc']['torch'])}.", "",
        "| measurement | unit | tinyddpm | torch | tinyddpm / torch | tinyddpm GFLOP/s "
        "(% roofline) | torch GFLOP/s (% roofline) | torch layout |",
        "|---|---|--:|--:|--:|--:|--:|---|"]

    def cell(e):
        return f"{e['per_s']:.0f} ({e['ms']:.1f} ms; best {e['best_ms']:.1f})" if e else "-"

    for r in rows:
        a, b = r["tinyddpm"], r["torch"]
        lines.append(
            f"| {r['what']} | {r['unit']} | {cell(a)} | {cell(b)} | {fmt(r['ratio'], '.2f')} "
            f"(best {fmt(r['ratio_best'], '.2f')}) | "
            f"{a['gflops']:.1f} ({a['roofline_share']:.0%}) | "
            + (f"{b['gflops']:.1f} ({b['roofline_share']:.0%})" if b else "-")
            + f" | {r['layout'] or '-'} |")
    lines.append(f"| peak RSS, training batch {MEMORY_BATCH} (fresh process) | MiB | "
                 f"{memory['tinyddpm']:.0f} | {fmt(memory['torch'], '.0f')} | "
                 f"{fmt(memory['ratio'], '.2f')} | | | {memory['layout'] or '-'} |")
    lines.append(f"| of which resident before the first step (imports, model) | MiB | "
                 f"{fmt(memory['tinyddpm_setup'], '.0f')} | {fmt(memory['torch_setup'], '.0f')} "
                 f"| | | | |")
    lines += ["", "tinyddpm / torch: the throughput ratio of the medians (best: of each side's "
              "fastest run); above 1, tinyddpm is faster. For memory, the ratio of peak MiB "
              "(below 1: tinyddpm smaller). (x ms; best y): median and fastest run's time per "
              "call. GFLOP/s from the medians."]
    lines.append("CPU time / wall time per call (both cores busy: 2; includes spinning thread "
                 "pools): " + "; ".join(
                     f"{r['what']} tinyddpm {r['tinyddpm']['cpu_per_wall']:.1f}"
                     + (f", torch {r['torch']['cpu_per_wall']:.1f}" if r["torch"] else "")
                     for r in rows) + ".")
    by_layout = [f"{r['what']} " + ", ".join(f"{layout} {v:.2f}"
                                            for layout, v in r["ratio_by_layout"].items())
                 for r in rows if r.get("ratio_by_layout")]
    if by_layout:
        lines.append("tinyddpm / torch in each of torch's layouts (medians; NCHW is torch's "
                     "default, channels_last its NHWC): " + "; ".join(by_layout) + ".")
    rounds = [f"{r['what']}: tinyddpm " + " / ".join(f"{v:.1f}" for v in r["tinyddpm"]["round_ms"])
              + ("; torch " + " / ".join(f"{v:.1f}" for v in r["torch"]["round_ms"])
                 if r["torch"] else "")
              for r in rows if r["tinyddpm"] and len(r["tinyddpm"]["round_ms"]) > 1]
    if rounds:
        lines.append("Each round's median, ms per call: " + "; ".join(rounds) + ".")
    loads = [f"{name} {v:.1f}" for name, v in info["busy_cores"].items() if v is not None]
    if loads:
        lines.append("Cores kept busy by other processes just before each part: "
                     + ", ".join(loads) + ".")
    noisy = [r["what"] for r in rows for side in ("tinyddpm", "torch")
             if r[side] and r[side]["spread"] > 0.2]
    if max([v for v in info["busy_cores"].values() if v is not None], default=0) > 0.3:
        noisy.insert(0, "other processes kept cores busy")
    if noisy:
        lines.append(f"Noisy (runs spread over 20% of the median, or a loaded machine): "
                     f"{', '.join(sorted(set(noisy)))}.")
    if check:
        d = check["max_abs_diff"]
        lines += ["", f"Correctness: tinyddpm's weights copied into the torch port, batch "
                  f"{check['batch']}: max |difference| {d['inference']:.1e} in inference mode, "
                  f"{d['training']:.1e} in training mode (outputs up to "
                  f"{check['output_scale']:.1f}; tolerance {CHECK_TOLERANCE:g}): "
                  f"{'PASS' if check['passed'] else 'FAIL'}; parameters "
                  f"{check['params_tinyddpm']:,} / {check['params_torch']:,}."]
    if breakdown:
        b = breakdown
        lines += ["", f"### Where a tinyddpm training step goes (batch {MEMORY_BATCH}, "
                  f"{b['steps']} profiled steps, {b['ops_per_step']:.0f} ops per step)", "",
                  f"Profiled ``train_step`` {b['step_s'] * 1e3:.1f} ms (unprofiled median "
                  f"{b['unprofiled_step_s'] * 1e3:.1f} ms) = forward + loss "
                  f"{b['forward_s'] * 1e3:.1f} + backward {b['backward_s'] * 1e3:.1f} + Nadam "
                  f"{b['optimizer_s'] * 1e3:.1f}. Each op's forward and backward timed inside "
                  f"the step; top {top} rows by total time:", "",
                  "| op | calls/step | fwd ms | bwd ms | total ms | % of step |",
                  "|---|--:|--:|--:|--:|--:|"]
        for r in b["rows"][:top]:
            calls = "-" if r["calls"] is None else f"{r['calls']:.0f}"
            lines.append(f"| {r['name']} | {calls} | {r['fwd_s'] * 1e3:.2f} | "
                         f"{r['bwd_s'] * 1e3:.2f} | {r['total_s'] * 1e3:.2f} | "
                         f"{r['share']:.1%} |")
        rest = b["rows"][top:]
        if rest:
            lines.append(f"| ({len(rest)} more) | | | | {sum(r['total_s'] for r in rest) * 1e3:.2f}"
                         f" | {sum(r['share'] for r in rest):.1%} |")
    return "\n".join(lines)


def write_atomic(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- main

def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Training and sampling throughput, GFLOP/s, peak memory and a per-op time "
                    "breakdown of the book's U-Net in tinyddpm, beside a faithful PyTorch port "
                    "(benchmarks/torch_unet.py) and NumPy's matmul roofline.")
    parser.add_argument("--quick", action="store_true",
                        help="under a minute: 3 short repeats, batch 32 training only "
                             "(no batch 128)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per measurement, each of ~96 images' worth of calls "
                             "(32 with --quick), after a warm-up (default 10; 3 with --quick)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="times the frameworks are measured in turn, each in a fresh "
                             "process, runs pooled (default 3; 1 with --quick)")
    parser.add_argument("--no-torch", action="store_true",
                        help="skip PyTorch (also skipped, with a note, when it is not installed)")
    parser.add_argument("--breakdown", action=argparse.BooleanOptionalAction, default=True,
                        help="profile where a tinyddpm training step goes, per op (default on)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch.set_num_threads (default 2, the machine's cores); tinyddpm's "
                             "BLAS keeps its own setting, reported in the output")
    parser.add_argument("--json", metavar="PATH", default=None,
                        help="where to write the JSON results (default "
                             "benchmarks/results/bench_model.json, bench_model_quick.json "
                             "with --quick)")
    parser.add_argument("--md", metavar="PATH", default=None,
                        help="where to write the Markdown table (default next to the JSON, "
                             ".md)")
    parser.add_argument("--worker", choices=("tinyddpm", "torch", "check"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--layout", choices=("NCHW", "channels_last"), default="NCHW",
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if ((args.repeats is not None and args.repeats < 1) or args.threads < 1
            or (args.rounds is not None and args.rounds < 1)):
        parser.error("--repeats, --rounds and --threads must be positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    p = plan(args)
    if args.worker:  # a subprocess: measure one framework, print JSON on the last line
        worker = {"tinyddpm": tinyddpm_worker, "torch": torch_worker, "check": check_worker}
        print(json.dumps(worker[args.worker](args, p)))
        return 0

    started = time.perf_counter()
    load = busy_cores()
    if load is not None and load > 0.3:
        print(f"warning: {load:.1f} cores were busy just before starting: something else is "
              "running, so the timings will be noisy", file=sys.stderr)
    roofline_before = matmul_roofline(p["repeats"])
    print(f"  NumPy matmul roofline {roofline_before:.0f} GFLOP/s", file=sys.stderr)
    # Rounds alternate the frameworks (tinyddpm, torch NCHW, torch channels_last, again ...), so
    # a burst of load from outside this machine's control hits both sides alike.
    tiny_rounds, torch_rounds, check = [], {"NCHW": [], "channels_last": []}, None
    with_torch = not args.no_torch
    for r in range(p["rounds"]):
        tiny_rounds.append(run_worker("tinyddpm", args, breakdown=args.breakdown and r == 0))
        for layout in ("NCHW", "channels_last") if with_torch else ():
            result = run_worker("torch", args, layout, breakdown=False)
            if result is None:
                print("note: torch is not installed; tinyddpm alone", file=sys.stderr)
                with_torch = False
                break
            torch_rounds[layout].append(result)
    tiny = merge_rounds(tiny_rounds)
    torch_runs = [merge_rounds(runs) for runs in torch_rounds.values() if runs]
    if torch_runs:
        check = run_worker("check", args)
    roofline_after = matmul_roofline(p["repeats"])
    roofline = max(roofline_before, roofline_after)
    flops = model_flops()
    rows, memory = summarise(tiny, torch_runs, flops, roofline)
    info = dict(
        quick=args.quick, repeats=p["repeats"], rounds=p["rounds"], plan=p, flops=flops,
        flops_per_layer=layer_macs(), roofline_gflops=roofline, roofline_before=roofline_before,
        roofline_after=roofline_after, tinyddpm=tiny["version"],
        blas_threads=", ".join(tiny["blas_threads"] or ["unknown"]),
        tiny_threads=tiny.get("threads", "threads unknown"),
        torch=torch_runs[0]["version"] if torch_runs else None,
        torch_threads=torch_runs[0]["threads"] if torch_runs else None,
        malloc=dict(tinyddpm=tiny["malloc_keep_freed"],
                    torch=torch_runs[0]["malloc_keep_freed"] if torch_runs else None),
        numpy=np.__version__, python=platform.python_version(), machine=platform.machine(),
        cpu_count=os.cpu_count(),
        busy_cores=dict(start=load, tinyddpm=tiny["busy_cores_before"],
                        **{f"torch {r['layout']}": r["busy_cores_before"] for r in torch_runs},
                        end=busy_cores()),
        seconds=time.perf_counter() - started)
    stem = "bench_model_quick" if args.quick else "bench_model"
    json_path = Path(args.json) if args.json else RESULTS / f"{stem}.json"
    md_path = Path(args.md) if args.md else json_path.with_suffix(".md")
    write_atomic(json_path, json.dumps(dict(info=info, rows=rows, memory=memory, check=check,
                                            tinyddpm=tiny, torch=torch_runs), indent=1))
    table = markdown(rows, memory, info, tiny.get("breakdown"), check)
    print(table)
    print(f"\n(the run took {info['seconds']:.0f} s)")
    write_atomic(md_path, table + "\n")
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    if check and not check["passed"]:
        print("error: the torch port does not reproduce tinyddpm's output", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
