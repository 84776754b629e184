"""Solutions to lesson 4's exercises (04_convolutions_and_unet.ipynb)."""
# %% Exercise 1
out_hw_8 = (4, 4)                 # ceil(8 / 2)
pads_8 = (0, 1, 0, 1)             # (4 - 1) * 2 + 3 - 8 = 1 pixel: the odd one at the bottom / right
x8 = np.random.default_rng(0).standard_normal((2, 8, 8, 3), dtype=np.float32)
k8 = np.random.default_rng(1).standard_normal((3, 3, 3, 4), dtype=np.float32)
y8_fast = K.conv2d_forward(x8, k8, None, 2, pads_8, out_hw_8)[0]
y8_ref = reference.conv2d(x8, k8, None, 2, pads_8, out_hw_8)
largest_diff_8 = float(np.abs(y8_fast - y8_ref).max())
# With 7x7 the total is (4 - 1) * 2 + 3 - 7 = 2, one pixel on each side: symmetric.

# %% Exercise 2
separable_16 = 3 * 3 * 16 + 16 * 32 + 32    # depthwise, pointwise, bias
separable_32 = 3 * 3 * 32 + 32 * 32 + 32
batchnorm = 4 * 32                          # gamma, beta, moving mean, moving variance
skip = 16 * 32 + 32
time_dense = 64 * 32 + 32
down0_weights = separable_16 + separable_32 + 2 * batchnorm + skip + time_dense

# %% Exercise 3
dots = table @ table[2000]
t_peak = int(np.argmax(dots))
fig, ax = plt.subplots(figsize=(6, 2.8))
ax.plot(np.arange(T + 1), dots, lw=0.8)
ax.set_xlabel("t'"); ax.set_title("row 2000 of the time encoding . row t'")
# sin(a) sin(b) + cos(a) cos(b) = cos(a - b): the dot product depends only on t - t'. It is largest
# (32) at t' = t and falls off with the distance: neighbouring steps get similar encodings, distant
# ones different, in the same way at every t.
