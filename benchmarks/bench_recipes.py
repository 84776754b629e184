"""Time to quality: the FID after 10, 20, 40 and 80 minutes of training from scratch, for the
book's recipe and the improved one (issue: the improved should reach the book recipe's 80-minute
FID in half the time or less).

The recipes are the package's own command lines (``RECIPES``), run side by side in one run, each
on one of the two cores (``taskset``, one numba thread), so that a busy machine slows both alike.
The minutes are training minutes: each run is stopped with Ctrl-C (SIGINT) at the next mark; the
checkpoint it saves there is copied, then ``--resume`` goes on from it exactly (start-up, data
loading and the saves are not counted). Afterwards every copy is sampled with 1,000 images at 50
model calls and scored with the package's FID (``python -m tinyddpm sample`` / ``evaluate``),
one job at a time on both cores.

    python benchmarks/bench_recipes.py                         # 80 minutes, then ~20 to score
    python benchmarks/bench_recipes.py --minutes 1,2 --dir /tmp/r    # a quick trial
    python benchmarks/bench_recipes.py --score-only --dir runs/recipes
    python benchmarks/bench_recipes.py --resume-from 20    # go on after a stop at 20 minutes

Results: ``benchmarks/results/bench_recipes.json`` and ``.md`` (a table, FID by minutes) and
``bench_recipes.png``; the training logs and checkpoints stay in ``--dir``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
from machine import busy_cores  # noqa: E402

RECIPES = {  # name -> (train options, the samplers scored at 50 model calls)
    "book": (["--ema", "0.999"], ["dpm++2m"]),
    "improved": (["--model", "improved", "--learn-sigma", "--ema", "0.999"],
                 ["dpm++2m", "iddpm"]),
}
SEED, STEPS = 42, 50
SAMPLES = 1000  # --samples


def _record(name, mark, trained, copy):
    from tinyddpm.checkpoint import read_checkpoint

    header = read_checkpoint(copy)[0]
    print(f"{name}: {mark:g} min ({trained:.0f} s), epoch {header['epoch']} + "
          f"{header['step_in_epoch']} batches", flush=True)
    return {"recipe": name, "minutes": mark, "seconds_trained": round(trained, 1),
            "epoch": header["epoch"], "step_in_epoch": header["step_in_epoch"],
            "checkpoint": str(copy)}


def _wait_for_line(path, offset, proc, prefix="Training "):
    """Wait until a line starting with ``prefix`` appears in ``path`` after byte ``offset``
    (train prints "Training ..." right before its fit starts); False if the process ends first."""
    while proc.poll() is None:
        with open(path, "rb") as f:
            f.seek(offset)
            if any(line.startswith(prefix.encode()) for line in f.read().splitlines()):
                return True
        time.sleep(0.1)
    return False


def _train_until(name, options, marks, folder, core, log, done=0.0):
    """Train recipe ``name`` on ``core``, stopping at each mark (training minutes) to copy the
    checkpoint; ``done``: minutes a copy of this run already holds (it goes on from that copy).
    Appends a record per mark to ``log``."""
    ckpt, log_path = folder / f"{name}.npz", folder / f"{name}.log"
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    trained, resume = done * 60, (["--resume"] if done else [])
    if done:
        shutil.copyfile(folder / f"{name}_{done:g}min.npz", ckpt)
        log.append(_record(name, done, trained, folder / f"{name}_{done:g}min.npz"))
    for mark in [m for m in marks if m > done]:
        cmd = ["taskset", "-c", str(core), sys.executable, "-m", "tinyddpm", "train",
               "--epochs", "10000", "--seed", str(SEED), "--checkpoint", str(ckpt),
               "--quiet", *options, *resume]
        with open(log_path, "a") as out:
            out.write(f"$ {' '.join(cmd)}\n")
            offset = out.tell()
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        if not _wait_for_line(log_path, offset, proc):
            raise RuntimeError(f"training did not start (exit {proc.returncode}); see {log_path}")
        started = time.perf_counter()
        time.sleep(max(0.0, mark * 60 - trained))
        proc.send_signal(signal.SIGINT)
        trained += time.perf_counter() - started
        proc.wait()
        if proc.returncode not in (0, 130):
            raise RuntimeError(f"train exited with {proc.returncode}; see {log_path}")
        copy = folder / f"{name}_{mark:g}min.npz"
        shutil.copyfile(ckpt, copy)
        log.append(_record(name, mark, trained, copy))
        resume = ["--resume"]


def train(marks, folder, done=0.0):
    if not done:
        for name in RECIPES:
            for stale in folder.glob(f"{name}*.npz"):
                stale.unlink()
    log, errors = [], []

    def run(name, core):
        try:
            _train_until(name, RECIPES[name][0], marks, folder, core, log, done)
        except Exception as e:  # reported after both threads end
            errors.append(f"{name}: {e!r}")

    threads = [threading.Thread(target=run, args=(name, core))
               for core, name in enumerate(RECIPES)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit("; ".join(errors))
    return sorted(log, key=lambda r: (r["recipe"], r["minutes"]))


def _run(cmd):
    """Run a command quietly (no progress bars); its output is shown only if it fails."""
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def score(record, folder):
    """FID of 1,000 samples at 50 model calls, per sampler of the recipe."""
    fids = {}
    for sampler in RECIPES[record["recipe"]][1]:
        npy = folder / f"{Path(record['checkpoint']).stem}_{sampler}.npy"
        _run([sys.executable, "-m", "tinyddpm", "sample", "--checkpoint",
                        record["checkpoint"], "--n", str(SAMPLES), "--sampler", sampler,
                        "--steps", str(STEPS), "--seed", "1", "--out", str(npy.with_suffix(".png")),
                        "--npy", str(npy)])
        report = _run([sys.executable, "-m", "tinyddpm", "evaluate", str(npy), "--json"])
        fids[sampler] = round(json.loads(report)["fid"], 2)
        print(f"{record['recipe']} {record['minutes']:g} min, {sampler}: FID {fids[sampler]}",
              flush=True)
    return fids


def main(argv=None):
    global SAMPLES
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--minutes", default="10,20,40,80",
                        help="training minutes at which to score, increasing")
    parser.add_argument("--dir", default="runs/recipes", help="logs and checkpoints")
    parser.add_argument("--samples", type=int, default=SAMPLES,
                        help="images sampled per score (at least 200, the FID's minimum)")
    parser.add_argument("--resume-from", type=float, default=0.0, metavar="MINUTES",
                        help="go on with a run that stopped after this mark, from its copies "
                        "<recipe>_<MINUTES>min.npz in --dir")
    parser.add_argument("--score-only", action="store_true",
                        help="score the checkpoints a finished run left in --dir")
    args = parser.parse_args(argv)
    SAMPLES = args.samples
    marks = [float(m) for m in args.minutes.split(",")]
    if marks != sorted(set(marks)) or marks[0] <= 0:
        parser.error(f"--minutes must increase and be > 0, got {args.minutes}")
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    record_path = folder / "training.json"
    if args.score_only:
        log = json.loads(record_path.read_text())
    else:
        busy = busy_cores()
        if args.resume_from and args.resume_from not in marks:
            parser.error(f"--resume-from {args.resume_from:g}: not one of --minutes")
        log = train(marks, folder, args.resume_from)
        record_path.write_text(json.dumps(log, indent=1))
        print(f"(other processes kept {busy:.2f} cores busy when training started)")
    for record in log:
        record["fid"] = score(record, folder)
    write_results(log, marks)


def write_results(log, marks):
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_recipes.json").write_text(json.dumps(
        {"samples": SAMPLES, "model_calls": STEPS, "seed": SEED, "runs": log}, indent=1))
    rows = ["| recipe | sampler | " + " | ".join(f"{m:g} min" for m in marks) + " |",
            "|---|---|" + "---:|" * len(marks)]
    for name, (_, samplers) in RECIPES.items():
        for sampler in samplers:
            cells = [next((f"{r['fid'][sampler]:.2f}" for r in log if r["recipe"] == name
                           and r["minutes"] == m), "") for m in marks]
            rows.append(f"| {name} | {sampler} | " + " | ".join(cells) + " |")
    steps = ["| recipe | " + " | ".join(f"{m:g} min" for m in marks) + " |",
             "|---|" + "---:|" * len(marks)]
    for name in RECIPES:
        cells = [next((f"epoch {r['epoch']} + {r['step_in_epoch']}" for r in log
                       if r["recipe"] == name and r["minutes"] == m), "") for m in marks]
        steps.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(rows) + "\n\nWhere each run stood:\n\n" + "\n".join(steps) + "\n"
    (RESULTS / "bench_recipes.md").write_text(
        f"FID of {SAMPLES:,} samples at {STEPS} model calls after minutes of training, each "
        "recipe on one core of two, side by side (`python benchmarks/bench_recipes.py`).\n\n"
        + table)
    print(table)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, (_, samplers) in RECIPES.items():
        for sampler in samplers:
            pts = [(r["minutes"], r["fid"][sampler]) for r in log if r["recipe"] == name]
            ax.plot(*zip(*pts), "o-", label=f"{name}, {sampler}")
    ax.set(xlabel="minutes of training (one core each)", ylabel=f"FID ({SAMPLES:,} samples)",
           xscale="log", yscale="log", title="Time to quality")
    ax.set_xticks(marks, [f"{m:g}" for m in marks])
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "bench_recipes.png")


if __name__ == "__main__":
    main()
