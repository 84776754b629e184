"""``python -m tinyddpm.demo``: the story of the slides in a minute, with the shipped model.

1. the forward process on a real image; 2. the linear and cosine variance schedules;
3. new clothes generated from pure noise (a PNG grid and an animated GIF of the reverse process);
4. their quality, measured offline; 5. latent diffusion: the same sampler on 7x7x4 latents, then
decoded (a second grid, and its time beside the pixel model's); 6. a class-conditional model
with classifier-free guidance (one row per class). Everything is written to ``--out`` (default
./tinyddpm-demo).
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from ._cli import parser as new_parser, real_number, whole_number
from .sampling import DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS


def say(step, text):
    print(f"\n[{step}] {text}", flush=True)


def train_for(minutes, seed):
    """A fresh book U-Net trained for ``minutes`` on whatever data is present."""
    import tinyddpm as td

    (X_full, _), _ = td.load_fashion_mnist()
    X_train, _ = td.split_train_valid(X_full)
    model = td.build_diffusion_model(seed=seed)
    model.compile(loss=td.Huber(), optimizer=td.Nadam(), ema=0.99)
    data = td.prepare_dataset(X_train, 32, shuffle=True, seed=seed)
    deadline, steps, loss = time.perf_counter() + 60 * minutes, 0, float("nan")
    epoch = 0
    while time.perf_counter() < deadline:
        data.set_epoch(epoch)
        for inputs, noise in data:
            loss = model.train_step(inputs, noise)
            steps += 1
            if time.perf_counter() >= deadline:
                break
        epoch += 1
    print(f"    trained {steps} steps ({steps * 32:,} images) in {minutes:g} min; last loss "
          f"{loss:.4f}")
    model.use_ema_weights()
    model.recalibrate_batchnorm(data, batches=min(100, len(data)))
    return model.eval()


def main(argv=None):
    parser = new_parser("python -m tinyddpm.demo", __doc__)
    parser.add_argument("--out", default="tinyddpm-demo", help="output folder")
    parser.add_argument("--sampler", choices=list(SAMPLERS), default=DEFAULT_SAMPLER,
                        help="the best few-step sampler measured on this model by default; ddpm "
                        "is the slide's full 3,999-step loop")
    parser.add_argument("--steps", type=whole_number(1, 4000), default=DEFAULT_STEPS,
                        help="time steps of the few-step samplers")
    parser.add_argument("--seed", type=whole_number(0, 2**32 - 1), default=0,
                        help="seed of the samples' starting noise")
    parser.add_argument("--train-minutes", type=real_number(0, low_open=True), default=None,
                        metavar="M", help="train a fresh model for M minutes instead of using "
                        "the shipped one")
    parser.add_argument("--show", action="store_true", help="open the figures (needs a display)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer images and steps (for tests and CI)")
    args = parser.parse_args(argv)
    start = time.perf_counter()

    import tinyddpm as td
    from tinyddpm import metrics, plotting
    from tinyddpm.diffusion import get_schedule

    from tinyddpm._files import check_output

    try:  # before any work: the output folder exists (or is made) and takes files
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise ValueError(f"--out {args.out!r} is a file; give a folder for the figures")
        os.makedirs(args.out, exist_ok=True)
        check_output(os.path.join(args.out, "samples.png"), "--out")
    except (OSError, ValueError) as e:
        parser.error(str(e))
    out = lambda name: os.path.join(args.out, name)  # noqa: E731
    T = 4000
    alpha, alpha_cumprod, beta = get_schedule(T)

    say(1, "Forward process: start with a picture x_0 and, at each time step t, add a little "
           "Gaussian noise of variance beta_t, rescaling by sqrt(1 - beta_t). The shortcut "
           "q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) jumps to any t.")
    (X, _), _ = td.load_fashion_mnist()
    path = plotting.plot_forward_process(X[0] / 255.0, alpha_cumprod,
                                         [0, 250, 500, 1000, 2000, 3000, 4000],
                                         out("forward_process.png"), seed=args.seed)
    print(f"    {path}")

    say(2, "Variance schedule: alpha_bar_t, the 'signal' kept, should shrink gradually from 1 "
           "to 0; the cosine schedule destroys it more slowly than the linear one.")
    print(f"    {plotting.plot_schedules(T, out('schedules.png'))}")

    if args.train_minutes:
        say(3, f"Training the book's U-Net from scratch for {args.train_minutes:g} minutes "
               "(Huber loss, Nadam, batches from prepare_batch)")
        model = train_for(args.train_minutes, args.seed)
    else:
        say(3, "Loading the pretrained book U-Net (tinyddpm/assets/MODEL_CARD.md says how it "
               "was trained)")
        model = td.load_pretrained()
    print(f"    {model.count_params():,} weights")

    n = 8 if args.quick else 64
    n_eval = 200 if args.quick else 256  # evaluate() needs at least 200 images
    steps = 5 if args.quick else args.steps
    frames = []

    def record(t, X):
        if len(frames) < 200:
            frames.append(np.clip((X[:16] + 1) / 2, 0, 1))

    t0 = time.perf_counter()
    if args.sampler == "ddpm":
        say(4, "Generating: x_T ~ N(0, I), then x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) "
               "eps_theta(x_t, t)) / sqrt(alpha_t) + sqrt(beta_t) z for t = T-1 .. 1: no "
               "shortcut, every step (this takes minutes: DDPMs are slow to sample).")
        images = td.generate(model, batch_size=n_eval, seed=args.seed, callback=record)
        what = f"DDPM, {T - 1} steps"
    else:
        spacing = SAMPLERS[args.sampler].spacing
        say(4, f"Generating with {args.sampler} in {steps} steps ({spacing} time steps; the "
               "best few-step sampler measured on this model, README 'Sampling faster'): the "
               "reverse process as an ODE, each step estimating x_0 from the predicted noise and "
               "moving to an earlier t, instead of the slide's 3,999 small steps.")
        images = td.sample(model, n_eval, args.sampler, steps=steps, seed=args.seed,
                           callback=record)
        what = f"{args.sampler}, {steps} steps"
    took = time.perf_counter() - t0
    print(f"    {n_eval} images ({what}) in {took:.1f} s")
    if len(frames) > 40:  # keep the GIF light: about 40 frames, always the last one
        keep = np.unique(np.linspace(0, len(frames) - 1, 40).astype(int))
        frames = [frames[i] for i in keep]
    print(f"    {plotting.save_grid(images[:n], out('samples.png'))}")
    print(f"    {plotting.save_animation(frames, out('reverse_process.gif'), scale=2)}")

    say(5, "Measuring quality offline: a Fashion-MNIST classifier's features give an FID "
           "against the test set (read it with tinyddpm/assets/CALIBRATION.md)")
    report = metrics.evaluate(images)
    print("    " + metrics.format_report(report).replace("\n", "\n    "))

    say(6, "Latent diffusion: an autoencoder squeezes each image into a 7x7x4 latent; the same "
           "DDPM runs there (4x fewer numbers, a smaller U-Net), and the decoder turns the "
           "denoised latent back into clothes.")
    from tinyddpm.pretrained import LATENT_PATH

    if LATENT_PATH.exists():
        latent_model = td.load_pretrained(kind="latent")
        t0 = time.perf_counter()
        latent_images = td.generate_ddim(latent_model, batch_size=n, steps=steps, seed=args.seed)
        took_latent = time.perf_counter() - t0
        print(f"    {n} images (latent DDIM, {steps} steps) in {took_latent:.1f} s "
              f"(pixel model: {n} of the {n_eval} above took about {took * n / n_eval:.1f} s)")
        print(f"    {plotting.save_grid(latent_images, out('latent_samples.png'))}")
    else:
        print(f"    skipped: {LATENT_PATH} is not installed")

    say(7, "Class-conditional generation with classifier-free guidance: a model trained with "
           "class labels (dropped 10% of the time) predicts eps with and without the class; "
           "eps = eps_uncond + w (eps_cond - eps_uncond) with w = 3 asks firmly for the class. "
           "One row per class: " + ", ".join(td.CLASS_NAMES))
    from tinyddpm.pretrained import CONDITIONAL_PATH

    if CONDITIONAL_PATH.exists():
        conditional = td.load_pretrained(kind="conditional")
        per_class = 2 if args.quick else 8
        t0 = time.perf_counter()
        rows = td.generate_ddim(conditional, batch_size=10 * per_class, steps=steps,
                                seed=args.seed, label=np.repeat(np.arange(10), per_class),
                                guidance=3.0)
        print(f"    {10 * per_class} images (DDIM, {steps} steps, w = 3) in "
              f"{time.perf_counter() - t0:.1f} s")
        print(f"    {plotting.save_grid(rows, out('classes.png'), ncols=per_class)}")
    else:
        print(f"    skipped: {CONDITIONAL_PATH} is not installed")

    print(f"\nDone in {time.perf_counter() - start:.0f} s. Outputs in {os.path.abspath(args.out)}")
    if args.show:
        _show([out(name) for name in ("forward_process.png", "schedules.png", "samples.png",
                                      "latent_samples.png", "classes.png")
               if os.path.exists(out(name))])
    return 0


def _show(paths):
    import matplotlib
    import matplotlib.pyplot as plt

    if matplotlib.get_backend().lower() == "agg":
        print("--show: no display here; open the files above instead", file=sys.stderr)
        return
    for p in paths:
        plt.figure()
        plt.imshow(plt.imread(p))
        plt.axis("off")
    plt.show()


if __name__ == "__main__":
    sys.exit(main())
