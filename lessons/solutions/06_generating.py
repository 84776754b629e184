"""Solutions to lesson 6's exercises (06_generating.ipynb)."""
# %% Exercise 1
def my_generate(model, batch_size, seed, alpha, alpha_cumprod, beta):
    rng = np.random.default_rng(seed)
    T = len(alpha) - 1
    X = rng.standard_normal((batch_size, 28, 28, 1), dtype=np.float32)
    for t in range(T - 1, 0, -1):
        z = rng.standard_normal(X.shape, dtype=np.float32) if t > 1 else np.zeros_like(X)
        X = ddpm_step(X, predict_noise(model, X, t), t, alpha, alpha_cumprod, beta, z)
        X = X.astype(np.float32)
    return np.clip((X + 1) / 2, 0, 1)

# %% Exercise 2
X_real = td.load_fashion_mnist()[1][0][:8, :, :, None].astype(np.float32) / 127.5 - 1  # 8 test images in [-1, 1]
starts = (300, 1000) if FAST else (1000, 2500)

def regenerate(X0, t0, seed):
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(X0.shape, dtype=np.float32)
    X = td.q_sample(X0, t0, alpha_cumprod, noise=noise)
    for t in range(t0, 0, -1):
        z = rng.standard_normal(X.shape, dtype=np.float32) if t > 1 else np.zeros_like(X)
        X = ddpm_step(X, predict_noise(model, X, t), t, alpha, alpha_cumprod, beta, z)
    return X

regenerated = {t0: regenerate(X_real, t0, seed=0) for t0 in starts}
similarity = {t0: np.corrcoef(X_real.ravel(), regenerated[t0].ravel())[0, 1] for t0 in starts}
print(similarity)
# The larger t0, the smaller sqrt(alpha_cumprod_t0), the share of the image left in x_t0:
# the reverse process then has more to invent and keeps less of the original garment.

# %% Exercise 3
change = {}
for eta_ in (0.0, 1.0):
    few = td.generate_ddim(model, batch_size=8, steps=25, eta=eta_, seed=3)
    many = td.generate_ddim(model, batch_size=8, steps=100, eta=eta_, seed=3)
    change[eta_] = np.abs(few - many).mean()
print(change)
# eta = 0: deterministic, both runs follow the same ODE from the same noise, so they end near
# the same images; eta = 1 draws other noise at each step, and a different number of steps
# means different random numbers: other images.
