"""Solutions to lesson 7's exercises (07_measuring_quality.ipynb)."""
# %% Exercise 1
step_counts = (5, 10, 25) if FAST else (10, 25, 100)
fids = {steps: metrics.evaluate(td.generate_ddim(model, batch_size=200, steps=steps, seed=1))["fid"]
        for steps in step_counts}
print(fids)
# The gain shrinks with each step count (diminishing returns): past ~50-100 steps DDIM stays
# well above the slide's DDPM loop (model card), which needs 3,999 steps.

# %% Exercise 2
collapsed = np.tile(real[:20], (50, 1, 1))        # 1,000 images, only 20 different ones
collapsed_report = metrics.evaluate(collapsed)
print(metrics.format_report(collapsed_report, title="20 images, 50 times each"))
mu_c, sigma_c = metrics.feature_statistics(classifier.features(collapsed[:, :, :, None]))
mean_term = np.sum((mu_c - stats["mu"]) ** 2)
cov_term = (np.trace(sigma_c) + np.trace(stats["sigma"])
            - 2 * metrics.trace_sqrt_product(sigma_c, stats["sigma"]))
print(f"mean term {mean_term:.2f}, covariance term {cov_term:.2f}")
# The covariance term: 20 distinct images span at most 19 directions of the 128-d feature
# space, so the spread is far too small. The confidence judges each image alone, and each is a
# real image: it stays high.

# %% Exercise 3
mu_50, sigma_50 = metrics.feature_statistics(classifier.features(real[:50, :, :, None]))
fid_50 = metrics.frechet_distance(mu_50, sigma_50, stats["mu"], stats["sigma"])
rank_50 = np.linalg.matrix_rank(sigma_50)
print(f"FID of 50 real images: {fid_50:.2f}; covariance rank {rank_50} of 128")
# 50 points, centred on their mean, span at most 49 dimensions: the estimated covariance misses
# the spread in the other 79 or more, which the trace term counts as a difference. Real images,
# yet a FID far above that of 1,000 real images: compare FIDs only at the same number of images.
