# Solutions to lesson 14's exercises ("The 2021 improvements"), one block per answer cell.

# %% Exercise 1
my_beta_tilde = (1 - alpha_cumprod[:-1]) / (1 - alpha_cumprod[1:]) * beta[1:]

# %% Exercise 2
def kl(mean1, logvar1, mean2, logvar2):
    return 0.5 * (logvar2 - logvar1 + (np.exp(logvar1) + (np.asarray(mean1) - mean2) ** 2)
                  / np.exp(logvar2) - 1)

# %% Exercise 3
def bin_probability(x, mu, sigma):
    def phi(z):
        return 0.5 * (1 + math.erf(z / math.sqrt(2)))
    upper = 1.0 if x > 1 - 1e-9 else phi((x + 1 / 255 - mu) / sigma)
    lower = 0.0 if x < -1 + 1e-9 else phi((x - 1 / 255 - mu) / sigma)
    return upper - lower

# %% Exercise 4
def learned_variance(v, t):
    frac = (np.asarray(v) + 1) / 2
    log_beta_tilde = math.log((1 - alpha_cumprod[t - 1]) / (1 - alpha_cumprod[t]) * beta[t])
    return np.exp(frac * math.log(beta[t]) + (1 - frac) * log_beta_tilde)

v_minus_one_is = "beta_tilde"
