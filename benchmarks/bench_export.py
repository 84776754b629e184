"""Beyond the laptop, measured: each path's export time, file size and sampling time.

On the shipped book model (``tinyddpm/assets/book_unet.npz``):

* export: ``python -m tinyddpm export --pretrained book --to torch|onnx --out ...``, each in a
  fresh process (the time the command reports for reading, converting and writing the model,
  which for ONNX includes its onnxruntime check; and the whole command, start-up included);
* the file's size;
* sampling 64 images with the README's call, ``td.sample(model, 64, "ddim", steps=50, seed=0)``
  (DDIM, 50 steps, the default trailing spacing), the model being: tinyddpm's own, its torch
  twin (``from_torch`` of the exported file, ``to_torch``, as ``td.sample`` runs it:
  ``TorchModel``), the ONNX file (``OnnxModel``, onnxruntime's CPU provider); the median of
  ``--repeats`` runs of each, taking turns, after a warm-up;
* how far their images are from tinyddpm's: the largest pixel difference, the median over the
  images of each image's largest, the images over 1e-4; the same with ``generate_ddim``'s
  leading spacing (whose first step is t = 3921, not T); and why a few images differ more
  with trailing spacing: its first step is at t = T, where x_0 = (x - sqrt(1 - abar_T) eps) /
  sqrt(abar_T) multiplies the float32 rounding differences of eps by sqrt((1 - abar_T) /
  abar_T) (8e4 for the cosine schedule); clipping x_0 to [-1, 1] erases them except in the
  few pixels whose x_0 lands inside, counted here (``first_step``);
* training: ``examples/train_torch_ddp.py`` on 1 and 2 CPU processes (gloo; ``--steps-per-epoch
  20``, global batch 32), images a second as the script reports it, beside tinyddpm's own
  training step at batch 32.

    python benchmarks/bench_export.py             # about 2 minutes on 2 cores
    python benchmarks/bench_export.py --quick     # 1 repeat, 5 training steps

Results: ``benchmarks/results/bench_export.json`` and ``.md`` (``bench_export_quick.*`` with
``--quick``); the table is printed. It records the load average and the cores other processes
kept busy, before and after: on a shared machine read the numbers with them.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import busy_cores  # noqa: E402

import tinyddpm as td  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"


def run(command, env=None):
    """(stdout, wall seconds) of a command run from the repository root."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return done.stdout, time.perf_counter() - start


def export(to, folder):
    out = folder / f"book.{'pt' if to == 'torch' else 'onnx'}"
    command = [sys.executable, "-m", "tinyddpm", "export", "--pretrained", "book", "--to", to,
               "--out", str(out)]
    text, wall = run(command)
    reported = float(re.search(r"in ([\d.]+) s", text).group(1))
    return out, {"command": " ".join(["python", *command[1:-1], out.name]),
                 "export_s": reported, "command_s": wall, "size_bytes": out.stat().st_size}


def torch_model(model):
    import torch

    from tinyddpm.export import TorchModel, to_torch

    # tinyddpm's first kernels set the OpenMP threads numba shares with torch to cores + 1
    torch.set_num_threads(os.cpu_count() or 1)
    return TorchModel(to_torch(model))  # what td.sample(to_torch(model), ...) runs


def sample(model, spacing=None):
    """The README's call (``spacing=None``: the sampler's default, trailing)."""
    return td.sample(model, 64, "ddim", steps=50, seed=0, spacing=spacing)


def differences(images, reference):
    per_image = np.abs(images - reference).reshape(len(images), -1).max(1)
    return {"max": float(per_image.max()), "median_image": float(np.median(per_image)),
            "images_over_1e-4": int(np.sum(per_image > 1e-4)),
            "worst_images": [int(i) for i in np.argsort(per_image)[::-1][:3]]}


def first_step_from(reference_model, model):
    """``model``, except at t = T, where ``reference_model`` predicts (the test of the
    explanation: with the first step shared, are the images as close as at leading spacing?)."""
    T = reference_model.config["T"]

    def predict(inputs):
        if inputs["time"][0] == T:
            return reference_model(inputs, training=False).data
        return model(inputs, training=False).data if model is reference_model else model(inputs)
    return predict


