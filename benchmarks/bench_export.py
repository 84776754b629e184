"""Beyond the laptop, measured: each path's export time, file size and sampling time.

On the shipped book model (``tinyddpm/assets/book_unet.npz``):

* export: ``python -m tinyddpm export --pretrained book --to torch|onnx --out ...``, each in a
  fresh process (the time the command reports for reading, converting and writing the model,
  which for ONNX includes its onnxruntime check; and the whole command, start-up included);
* the file's size;
* sampling 64 images with tinyddpm's DDIM, 50 steps, seed 0, the model being: tinyddpm's own,
  its torch twin (``to_torch``, a callable under ``torch.inference_mode``), the ONNX file
  (``OnnxModel``, onnxruntime's CPU provider); the median of ``--repeats`` runs of each, taking
  turns, after a warm-up, and how far their images are from tinyddpm's;
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


def torch_callable(model):
    import torch

    from tinyddpm.export import to_torch

    net = to_torch(model).eval()
    # tinyddpm's first kernels set the OpenMP threads numba shares with torch to cores + 1
    torch.set_num_threads(os.cpu_count() or 1)

    def predict(inputs):
        with torch.inference_mode():
            return net(torch.from_numpy(inputs["X_noisy"]),
                       torch.from_numpy(inputs["time"])).numpy()
    return predict


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
        models = {"tinyddpm": model, "torch": torch_callable(from_torch(torch_file)),
                  "onnx": OnnxModel(onnx_file, providers=["CPUExecutionProvider"])}
        reference = td.generate_ddim(model, 64, steps=50, seed=0)
        times = {name: [] for name in models}
        for name, m in models.items():  # warm-up, and how close the images are
            images = td.generate_ddim(m, 64, steps=50, seed=0)
            rows[name]["max_pixel_difference"] = float(np.abs(images - reference).max())
        for _ in range(repeats):
            for name, m in models.items():
                start = time.perf_counter()
                td.generate_ddim(m, 64, steps=50, seed=0)
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
             "DDIM-50, 64 images (s) | max pixel difference from tinyddpm's |",
             "|---|---|--:|--:|--:|--:|--:|"]
    for name, row in r["paths"].items():
        lines.append(f"| {name} | `{row['command']}` | {seconds(row['export_s'])} | "
                     f"{seconds(row['command_s'])} | {row['size_bytes'] / 2**20:.2f} | "
                     f"{row['ddim50_64_s']:.2f} | {row['max_pixel_difference']:.1e} |")
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
