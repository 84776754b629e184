"""Solutions to lesson 11's exercises (11_sampling_faster.ipynb)."""
# %% Exercise 1
process = td.sampling.Process(alpha_cumprod)

def my_dpmpp_2m(X, t, s, x0, previous=None):
    """One step from t to s > 0; x0: the x_0 estimate at t; previous: None for the first step,
    else (x0_prev, t_prev), the estimate and the time step of the step before."""
    h = process.lam(s) - process.lam(t)
    D = x0
    if previous is not None:
        x0_prev, t_prev = previous
        r = (process.lam(t) - process.lam(t_prev)) / h
        D = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * x0_prev
    return process.sigma(s) / process.sigma(t) * X - process.alpha(s) * np.expm1(-h) * D
# %% Exercise 2
heun_images = {spacing: td.sample(model, 16, "heun", steps=5, spacing=spacing, seed=0)
               for spacing in ("trailing", "karras")}
fid_heun = {r["spacing"]: r["fid"] for r in rows
            if r["sampler"] == "heun" and r["nfe_target"] == 10 and r["spacing"] in heun_images}
better = min(fid_heun, key=fid_heun.get)
fig, axes = plt.subplots(2, 1, figsize=(7.2, 4.2))
for ax, (spacing, images) in zip(axes, heun_images.items()):
    ax.imshow(image_grid(images, ncols=8), vmin=0, vmax=1)
    ax.set_title(f"heun, 5 steps, {spacing} (FID {fid_heun[spacing]:.1f})", loc="left"); ax.axis("off")
fig.tight_layout()
print(fid_heun, "better:", better)
# From sigma = 8e4 one step spans almost the whole noise scale: the slope at its end (Heun's
# correction) belongs to a very different x, and averaging the two can overshoot. The package
# takes first-order steps from beyond sigma = 80 (Process.t_sigma_max), which is why "trailing"
# (which starts at T) needs fewer model calls; the karras spacing starts at sigma = 80.
# %% Exercise 3
fid_20 = {name: next(r["fid"] for r in rows if r["sampler"] == name and r["nfe_target"] == 20
                     and r["spacing"] == SAMPLERS[name].spacing)
          for name in ("ddpm-respaced", "ddim")}
calls_ratio = (T - 1) / 10
pair = [td.sample(model, 16, name, steps=20, seed=0) for name in ("ddpm-respaced", "ddim")]
fig, ax = plt.subplots(figsize=(7.2, 2.2))
ax.imshow(image_grid(np.concatenate([p[:8] for p in pair]), ncols=8), vmin=0, vmax=1)
ax.set_yticks([16, 46], ["ddpm-resp.", "ddim"]); ax.set_xticks([]); ax.set_frame_on(False)
start = time.perf_counter()
td.sample(model, 64 if not FAST else 16, steps=10, seed=0)
seconds = time.perf_counter() - start
print(f"{seconds:.2f} s for 10 steps; the slide's loop: about {seconds * calls_ratio:.0f} s "
      f"({seconds * calls_ratio / 60:.1f} minutes)")
# Fresh noise at every step must be removed again by the later steps; with few, large steps the
# sampler cannot remove it all, so the images keep noise or lose detail: stochastic samplers need
# more steps. The two FIDs say which of the two does better at 20 steps.
