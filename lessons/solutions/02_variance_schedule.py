"""Solutions to lesson 2's exercises (02_variance_schedule.ipynb)."""
# %% Exercise 1
snr_cos = alpha_cumprod[1:T] / (1 - alpha_cumprod[1:T])
snr_lin = lin_alpha_cumprod[1:T] / (1 - lin_alpha_cumprod[1:T])
t_snr1_cos = int(np.argmax(snr_cos < 1)) + 1
t_snr1_lin = int(np.argmax(snr_lin < 1)) + 1
fig, ax = plt.subplots(figsize=(6, 3))
ax.semilogy(np.arange(1, T), snr_lin, label="linear")
ax.semilogy(np.arange(1, T), snr_cos, label="cosine")
ax.axhline(1, color="k", lw=0.8)
ax.set_xlabel("t"); ax.set_title("signal-to-noise ratio"); ax.legend()
# The linear schedule falls below SNR 1 much earlier and then spends its second half far below
# it (images with almost no signal); the log plot shows the largest gap in the late steps.

# %% Exercise 2
beta1_s0 = td.variance_schedule(T, s=0)[2][1]
beta1_s01 = td.variance_schedule(T, s=0.1)[2][1]
# With s = 0 the first steps add noise far below one pixel step (2/255): the network would have to
# predict a noise that changes nothing visible. The offset makes sqrt(beta_1) a bit smaller than
# the pixel step (Nichol & Dhariwal 2021, section 3.2).

# %% Exercise 3
n_3900 = min(n_chains, 250)
rng = np.random.default_rng(3)
chains_3900 = chains[:n_3900]
for t in range(t_check + 1, 3901):
    chains_3900 = td.forward_step(chains_3900, t, beta, rng=rng)
se = np.sqrt(1 - alpha_cumprod[3900]) / np.sqrt(n_3900)
largest_in_se = np.abs(chains_3900.mean(axis=0) - np.sqrt(alpha_cumprod[3900]) * x0).max() / se
