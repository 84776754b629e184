"""Solutions to lesson 5's exercises (05_training.ipynb)."""
# %% Exercise 1
seeds = (42, 0, 1)
val_mse = {name: [] for name in losses}
for seed in seeds:
    for name, loss in losses.items():
        model, _ = train(loss, seed=seed)
        val_mse[name].append(val_scores(recalibrate(model))["mse"])
orders = [sorted(losses, key=lambda n: val_mse[n][k]) for k in range(len(seeds))]
for seed, order in zip(seeds, orders):
    print(f"seed {seed:>2}: " + " < ".join(f"{n} {val_mse[n][seeds.index(seed)]:.4f}" for n in order))
same_ranking = all(order == orders[0] for order in orders)
print("same ranking for every seed:", same_ranking)
# Why: after a few hundred steps the differences between the losses are about as large as the
# differences between two seeds of the same loss (initial weights, order, t and noise), so one
# run cannot rank them; the DDPM authors' comparison was over full trainings.
# %% Exercise 2
n = 64 if FAST else 320                      # images a bin
x0 = X_valid[:n, :, :, None] * 2 - 1         # scaled to [-1, 1], with a channel axis
rng = np.random.default_rng(0)
mse_by_bin = []
for first in range(1, T + 1, 400):
    t = rng.integers(first, first + 400, size=n).astype(np.int32)
    eps = rng.standard_normal(x0.shape, dtype=np.float32)
    x_t = td.q_sample(x0, t, alpha_cumprod, noise=eps)
    mse_by_bin.append(float(np.mean((shipped.predict({"X_noisy": x_t, "time": t}) - eps) ** 2)))
hardest_t = 1 + 400 * int(np.argmax(mse_by_bin))
for first, mse in zip(range(1, T + 1, 400), mse_by_bin):
    print(f"t in {first:>4}-{first + 399:<4}  val MSE {mse:.4f}")
# Why: at small t the image is almost clean and the noise is a faint sqrt(1 - abar_t) eps on
# top of it: to recover eps the model must tell the noise from the fine detail of the image,
# and any error is divided by that small factor. At large t, x_t is almost all noise, so
# eps is almost the input itself.
# %% Exercise 3
ema_model, _ = train(td.Huber(), ema=0.99)
val_trained = recalibrate(ema_model).evaluate(small_valid)
ema_model.use_ema_weights()
val_ema = recalibrate(ema_model).evaluate(small_valid)
print(f"validation Huber loss: trained weights {val_trained:.4f}, "
      f"their moving average {val_ema:.4f}")
# Why: with decay 0.99 the average spans about the last 100 steps; in a short run those still
# include poor early weights, so it may not help. In a long run the weights near the end
# jitter around a good solution, and averaging them smooths that jitter out (the shipped model
# uses an average, see td.pretrained).
