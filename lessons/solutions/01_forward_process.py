"""Solutions to lesson 1's exercises (01_forward_process.ipynb)."""
# %% Exercise 1
beta_const = np.full(T + 1, 0.001, dtype=np.float32)
beta_const[0] = 0
rng = np.random.default_rng(0)
x_const = np.repeat(x0[None], 64, axis=0)
for t in range(1, T + 1):
    x_const = td.forward_step(x_const, t, beta_const, rng=rng)
steps_gone = int(np.argmax((1 - 0.001) ** (np.arange(20_000) / 2) < 0.01))
# The cosine schedule's beta_t grows to 0.999 at the end, so alpha_bar_T is about 0; a constant
# 0.001 multiplies the signal by only 0.999 ** (1 / 2) per step: 13.5% is still there at T = 4000.

# %% Exercise 2
t_batch = np.linspace(1, T, 16).astype(int)
batch = X_train_full[:16, :, :, None].astype(np.float32) / 255 * 2 - 1
noisy = td.forward_step(batch, t_batch, beta, rng=np.random.default_rng(0))

# %% Exercise 3
n_chains = 300 if FAST else 1000
rng = np.random.default_rng(3)
chains500 = np.repeat(x0[None], n_chains, axis=0)
for t in range(1, 501):
    chains500 = td.forward_step(chains500, t, beta, rng=rng)
corr_neighbours = np.corrcoef(chains500[:, 14, 14, 0], chains500[:, 14, 15, 0])[0, 1]
# Each step draws the noise of every pixel independently, so the noise of two pixels stays
# uncorrelated (0 up to about 1 / sqrt(n_chains)); their means, sqrt(alpha_bar) x0, are equal in
# every chain and do not count in a correlation across chains.
