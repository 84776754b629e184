"""Solutions to lesson 8's exercises (08_latent_diffusion.ipynb)."""
# %% Exercise 1
a = np.linspace(0, 1, 8, dtype=np.float32)
z0, z1 = ae.encode(X_test[:2])
latent_path = ae.decode((1 - a)[:, None, None, None] * z0 + a[:, None, None, None] * z1)
x0, x1 = X_test[:2] / np.float32(255)
pixel_path = (1 - a)[:, None, None] * x0 + a[:, None, None] * x1

fig, ax = plt.subplots(figsize=(7.2, 2.2))
ax.imshow(image_grid(np.concatenate([latent_path, pixel_path[:, :, :, None]]), ncols=8), vmin=0, vmax=1)
ax.set_yticks([16, 46], ["latent", "pixels"]); ax.set_xticks([]); ax.set_frame_on(False)
# The pixel row is two garments drawn on top of each other, fading; the latent row changes the
# shape more gradually, but this autoencoder's in-between latents are not all garment-like either.
# %% Exercise 2
Z_real = ae.encode(X_test[:500])
Z_noise = np.random.default_rng(0).standard_normal((500, 7, 7, 4), dtype=np.float32)
noise_images = ae.decode(Z_noise[:16])
corr_real = np.corrcoef(Z_real[:, :, :-1].ravel(), Z_real[:, :, 1:].ravel())[0, 1]
corr_noise = np.corrcoef(Z_noise[:, :, :-1].ravel(), Z_noise[:, :, 1:].ravel())[0, 1]
fig, ax = plt.subplots(figsize=(7.2, 1.1))
ax.imshow(image_grid(noise_images[:8], ncols=8), vmin=0, vmax=1); ax.axis("off")
# Real latents are small image-like maps: neighbours are correlated, and the channels combine in
# the patterns of garments. N(0, I) has each number at the right scale but no structure, so the
# decoder gets inputs unlike anything it was trained on. The latent U-Net turns such noise, step
# by step, into a latent with the structure of real ones.
# %% Exercise 3
Z_check = ae.encode(X_check)
mae_full = np.abs(ae.decode(Z_check)[:, :, :, 0] - X_check).mean()
mae_without = []
for c in range(4):
    Z = Z_check.copy()
    Z[:, :, :, c] = 0
    mae_without.append(np.abs(ae.decode(Z)[:, :, :, 0] - X_check).mean())
# Every channel carries part of the image. A 3-channel latent would be 25% fewer numbers (a
# somewhat faster latent U-Net), but the decoder's reconstructions, the floor of the FID the
# latent model can reach, get worse.
