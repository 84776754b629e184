"""The likelihood and the samples of fixed against learned variances, by the number of ancestral
steps (issue: the README table of "The 2021 improvements").

For the shipped book model with the fixed variance beta_t, the same with beta_tilde_t, and the
shipped improved model with its learned variance, at 25, 50, 100 and 4,000 steps (the iddpm
sampler's time steps, T down to 1, betas respaced; at 4,000: every step):

* NLL: the variational bound in bits/dim on the first ``--n-nll`` test images, of the chain
  sampled in that many steps (``bits_per_dim(..., steps=K)``; at 4,000 the full bound);
* FID: of ``--samples`` images drawn by that chain (``ddpm-respaced`` with ``variance=`` for the
  fixed variances, ``iddpm`` for the learned one; seed 1), against the test set.

Each cell is saved to ``benchmarks/results/bench_likelihood.json`` as soon as it is measured and
skipped by the next run, so a long run can be stopped and continued (the 4,000-step FIDs are the
long part: 4,000 model calls per batch of images).

    python benchmarks/bench_likelihood.py                       # everything
    python benchmarks/bench_likelihood.py --steps 25,50,100     # the short chains only
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


def measure(model, variance, steps, n_nll, n_samples, X_test):
    start = time.perf_counter()
    bound = likelihood.bits_per_dim(model, X_test[:n_nll], variance, steps=steps,
                                    progress=False)
    nll_seconds = time.perf_counter() - start
    start = time.perf_counter()
    if variance is None:
        images = td.sample(model, n_samples, "iddpm", steps=steps, spacing="linspace", seed=1)
    else:
        images = td.sample(model, n_samples, "ddpm-respaced", steps=steps, spacing="linspace",
                           seed=1, variance=variance)
    sample_seconds = time.perf_counter() - start
    report = metrics.evaluate(images)
    return {"nll": round(bound["bpd"], 4), "nll_se": round(bound["std"] / n_nll ** 0.5, 4),
            "nll_images": n_nll, "fid": round(report["fid"], 2), "samples": n_samples,
            "coverage": report["coverage"], "nll_seconds": round(nll_seconds, 1),
            "sample_seconds": round(sample_seconds, 1), "busy_cores": round(busy_cores(), 2)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--steps", default="25,50,100,4000", help="chains' step counts")
    parser.add_argument("--n-nll", type=int, default=100, help="test images for the bound")
    parser.add_argument("--samples", type=int, default=1000, help="images for each FID")
    args = parser.parse_args(argv)
    steps = [int(k) for k in args.steps.split(",")]
    path = RESULTS / "bench_likelihood.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    _, (X_test, _) = td.load_fashion_mnist()
    models = {kind: td.load_pretrained(kind=kind) for kind in ("book", "improved")}
    for name, (kind, variance) in ROWS.items():
        for k in steps:
            key = f"{name} | {k}"
            if key in results:
                continue
            results[key] = measure(models[kind], variance, k, args.n_nll, args.samples, X_test)
            print(key, results[key], flush=True)
            RESULTS.mkdir(exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(results, indent=1))
            tmp.replace(path)
    write_table(results, steps)


def write_table(results, steps):
    head = ("| model, reverse variance | " + " | ".join(f"{k:,} steps: NLL / FID" for k in steps)
            + " |")
    rows = [head, "|---|" + "---:|" * len(steps)]
    for name in ROWS:
        cells = []
        for k in steps:
            r = results.get(f"{name} | {k}")
            cells.append(f"{r['nll']:.3f} / {r['fid']:.2f}" if r else "")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(rows) + "\n"
    (RESULTS / "bench_likelihood.md").write_text(
        "NLL (bits/dim, variational bound of the K-step chain) and FID of samples from that "
        "chain (`python benchmarks/bench_likelihood.py`); image counts in the JSON.\n\n" + table)
    print(table)


if __name__ == "__main__":
    main()
