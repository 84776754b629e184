"""The likelihood and the samples of fixed against learned variances, by the number of ancestral
steps (issue: the README table of "The 2021 improvements").

For the shipped book model with the fixed variance beta_t, the same with beta_tilde_t, and the
shipped improved model with its learned variance, at 25, 50, 100 and 4,000 steps (the iddpm
sampler's time steps, T down to 1, betas respaced; at 4,000: every step):

* NLL: the variational bound in bits/dim on the first ``--n-nll`` test images, of the chain
  sampled in that many steps (``bits_per_dim(..., steps=K)``; at 4,000 the full bound);
* FID: of ``--samples`` images drawn by that chain (``ddpm-respaced`` with ``variance=`` for the
  fixed variances, ``iddpm`` for the learned one; seed 1), against the test set.

Every bound is measured before any FID. Each number is saved to
``benchmarks/results/bench_likelihood.json`` as soon as it is measured (FIDs by their sample
count) and skipped by the next run, so a long run can be stopped and continued. The 4,000-step
FIDs are the long part: 4,000 model calls per image, on 2 cores about 26 minutes per 1,000
samples of the book's U-Net and 90 minutes of the improved one.

    python benchmarks/bench_likelihood.py                       # everything
    python benchmarks/bench_likelihood.py --steps 25,50,100     # the short chains only
    python benchmarks/bench_likelihood.py --only nll            # the bounds only (minutes)
    python benchmarks/bench_likelihood.py --steps 4000 --rows learned --only fid --samples 500
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
from machine import busy_cores  # noqa: E402

import tinyddpm as td  # noqa: E402
from tinyddpm import likelihood, metrics  # noqa: E402

ROWS = {  # name -> (shipped model, fixed variance or None for the learned one)
    "book, fixed beta_t": ("book", "beta"),
    "book, fixed beta_tilde_t": ("book", "beta_tilde"),
    "improved, learned": ("improved", None),
}
ROW_IDS = {"book-beta": "book, fixed beta_t", "book-beta_tilde": "book, fixed beta_tilde_t",
           "learned": "improved, learned"}


def measure_nll(model, variance, steps, n_nll, X_test):
    """The bound of the ``steps``-step chain on the first ``n_nll`` test images, in bits/dim."""
    start = time.perf_counter()
    bound = likelihood.bits_per_dim(model, X_test[:n_nll], variance, steps=steps,
                                    progress=False)
    return {"nll": round(bound["bpd"], 4), "nll_se": round(bound["std"] / n_nll ** 0.5, 4),
            "nll_images": n_nll, "nll_seconds": round(time.perf_counter() - start, 1),
            "busy_cores": round(busy_cores(), 2)}


def measure_fid(model, variance, steps, n_samples):
    """The FID of ``n_samples`` images drawn by that chain (seed 1), against the test set."""
    start = time.perf_counter()
    if variance is None:
        images = td.sample(model, n_samples, "iddpm", steps=steps, spacing="linspace", seed=1)
    else:
        images = td.sample(model, n_samples, "ddpm-respaced", steps=steps, spacing="linspace",
                           seed=1, variance=variance)
    sample_seconds = time.perf_counter() - start
    report = metrics.evaluate(images)
    return {"fid": round(report["fid"], 2), "coverage": report["coverage"],
            "sample_seconds": round(sample_seconds, 1), "busy_cores": round(busy_cores(), 2)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--steps", default="25,50,100,4000", help="chains' step counts")
    parser.add_argument("--rows", default=",".join(ROW_IDS),
                        help=f"which rows, of {', '.join(ROW_IDS)}")
    parser.add_argument("--only", choices=("nll", "fid", "both"), default="both",
                        help="measure the bounds only, the FIDs only, or both")
    parser.add_argument("--n-nll", type=int, default=100, help="test images for the bound")
    parser.add_argument("--samples", type=int, default=1000, help="images for each FID")
    args = parser.parse_args(argv)
    steps = [int(k) for k in args.steps.split(",")]
    rows = [r.strip() for r in args.rows.split(",")]
    unknown = [r for r in rows if r not in ROW_IDS]
    if unknown:
        parser.error(f"--rows: unknown {', '.join(unknown)}; choose from {', '.join(ROW_IDS)}")
    path = RESULTS / "bench_likelihood.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    _, (X_test, _) = td.load_fashion_mnist()
    models = {kind: td.load_pretrained(kind=kind) for kind in ("book", "improved")}

    def save():
        RESULTS.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        tmp.replace(path)

    # every bound first (minutes), then the FIDs (the 4,000-step ones take hours)
    for what in ("nll", "fid"):
        if args.only not in (what, "both"):
            continue
        for row in rows:
            name = ROW_IDS[row]
            kind, variance = ROWS[name]
            for k in steps:
                cell = results.setdefault(f"{name} | {k}", {})
                if what == "nll" and "nll" not in cell:
                    cell["nll"] = measure_nll(models[kind], variance, k, args.n_nll, X_test)
                elif what == "fid" and str(args.samples) not in cell.setdefault("fid", {}):
                    cell["fid"][str(args.samples)] = measure_fid(models[kind], variance, k,
                                                                 args.samples)
                else:
                    continue
                print(f"{name} | {k}", what, cell[what], flush=True)
                save()
    write_table(results, steps)


def write_table(results, steps, samples=1000):
    """The README's table: NLL / FID of ``samples`` images (another count is named where the
    cell has no FID of that many)."""
    head = ("| model, reverse variance | " + " | ".join(f"{k:,} steps: NLL / FID" for k in steps)
            + " |")
    rows = [head, "|---|" + "---:|" * len(steps)]
    for name in ROWS:
        cells = []
        for k in steps:
            cell = results.get(f"{name} | {k}", {})
            nll = f"{cell['nll']['nll']:.3f}" if "nll" in cell else "-"
            fids = cell.get("fid", {})
            if str(samples) in fids:
                fid = f"{fids[str(samples)]['fid']:.2f}"
            elif fids:
                n = max(fids, key=int)
                fid = f"{fids[n]['fid']:.2f} ({n} samples)"
            else:
                fid = "-"
            cells.append(f"{nll} / {fid}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(rows) + "\n"
    (RESULTS / "bench_likelihood.md").write_text(
        "NLL (bits/dim, variational bound of the K-step chain) and FID of samples from that "
        f"chain, {samples:,} samples unless the cell says otherwise "
        "(`python benchmarks/bench_likelihood.py`); image counts and times in the JSON.\n\n"
        + table)
    print(table)


if __name__ == "__main__":
    main()
