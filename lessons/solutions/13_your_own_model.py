"""Solutions to lesson 13's exercises (13_your_own_model.ipynb)."""
# %% Exercise 1
fids = history.history["fid"]
best_epoch = int(np.argmin(fids)) + 1
best_fid = fids[best_epoch - 1]
print(f"best FID {best_fid:.1f} after epoch {best_epoch} of {len(fids)}")
# Not necessarily the last: the FID of 200 samples is noisy (see the two seeds above), and a
# lower noise-prediction loss does not always mean better samples after so few steps.
# %% Exercise 2
new_rate = 3e-4
model.optimizer.learning_rate = new_rate
more = model.fit(train_set, validation_data=valid_set, initial_epoch=model.epoch,
                 epochs=model.epoch + 2, steps_per_epoch=STEPS_PER_EPOCH, callbacks=[scorer],
                 verbose=0)
improved = more.history["fid"][-1] < min(history.history["fid"])
print("the last FID beats the first run's best:", improved)
# %% Exercise 3
classifier, _ = metrics.load_classifier()
_, logits = classifier.features_and_logits(scorer.last_samples)
counts = np.bincount(logits.argmax(axis=1), minlength=10)
most_drawn = td.CLASS_NAMES[int(np.argmax(counts))]
print(dict(zip(td.CLASS_NAMES, counts.tolist())), "->", most_drawn)
print("shipped model:", metrics.evaluate(shipped_images)["class_histogram"])