def first_step(model, reference_model):
    """At trailing spacing's first step, t = T, on the starting noise of seed 0: the largest
    difference of the predicted noise from tinyddpm's, what x_0 = (x - sqrt(1 - abar) eps) /
    sqrt(abar) makes of it, and how many pixels' x_0 lie inside [-1, 1] (the others are
    clipped to +-1, where the difference vanishes) and how far those differ."""
    _, abar, _ = td.model_schedule(reference_model)
    T = len(abar) - 1
    X = np.random.default_rng(0).standard_normal((64, 28, 28, 1), dtype=np.float32)
    inputs = {"X_noisy": X, "time": np.full(64, T)}
    ours = reference_model(inputs, training=False).data
    theirs = model(inputs, training=False).data if model is reference_model else model(inputs)
    a = float(abar[T])
    x0, x0_theirs = ((X - np.sqrt(1 - a) * e) / np.sqrt(a) for e in (ours, theirs))
    inside = np.abs(x0) < 1
    return {"t": T, "alpha_bar": a, "amplification": float(np.sqrt((1 - a) / a)),
            "eps_max_difference": float(np.abs(theirs - ours).max()),
            "x0_max_difference_before_clipping": float(np.abs(x0_theirs - x0).max()),
            "pixels_inside": int(inside.sum()), "pixels": int(inside.size),
            "images_with_pixels_inside": int(inside.reshape(64, -1).any(1).sum()),
            "x0_max_difference_inside": float(np.abs(x0_theirs - x0)[inside].max())
            if inside.any() else 0.0}


def ddp_images_per_second(processes, steps):
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                 str(processes)] if processes > 1 else [sys.executable])
    with tempfile.TemporaryDirectory() as folder:
        text, _ = run([*launcher, "examples/train_torch_ddp.py", "--epochs", "1",
                       "--steps-per-epoch", str(steps), "--batch-size", "32", "--seed", "0",
                       "--out", str(Path(folder) / "ddp.pt")])
    return float(re.search(r"\(([\d,]+) images/s\)", text).group(1).replace(",", ""))


def tinyddpm_images_per_second(steps):
    (X, _), _ = td.load_fashion_mnist()
    model = td.build_diffusion_model(seed=0)
    model.compile(loss=td.Huber(), optimizer=td.Nadam())
    batches = list(td.prepare_dataset(X[:32 * (steps + 2)], 32, seed=0, prefetch=0))
    for inputs, targets in batches[:2]:  # warm-up
        model.train_step(inputs, targets)
    start = time.perf_counter()
    for inputs, targets in batches[2:]:
        model.train_step(inputs, targets)
    return 32 * steps / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, 5 training steps")
    parser.add_argument("--repeats", type=int, default=5, help="sampling runs of each model")
    args = parser.parse_args(argv)
    repeats, steps = (1, 5) if args.quick else (args.repeats, 20)
    before = {"load_average": os.getloadavg(), "busy_cores": busy_cores()}
    from tinyddpm.export import OnnxModel, from_torch
    from tinyddpm.pretrained import PRETRAINED_PATH

    model = td.load_pretrained()
    rows = {"tinyddpm": {"command": "(the shipped file)", "export_s": None, "command_s": None,
                         "size_bytes": PRETRAINED_PATH.stat().st_size}}
    with tempfile.TemporaryDirectory() as folder:
        torch_file, rows["torch"] = export("torch", Path(folder))
        onnx_file, rows["onnx"] = export("onnx", Path(folder))
        models = {"tinyddpm": model, "torch": torch_model(from_torch(torch_file)),
                  "onnx": OnnxModel(onnx_file, providers=["CPUExecutionProvider"])}
        reference, leading = sample(model), sample(model, "leading")
        times = {name: [] for name in models}
        for name, m in models.items():  # warm-up, and how close the images are
            rows[name]["difference"] = differences(sample(m), reference)
            rows[name]["max_pixel_difference"] = rows[name]["difference"]["max"]
            rows[name]["difference_leading"] = differences(sample(m, "leading"), leading)
            rows[name]["first_step"] = first_step(m, model)
            rows[name]["first_step"]["max_with_tinyddpms_first_step"] = differences(
                sample(first_step_from(model, m)), reference)["max"]
        for _ in range(repeats):
            for name, m in models.items():
                start = time.perf_counter()
                sample(m)
                times[name].append(time.perf_counter() - start)
    for name in models:
        rows[name]["ddim50_64_s"] = statistics.median(times[name])
        rows[name]["ddim50_64_runs_s"] = times[name]
    training = {"tinyddpm_1_process": tinyddpm_images_per_second(steps),
                "torch_ddp_1_process": ddp_images_per_second(1, steps),
                "torch_ddp_2_processes": ddp_images_per_second(2, steps)}
    import torch
    import onnxruntime

    result = {"quick": args.quick, "repeats": repeats, "training_steps": steps, "before": before,
              "after": {"load_average": os.getloadavg(), "busy_cores": busy_cores()},
              "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                           "torch_threads": torch.get_num_threads()},
              "paths": rows, "training_images_per_s": training}
    md = table(result)
    RESULTS.mkdir(exist_ok=True)
    stem = "bench_export_quick" if args.quick else "bench_export"
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(md)
    print(md)


