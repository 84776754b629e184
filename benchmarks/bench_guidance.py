"""Classifier-free guidance: how the weight w trades diversity for fidelity to the class asked for.

For the shipped class-conditional model (``tinyddpm/assets/conditional_unet.npz``) and each w in
``--weights`` (default 0, 1, 3, 5), draws ``--n`` DDIM-50 samples (default 1,000: 100 of each
class, seed 0) with eps = eps_uncond + w (eps_cond - eps_uncond), and measures with the metrics
module's classifier:

* the fraction of samples classified as the class they were asked for (overall and per class);
* the FID against the test set (lower: closer to real images, counting their diversity);
* the mean classifier confidence, and the sampling time.

    python benchmarks/bench_guidance.py           # about 5 minutes on 2 quiet cores
    python benchmarks/bench_guidance.py --quick   # 200 samples, w = 0 and 3

Results: ``benchmarks/results/bench_guidance.json``, ``.md`` and ``bench_guidance.png`` (the
trade-off plot; ``bench_guidance_quick.*`` with ``--quick``); the table is printed.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import tinyddpm as td
from tinyddpm import metrics

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=1000, help="samples per setting (x10 classes)")
    parser.add_argument("--weights", type=float, nargs="+", default=[0, 1, 3, 5])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--checkpoint", default=None, help="default: the shipped model")
    args = parser.parse_args(argv)
    n, weights = (200, [0.0, 3.0]) if args.quick else (args.n, args.weights)
    model = td.load_pretrained(args.checkpoint, kind="conditional")
    requested = np.repeat(np.arange(10), n // 10)
    rows = []
    for w in weights:
        start = time.perf_counter()
        chunks = [requested[i:i + 250] for i in range(0, len(requested), 250)]
        images = np.concatenate([td.generate_ddim(model, len(c), steps=args.steps, seed=k,
                                                  label=c, guidance=w)
                                 for k, c in enumerate(chunks)])
        took = time.perf_counter() - start
        report = metrics.evaluate(images[..., 0], requested=requested)
        rows.append({"w": w, "requested_fraction": report["requested_fraction"],
                     "per_class": report["requested_fraction_per_class"], "fid": report["fid"],
                     "mean_confidence": report["mean_confidence"],
                     "coverage": report["coverage"], "seconds": took})
        print(f"w={w:g}: {report['requested_fraction']:.1%} as requested, FID "
              f"{report['fid']:.2f} ({took:.0f} s)", flush=True)
    result = {"samples_per_setting": len(requested), "ddim_steps": args.steps, "rows": rows}
    md = table(result)
    RESULTS.mkdir(exist_ok=True)
    stem = "bench_guidance_quick" if args.quick else "bench_guidance"
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(md)
    plot(rows, RESULTS / f"{stem}.png")
    print(md)


def table(result):
    lines = [f"| w | classified as requested | FID ({result['samples_per_setting']:,} samples) | "
             "mean confidence | classes covered | sampling time (s) |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['w']:g} | {r['requested_fraction']:.1%} | {r['fid']:.2f} | "
                     f"{r['mean_confidence']:.3f} | {r['coverage']}/10 | {r['seconds']:.0f} |")
    lines += ["", "Classified as requested, per class (" + ", ".join(td.CLASS_NAMES) + "):", ""]
    for r in result["rows"]:
        lines.append(f"- w = {r['w']:g}: " + ", ".join(
            "-" if f is None else f"{f:.0%}" for f in r["per_class"]))
    return "\n".join(lines) + "\n"


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 3.2), dpi=100)
    x = [100 * r["requested_fraction"] for r in rows]
    y = [r["fid"] for r in rows]
    ax.plot(x, y, "o-")
    for r, xi, yi in zip(rows, x, y):
        ax.annotate(f"w={r['w']:g}", (xi, yi), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("classified as the requested class (%)")
    ax.set_ylabel("FID (lower is better)")
    ax.set_title("Classifier-free guidance: fidelity vs FID", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
