"""The improved U-Net's training step against the book's, measured in one run (issue: one epoch
of the improved model should take at most ~3x the book model's).

For the book's U-Net (Huber) and the improved U-Net in a few shapes (Huber; the defaults also
with learned variances and the hybrid loss, the shipped recipe), one process builds every model, warms each up
(numba compiles), then times 8 training steps of batch 32 on real prepared batches, model after
model, three times over: the best of the three rounds is reported, as ms per step and as a
multiple of the book model's. Interleaving keeps a busy machine from favouring one model.

    python benchmarks/bench_improved.py            # about 3 minutes on 2 quiet cores

Results: ``benchmarks/results/bench_improved.json`` and ``.md``; the table is printed.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import busy_cores  # noqa: E402

import tinyddpm as td  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS = [  # (name, builder options or None for the book's U-Net, hybrid loss)
    ("book U-Net", None, False),
    ("improved, learned variances (the shipped recipe: defaults)", {"learn_sigma": True}, True),
    ("improved, defaults (16/32/64, attention at 7x7)", {}, False),
    ("improved, attention at 14x14 and 7x7", {"attention": (14, 7)}, False),
    ("improved 32/64/96, attention at 14x14 and 7x7", {"widths": (32, 64, 96),
                                                        "attention": (14, 7)}, False),
]
STEPS, ROUNDS = 8, 3


def build(options, hybrid, X):
    if options is None:
        model = td.build_diffusion_model(seed=0)
    else:
        model = td.build_improved_model(seed=0, **options)
    model.compile(loss=td.HybridLoss() if hybrid else td.Huber(), optimizer=td.Nadam())
    data = td.prepare_dataset(X, 32, shuffle=True, seed=0, prefetch=0,
                              target="hybrid" if hybrid else "noise")
    return model, data


def main():
    (X, _), _ = td.data.load_subset()
    X = X[:640]
    runs = {name: build(options, hybrid, X) for name, options, hybrid in CONFIGS}
    busy = busy_cores()
    for model, data in runs.values():                         # warm-up: numba compiles
        model.fit(data, epochs=1, steps_per_epoch=3, verbose=0)
    seconds = {name: [] for name in runs}
    for _ in range(ROUNDS):
        for name, (model, data) in runs.items():
            start = time.perf_counter()
            model.fit(data, epochs=model.epoch + 1, initial_epoch=model.epoch,
                      steps_per_epoch=STEPS, verbose=0)
            seconds[name].append((time.perf_counter() - start) / STEPS)
    book = min(seconds["book U-Net"])
    rows = [{"model": name, "ms_per_step": round(min(s) * 1000, 1),
             "times_book": round(min(s) / book, 2),
             "parameters": runs[name][0].count_params()} for name, s in seconds.items()]
    result = {"batch": 32, "steps": STEPS, "rounds": ROUNDS, "busy_cores_before": busy,
              "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_improved.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = ["| model | ms / step (batch 32) | x book | parameters |", "|---|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['ms_per_step']} | {r['times_book']} | {r['parameters']:,} |"
              for r in rows]
    (RESULTS / "bench_improved.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"(busy cores before the run: {busy})")


if __name__ == "__main__":
    main()
