"""Sample quality against model calls: every sampler and time-step spacing on the shipped model.

For each sampler of ``tinyddpm.SAMPLERS`` (the slide's full DDPM loop excepted: 3,999 calls) and
each spacing of ``tinyddpm.sampling.SPACINGS``, 1,000 samples from the shipped book model
(``tinyddpm/assets/book_unet.npz``, no retraining), drawn in 4 batches of 250 with seeds 1000..1003,
at about 5, 10, 15, 20, 50 and 100 model evaluations (NFE; Heun and DPM-Solver-2 cost two a step
but one at the last, so their NFE is odd), scored with ``tinyddpm.metrics`` (FID against the
Fashion-MNIST test set, classes covered). Then seconds per 64 images at about 10 NFE, measured
after the quality runs.

    python benchmarks/bench_samplers.py            # the full grid (about 30 minutes on 2 cores)
    python benchmarks/bench_samplers.py --quick    # 200 samples, 2 samplers, 2 NFE (tests)

Results: ``benchmarks/results/bench_samplers.{json,md,png}`` (``bench_samplers_quick.*`` with
``--quick``). The JSON is written after every measurement, and a run started again with the same
options skips what it holds, so an interrupted run loses nothing.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import busy_cores  # noqa: E402

import tinyddpm as td  # noqa: E402
from tinyddpm import metrics, sampling  # noqa: E402
from tinyddpm.sampling import SAMPLERS, SPACINGS  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
NFES = (5, 10, 15, 20, 50, 100)
BATCH = 250


def steps_for(sampler, nfe):
    """The steps that make about ``nfe`` model calls (two a step but one at the last for the
    second-order single-step samplers)."""
    return (nfe + 1) // 2 if SAMPLERS[sampler].calls_per_step == 2 else nfe  # (about: the
    # second-order samplers take one call for a step from beyond sigma = 80, too)


def counted(fn, counter):
    """``fn`` that adds one to ``counter[0]`` at each call (the model calls of a sampler)."""
    def wrapper(*args, **kwargs):
        counter[0] += 1
        return fn(*args, **kwargs)
    return wrapper


def quality(model, sampler, steps, spacing, n):
    """FID and classes covered of ``n`` samples, and the model calls one batch took."""
    calls, real = [0], sampling._predict_noise
    sampling._predict_noise = counted(real, calls)
    try:
        images = np.concatenate([td.sample(model, min(BATCH, n - i), sampler, steps=steps,
                                           spacing=spacing, seed=1000 + i // BATCH)
                                 for i in range(0, n, BATCH)])
    finally:
        sampling._predict_noise = real
    report = metrics.evaluate(images[..., 0])
    return report["fid"], report["coverage"], calls[0] // -(-n // BATCH)


def table(rows):
    """Markdown: FID (classes covered) by sampler/spacing and NFE, then the best per sampler."""
    nfes = sorted({r["nfe_target"] for r in rows})
    lines = ["| sampler | spacing | " + " | ".join(f"~{n} NFE" for n in nfes) + " |",
             "|---|---|" + "---:|" * len(nfes)]
    for sampler in dict.fromkeys(r["sampler"] for r in rows):
        for spacing in dict.fromkeys(r["spacing"] for r in rows if r["sampler"] == sampler):
            cells = []
            for n in nfes:
                hit = [r for r in rows if (r["sampler"], r["spacing"], r["nfe_target"]) ==
                       (sampler, spacing, n)]
                cells.append(f"{hit[0]['fid']:.2f} ({hit[0]['coverage']})" if hit else "")
            lines.append(f"| {sampler} | {spacing} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows, path):
    from tinyddpm.plotting import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for sampler in dict.fromkeys(r["sampler"] for r in rows):
        best = SAMPLERS[sampler].spacing
        mine = sorted((r for r in rows if r["sampler"] == sampler and r["spacing"] == best),
                      key=lambda r: r["nfe"])
        if mine:
            ax.plot([r["nfe"] for r in mine], [r["fid"] for r in mine],
                    "x--" if sampler == "euler" else "o-",  # euler's points are ddim's
                    label=f"{sampler} ({best})")
    leading = sorted((r for r in rows if r["sampler"] == "ddim" and r["spacing"] == "leading"),
                     key=lambda r: r["nfe"])
    if leading:
        ax.plot([r["nfe"] for r in leading], [r["fid"] for r in leading], "k:",
                label="ddim (leading: the old default)")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
    ax.set_yticks([5, 7, 10, 20, 40, 80])
    ax.set_xlabel("model evaluations (NFE)")
    ax.set_ylabel("FID, 1,000 samples (lower is better)")
    ax.set_title("The shipped book model: sample quality against sampling cost")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)


def main(argv=None):
    from tinyddpm._cli import parser as new_parser

    parser = new_parser("python benchmarks/bench_samplers.py", __doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="200 samples, ddim and dpm++2m, 2 spacings, 5 and 10 NFE")
    args = parser.parse_args(argv)
    stem = "bench_samplers_quick" if args.quick else "bench_samplers"
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{stem}.json"
    n = 200 if args.quick else 1000
    samplers = ["ddim", "dpm++2m"] if args.quick else [  # the book model learns no variance
        s for s in SAMPLERS if s not in ("ddpm", "iddpm")]
    spacings = ["leading", "trailing"] if args.quick else list(SPACINGS)
    nfes = (5, 10) if args.quick else NFES
    model = td.load_pretrained()
    result = json.loads(out.read_text()) if out.exists() else {}
    if result.get("samples") != n:
        result = {"samples": n, "rows": []}
    result["busy_cores_before"] = busy_cores()
    done = {(r["sampler"], r["spacing"], r["nfe_target"]) for r in result["rows"]}
    for sampler in samplers:
        for spacing in spacings:
            for target in nfes:
                if (sampler, spacing, target) in done:
                    continue
                steps = steps_for(sampler, target)
                start = time.perf_counter()
                fid, coverage, calls = quality(model, sampler, steps, spacing, n)
                row = {"sampler": sampler, "spacing": spacing, "nfe_target": target,
                       "steps": steps, "nfe": calls,
                       "fid": round(fid, 3), "coverage": coverage,
                       "seconds": round(time.perf_counter() - start, 1)}
                result["rows"].append(row)
                print(json.dumps(row), flush=True)
                out.write_text(json.dumps(result, indent=1) + "\n")
    timing = {}
    for sampler in samplers:  # seconds per 64 images at about 10 model calls, default spacing
        steps = steps_for(sampler, 10)
        td.sample(model, 64, sampler, steps=2, seed=0)  # warm-up
        start = time.perf_counter()
        td.sample(model, 64, sampler, steps=steps, seed=0)
        timing[sampler] = round(time.perf_counter() - start, 2)
    result["seconds_per_64_images_at_10_nfe"] = timing
    result["busy_cores_after"] = busy_cores()
    out.write_text(json.dumps(result, indent=1) + "\n")
    md = (f"FID (classes covered, of 10) of {n:,} samples from the shipped book model, by "
          "sampler, spacing and model evaluations (NFE).\n\n" + table(result["rows"]) +
          "\nSeconds per 64 images at about 10 NFE: " +
          ", ".join(f"{k} {v:.2f}" for k, v in timing.items()) +
          ". Cores other processes kept busy, before/after: "
          f"{result['busy_cores_before'] or 0:.1f} / {result['busy_cores_after'] or 0:.1f}.\n")
    (RESULTS / f"{stem}.md").write_text(md)
    plot(result["rows"], RESULTS / f"{stem}.png")
    print(md)


if __name__ == "__main__":
    main()
