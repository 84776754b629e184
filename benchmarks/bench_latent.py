"""Pixel vs latent diffusion, measured in one run: does diffusing in a latent space pay?

The slides' last part claims latent diffusion "considerably speeds up image generation, and
reduces training time and cost dramatically". This script measures it on the two shipped models
(``tinyddpm/assets/book_unet.npz`` and ``latent_unet.npz``), one after the other in one process:

* training time per epoch (55,000 images, batch 32 = 1,719 steps): the median time of a training
  step (forward + Huber + backward + Nadam) on real prepared batches, times 1,719; for the latent
  model also the autoencoder's epoch (its own training step, MAE), which it needs once;
* sampling time for 64 images: DDIM with 50 steps and the slide's full DDPM loop (3,999 steps),
  decoding included for the latent model;
* sample quality: FID and class coverage (``tinyddpm.metrics``) of 1,000 DDIM-50 samples (seed
  0..3 for 4 batches of 250);
* the autoencoder's reconstruction error on the 10,000 test images: mean |x - x_hat| (pixels in
  [0, 1]) and the FID of the reconstructions (the floor for the latent model's FID).

    python benchmarks/bench_latent.py           # full run (about 10 minutes on 2 quiet cores)
    python benchmarks/bench_latent.py --quick   # 256 samples, no full DDPM loop, short timings

Results: ``benchmarks/results/bench_latent.json`` and ``.md`` (``bench_latent_quick.*`` with
``--quick``); the table is printed. Run it on a quiet machine: another busy process makes the
BLAS threads spin and every time several times longer.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import busy_cores  # noqa: E402

import tinyddpm as td  # noqa: E402
from tinyddpm import latent, metrics  # noqa: E402
from tinyddpm.pretrained import LATENT_PATH, PRETRAINED_PATH  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
STEPS_PER_EPOCH = 1719


def median_step_time(model, batches, repeats):
    model.train()
    for inputs, targets in batches[:2]:  # warm-up
        model.train_step(inputs, targets)
    times = []
    for i in range(repeats):
        inputs, targets = batches[i % len(batches)]
        start = time.perf_counter()
        model.train_step(inputs, targets)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def quality(model, n, batch=250):
    images = np.concatenate([td.generate_ddim(model, min(batch, n - i), steps=50, seed=i // batch)
                             for i in range(0, n, batch)])
    report = metrics.evaluate(images[..., 0])
    return {"fid": report["fid"], "coverage": report["coverage"],
            "mean_confidence": report["mean_confidence"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--latent-checkpoint", default=str(LATENT_PATH))
    parser.add_argument("--pixel-checkpoint", default=str(PRETRAINED_PATH))
    args = parser.parse_args(argv)
    n_samples = 256 if args.quick else 1000
    repeats = 10 if args.quick else 40
    busy = busy_cores()
    (X_full, _), (X_test, _) = td.load_fashion_mnist()
    X_train, _ = td.split_train_valid(X_full)
    X_test = X_test.astype(np.float32) / 255

    pixel = td.load_pretrained(args.pixel_checkpoint)
    lat = td.load_pretrained(args.latent_checkpoint, kind="latent")
    ae = lat.autoencoder
    rows = {"pixel": {}, "latent": {}}

    # training time per epoch, on real batches, with fresh models of the same architectures
    # (training steps must not touch the shipped weights measured below)
    rng = np.random.default_rng(0)
    idx = rng.choice(len(X_train), 32 * 8, replace=False)
    unet_cfg = lat.config["unet"]
    for name, model, X, scale in (
            ("pixel", td.build_diffusion_model(seed=0), X_train[idx], True),
            ("latent", latent.build_latent_model(ae, unet_cfg["T"], unet_cfg["embed_size"],
                                                 unet_cfg["widths"], seed=0),
             ae.encode(X_train[idx]), False)):
        model.compile(loss=td.Huber(), optimizer=td.Nadam())
        batches = list(td.prepare_dataset(X, 32, seed=0, scale=scale, prefetch=0))
        rows[name]["train_step_ms"] = 1e3 * median_step_time(model, batches, repeats)
        rows[name]["epoch_s"] = rows[name]["train_step_ms"] * STEPS_PER_EPOCH / 1e3
    fresh_ae = latent.build_autoencoder(ae.config["widths"], ae.config["latent_channels"], seed=0)
    fresh_ae.compile(loss="mae", optimizer=td.Nadam())
    ae_batches = list(latent.image_batches(X_train[idx], 32))
    rows["latent"]["autoencoder_epoch_s"] = median_step_time(fresh_ae, ae_batches, repeats) \
        * STEPS_PER_EPOCH

    # sampling time, 64 images
    for name, model in (("pixel", pixel), ("latent", lat)):
        td.generate_ddim(model, 64, steps=5, seed=0)  # warm-up
        rows[name]["ddim50_64_s"] = timed(lambda: td.generate_ddim(model, 64, steps=50, seed=0))[1]
        if not args.quick:
            rows[name]["ddpm_64_s"] = timed(lambda: td.generate(model, 64, seed=0,
                                                                progress=False))[1]

    # quality, DDIM-50
    for name, model in (("pixel", pixel), ("latent", lat)):
        rows[name].update(quality(model, n_samples))
    recon = ae.reconstruct(X_test)[..., 0]
    rows["latent"]["recon_mae"] = float(np.abs(recon - X_test).mean())
    rows["latent"]["recon_fid"] = metrics.evaluate(recon)["fid"]

    result = {"quick": args.quick, "samples": n_samples, "busy_cores_before": busy,
              "busy_cores_after": busy_cores(),
              "pixel_weights": pixel.count_params(), "latent_unet_weights": lat.unet.count_params(),
              "autoencoder_weights": ae.count_params(), **rows}
    p, q = rows["pixel"], rows["latent"]
    result["sampling_speedup_ddim50"] = p["ddim50_64_s"] / q["ddim50_64_s"]
    if "ddpm_64_s" in p:
        result["sampling_speedup_ddpm"] = p["ddpm_64_s"] / q["ddpm_64_s"]
    result["fid_ratio"] = q["fid"] / p["fid"]
    md = table(result)
    RESULTS.mkdir(exist_ok=True)
    stem = "bench_latent_quick" if args.quick else "bench_latent"
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(md)
    print(md)


def table(r):
    p, q = r["pixel"], r["latent"]
    ddpm = "ddpm_64_s" in p

    def row(label, a, b, fmt):
        return f"| {label} | {fmt.format(a) if a is not None else '-'} | " \
               f"{fmt.format(b) if b is not None else '-'} |"

    lines = ["| | pixel (book's U-Net) | latent (7x7x4) |", "|---|---:|---:|",
             row("weights", r["pixel_weights"], r["latent_unet_weights"] + r["autoencoder_weights"],
                 "{:,}"),
             row("training step, batch 32 (ms)", p["train_step_ms"], q["train_step_ms"], "{:.1f}"),
             row("training epoch, 55,000 images (s)", p["epoch_s"], q["epoch_s"], "{:.0f}"),
             row("autoencoder epoch, once (s)", None, q["autoencoder_epoch_s"], "{:.0f}"),
             row("sampling 64 images, DDIM 50 steps (s)", p["ddim50_64_s"], q["ddim50_64_s"],
                 "{:.2f}")]
    if ddpm:
        lines.append(row("sampling 64 images, DDPM 3,999 steps (s)", p["ddpm_64_s"],
                         q["ddpm_64_s"], "{:.1f}"))
    lines += [row(f"FID, {r['samples']:,} DDIM-50 samples", p["fid"], q["fid"], "{:.2f}"),
              row("classes covered (of 10)", p["coverage"], q["coverage"], "{}"),
              row("autoencoder reconstruction, mean abs error", None, q["recon_mae"], "{:.4f}"),
              row("FID of the reconstructions (10,000 test images)", None, q["recon_fid"],
                  "{:.2f}"),
              "",
              f"Sampling speed-up, DDIM-50: {r['sampling_speedup_ddim50']:.1f}x"
              + (f"; DDPM: {r['sampling_speedup_ddpm']:.1f}x" if ddpm else "")
              + f". FID latent / pixel: {r['fid_ratio']:.2f}. Other processes kept "
              f"{r['busy_cores_before'] or 0:.1f} cores busy when the run started, "
              f"{r['busy_cores_after'] or 0:.1f} when it ended.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