def table(r):
    def seconds(v):
        return "-" if v is None else f"{v:.2f}"
    lines = ["| path | export command | export (s) | whole command (s) | file (MiB) | "
             "DDIM-50, 64 images (s) | max pixel difference from tinyddpm's | median image's "
             "| images > 1e-4 | max, leading spacing |",
             "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for name, row in r["paths"].items():
        d, lead = row["difference"], row["difference_leading"]
        lines.append(f"| {name} | `{row['command']}` | {seconds(row['export_s'])} | "
                     f"{seconds(row['command_s'])} | {row['size_bytes'] / 2**20:.2f} | "
                     f"{row['ddim50_64_s']:.2f} | {d['max']:.1e} | {d['median_image']:.1e} | "
                     f"{d['images_over_1e-4']} | {lead['max']:.1e} |")
    first = [(name, row["first_step"]) for name, row in r["paths"].items() if name != "tinyddpm"]
    lines += ["", "Sampling: `td.sample(model, 64, \"ddim\", steps=50, seed=0)` (trailing "
              "spacing); the last column, `spacing=\"leading\"` (`generate_ddim`'s). At "
              f"trailing spacing's first step, t = {first[0][1]['t']}, abar_t = "
              f"{first[0][1]['alpha_bar']:.2e}: x_0 = (x - sqrt(1 - abar) eps) / sqrt(abar) "
              f"multiplies eps's differences by {first[0][1]['amplification']:.3g}; " +
              "; ".join(f"{name}: eps differs by up to {f['eps_max_difference']:.1e}, x_0 by "
                        f"{f['x0_max_difference_before_clipping']:.2g} before clipping to "
                        f"[-1, 1], which keeps {f['pixels_inside']} of {f['pixels']:,} pixels "
                        f"(in {f['images_with_pixels_inside']} images), where x_0 differs by up "
                        f"to {f['x0_max_difference_inside']:.2g}; with tinyddpm's prediction at "
                        f"t = {f['t']} and its own elsewhere, its images differ by up to "
                        f"{f['max_with_tinyddpms_first_step']:.1e}" for name, f in first) + "."]
    t = r["training_images_per_s"]
    b, a = r["before"], r["after"]
    lines += ["", f"Training, global batch 32, {r['training_steps']} steps (images/s): tinyddpm "
              f"{t['tinyddpm_1_process']:.0f}; examples/train_torch_ddp.py on 1 process "
              f"{t['torch_ddp_1_process']:.0f}, on 2 processes (gloo) "
              f"{t['torch_ddp_2_processes']:.0f}.",
              "", f"Sampling: median of {r['repeats']} runs each, taking turns; torch "
              f"{r['versions']['torch']} on {r['versions']['torch_threads']} threads, onnxruntime "
              f"{r['versions']['onnxruntime']}. Load average (1, 5, 15 min) "
              f"{', '.join(f'{v:.2f}' for v in b['load_average'])} before, "
              f"{', '.join(f'{v:.2f}' for v in a['load_average'])} after; other processes kept "
              f"{b['busy_cores'] or 0:.1f} cores busy before, {a['busy_cores'] or 0:.1f} after.",
              ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
