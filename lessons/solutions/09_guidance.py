"""Solutions to lesson 9's exercises (09_guidance.ipynb)."""
# %% Exercise 1
for w in [8.0, 12.0]:
    start = time.perf_counter()
    images = td.generate_ddim(model, len(requested), steps=steps, seed=0,
                              label=requested, guidance=w)
    sweep[w] = {"images": images, "seconds": time.perf_counter() - start,
                "spread": spread(images), **metrics.evaluate(images[:, :, :, 0], requested=requested)}
best_w = min(sweep, key=lambda w: sweep[w]["fid"])
negative = td.generate_ddim(model, 20, steps=steps, seed=0, label=td.class_index("sneaker"),
                            guidance=-1.0)
sneaker_share = np.mean(classifier.features_and_logits(negative)[1].argmax(1)
                        == td.class_index("sneaker"))
fig, ax = plt.subplots(figsize=(7.2, 1.05))
ax.imshow(image_grid(negative[:8], ncols=8), vmin=0, vmax=1); ax.axis("off")
# A negative weight pushes away from the class asked for: eps = uncond - (cond - uncond), so the
# images become anything but sneakers. Large w keeps narrowing each class (the spread), and the
# FID, which rewards diversity too, eventually stops falling.
# %% Exercise 2
alpha, alpha_cumprod, beta = td.model_schedule(model)
ts = np.arange(250, 4001, 250)
x0 = X_sub[:16, :, :, None] / np.float32(127.5) - 1
eps = np.random.default_rng(0).standard_normal(x0.shape, dtype=np.float32)
labels = y_sub[:16]
class_effect = []
for t in ts:
    x_t = np.sqrt(alpha_cumprod[t]) * x0 + np.sqrt(1 - alpha_cumprod[t]) * eps
    difference = guided_noise(model, x_t, t, labels, 1.0) - guided_noise(model, x_t, t, labels, 0.0)
    class_effect.append(np.abs(difference).mean())
class_effect = np.array(class_effect)
t_most = ts[np.argmax(class_effect)]
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(ts, class_effect, "o-"); ax.set_xlabel("t"); ax.set_ylabel("mean |cond - uncond|")
# At t = T, x_T is pure noise whatever the class, so the best guess of the noise is x_T itself:
# the class cannot change it much.
# %% Exercise 3
mixed = td.generate_ddim(model, 10, steps=steps, seed=0, label=np.arange(10), guidance=3.0)
single = np.stack([td.generate_ddim(model, 10, steps=steps, seed=0, label=c, guidance=3.0)[c]
                   for c in range(10)])
largest_difference = np.abs(mixed - single).max()
# The same: in inference mode BatchNorm uses its moving statistics, fixed numbers, so each image
# is computed on its own. With the batch's own statistics an image would depend on the others in
# its batch (and a batch of one would be normalised to nothing).
