"""Solutions to lesson 10's exercises (10_the_books_code.ipynb)."""
# %% Exercise 1
L = keras.layers
X_ae = X_train[:, :, :, None]
td.set_seed(0)
autoencoder = keras.Sequential([
    L.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
    L.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
    L.Flatten(),
    L.Dense(30),
    L.Dense(7 * 7 * 32, activation="relu"),
    L.Reshape((7, 7, 32)),
    L.Conv2DTranspose(16, 3, strides=2, padding="same", activation="relu"),
    L.Conv2DTranspose(1, 3, strides=2, padding="same"),
])
print(autoencoder(X_ae[:8]).shape, f"{autoencoder.count_params():,} weights")
autoencoder.compile(loss="mse", optimizer=keras.optimizers.Nadam())
history_ae = autoencoder.fit(X_ae, X_ae, batch_size=32, epochs=1, verbose=2)
# %% Exercise 2
fresh = build_diffusion_model()
bn = fresh.get_layer("batch_normalization")
inputs = {"X_noisy": np.random.default_rng(0).standard_normal((16, 28, 28, 1), dtype=np.float32),
          "time": np.full(16, 2000)}
before = bn.moving_mean.copy()
fresh(inputs, training=True)
after = bn.moving_mean.copy()
# One call in training mode moved the moving statistics 1% of the way towards this batch's mean.
# In the slide's loop, 3,999 such calls on noisy images would replace the statistics learned on
# the training data by those of noise, and each image would be normalised with its batch-mates'
# statistics: the model would no longer compute what it was trained to compute.
# %% Exercise 3
class GatherTimeEncoding(TimeEncoding):
    def call(self, time):
        return td.ops.gather(self.table, time)

times = np.array([0, 1, 17, 4000])
largest_difference = np.abs(np.asarray(GatherTimeEncoding(T, embed_size)(times))
                            - TimeEncoding(T, embed_size)(times)).max()
table = td.Tensor(TimeEncoding(T, embed_size).table, requires_grad=True)
td.ops.sum(td.ops.gather(table, np.array([3, 3, 10]))).backward()
rows_with_gradient = np.nonzero(np.abs(table.grad).sum(axis=1))[0]
# Here the table is a constant, so both give the same numbers. A learned table (an embedding)
# needs gather: np.take returns a plain array and the gradient never reaches the table. Row 3 is
# used twice, and the gradients of the two uses add up (gather's backward is a scatter-add).
