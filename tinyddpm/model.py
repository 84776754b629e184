"""A Keras-style ``Model``: ``compile(loss=..., optimizer=...)``, ``fit``, ``evaluate``, ``predict``.

    model = build_diffusion_model()
    model.compile(loss=Huber(), optimizer=Nadam())
    history = model.fit(train_set, validation_data=valid_set, epochs=100,
                        callbacks=[ModelCheckpoint("my_diffusion_model.npz", save_best_only=True)])

A data set is any re-iterable of ``(inputs, targets)`` batches, such as ``prepare_dataset``'s.
"""
from __future__ import annotations

import contextlib
import math
import signal
import threading
import time

import numpy as np

from . import losses as losses_mod
from . import optimizers as optimizers_mod
from .nn import Module
from .tensor import no_grad


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the model was not saved past its last good state."""


class History:
    """What ``fit`` returns: ``history.history == {"loss": [...], "val_loss": [...]}`` per epoch."""

    def __init__(self, history=None):
        self.history = {k: list(v) for k, v in (history or {}).items()}
        self.epoch = []

    def append(self, epoch, logs):
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))

    def __repr__(self):
        return f"History({self.history})"


def _batch_size(inputs):
    first = next(iter(inputs.values())) if isinstance(inputs, dict) else inputs
    return len(first.data if hasattr(first, "data") else first)


class ExponentialMovingAverage:
    """A running average of the weights, used for sampling (a standard DDPM improvement):

        shadow <- d * shadow + (1 - d) * weight   after every optimizer step,
        d = min(decay, (1 + step) / (10 + step))  (a short warm-up, so early averages are not
                                                   dominated by the random initial weights)
    """

    def __init__(self, decay=0.999):
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.decay, self.steps, self.shadow = float(decay), 0, None

    def update(self, named_params):
        if self.shadow is None:
            self.shadow = {name: p.data.copy() for name, p in named_params}
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for name, p in named_params:
            shadow = self.shadow[name]
            shadow *= d
            shadow += (1 - d) * p.data
        self.steps += 1

    def state_dict(self):
        state = {f"shadow/{k}": v.copy() for k, v in (self.shadow or {}).items()}
        return {**state, "steps": np.array(self.steps), "decay": np.array(self.decay)}

    def load_state_dict(self, state):
        self.decay, self.steps = float(state["decay"]), int(state["steps"])
        shadow = {k[len("shadow/"):]: np.array(v) for k, v in state.items() if k.startswith("shadow/")}
        self.shadow = shadow or None


class Model(Module):
    """A :class:`~tinyddpm.nn.Module` that can be compiled and trained like a Keras model."""

    def __init__(self, name=None):
        super().__init__(name)
        self.loss = self.optimizer = self.ema = None
        self.stop_training = False
        self.epoch = 0          # epochs completed
        self.step_in_epoch = 0  # batches completed in the current epoch (for exact resumption)
        self.history = History()

    def compile(self, loss="huber", optimizer="nadam", ema=None):
        """Choose the loss (``Huber()``, ``"mae"``, ...) and the optimizer (``Nadam()``, ``"adam"``).

        ``ema=0.999`` also keeps an exponential moving average of the weights
        (:class:`ExponentialMovingAverage`); ``use_ema_weights()`` swaps it in for sampling.
        """
        self.loss = losses_mod.get(loss)
        self.optimizer = optimizers_mod.get(optimizer)
        self.ema = ExponentialMovingAverage(ema) if ema else None
        return self

    def use_ema_weights(self):
        """Replace the trained weights by their moving average (for sampling); False if none."""
        if self.ema is None or self.ema.shadow is None:
            return False
        for name, p in self.named_parameters():
            if name in self.ema.shadow:  # frozen (non-trainable) weights have no average
                p.data = self.ema.shadow[name].astype(p.dtype, copy=True)
        return True

    def _require_compiled(self, what):
        if self.loss is None:
            raise RuntimeError(f"{what}: call model.compile(loss=..., optimizer=...) first")

    def train_step(self, inputs, targets):
        """Forward, loss, backward, one optimizer step; returns the loss as a float."""
        self.train()
        loss = self.loss(targets, self(inputs))
        value = float(loss.data)
        if not math.isfinite(value):
            return value  # fit() reports it; the weights are not touched
        named = list(self.named_trainable_parameters())
        params = [p for _, p in named]
        for p in params:
            p.grad = None
        loss.backward()
        self.optimizer.step(params)
        if self.ema is not None:
            self.ema.update(named)
        return value

    def fit(self, train_set, epochs=1, validation_data=None, callbacks=(), initial_epoch=None,
            verbose=1, steps_per_epoch=None):
        """Train for ``epochs`` epochs in all (counting from ``initial_epoch``) and return the History.

        Batches come from ``train_set``; if it has ``set_epoch`` (``prepare_dataset``), epoch k
        always yields the same batches for a seeded set, so a run resumed from a checkpoint sees
        exactly the batches an uninterrupted run would. ``validation_data`` is evaluated after
        every epoch with the same noise each time (``set_epoch(0)``), so val_loss is comparable
        across epochs. Ctrl-C stops at the end of the current batch (a second one at once);
        callbacks then get
        ``on_interrupt`` (``ModelCheckpoint`` saves the state there) and KeyboardInterrupt is
        raised again. A NaN or infinite loss raises :class:`TrainingDiverged` before the weights
        change.
        """
        self._require_compiled("fit()")
        callbacks = list(callbacks)
        for cb in callbacks:
            cb.set_model(self)
        if initial_epoch is not None and initial_epoch != self.epoch:
            self.epoch, self.step_in_epoch = int(initial_epoch), 0
        self.stop_training = False
        for cb in callbacks:
            cb.on_train_begin()
        while self.epoch < epochs and not self.stop_training:
            epoch = self.epoch
            try:
                with _interrupt_between_batches() as stop:
                    logs = {"loss": self._train_epoch(train_set, epoch, epochs, verbose,
                                                      steps_per_epoch, stop)}
            except KeyboardInterrupt:
                for cb in callbacks:
                    cb.on_interrupt(epoch, self.step_in_epoch)
                raise
            if validation_data is not None:
                logs["val_loss"] = self.evaluate(validation_data, verbose=0)
            self.epoch, self.step_in_epoch = epoch + 1, 0
            self.history.append(epoch, logs)
            if verbose:
                print(f"Epoch {epoch + 1}/{epochs}: " +
                      ", ".join(f"{k}={v:.4f}" for k, v in logs.items()))
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)
        for cb in callbacks:
            cb.on_train_end()
        return self.history

    def _train_epoch(self, train_set, epoch, epochs, verbose, steps_per_epoch, stop):
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        total = steps_per_epoch or (len(train_set) if hasattr(train_set, "__len__") else None)
        skip = self.step_in_epoch  # batches already done before an interruption
        loss_sum = self._partial_loss_sum if skip else 0.0
        bar = _progress(total, f"Epoch {epoch + 1}/{epochs}", verbose, initial=skip)
        seen_images, start = 0, time.perf_counter()
        try:
            for step, (inputs, targets) in enumerate(train_set):
                if steps_per_epoch is not None and step >= steps_per_epoch:
                    break
                if step < skip:
                    continue
                value = self.train_step(inputs, targets)
                if not math.isfinite(value):
                    raise TrainingDiverged(
                        f"the loss became {value} at epoch {epoch + 1}, batch {step + 1}; training "
                        "stopped and the weights of the last good step were kept (the last saved "
                        "checkpoint is untouched). Try a lower learning rate.")
                loss_sum += value
                self.step_in_epoch = step + 1
                self._partial_loss_sum = loss_sum
                if stop():  # Ctrl-C arrived during this batch: stop cleanly after it
                    raise KeyboardInterrupt
                seen_images += _batch_size(inputs)
                if bar is not None:
                    rate = seen_images / max(time.perf_counter() - start, 1e-9)
                    bar.set_postfix(loss=f"{loss_sum / self.step_in_epoch:.4f}",
                                    img_s=f"{rate:.0f}", refresh=False)
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return loss_sum / max(self.step_in_epoch, 1)

    def evaluate(self, dataset, verbose=0):
        """Mean loss over the batches of ``dataset``, in inference mode."""
        self._require_compiled("evaluate()")
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(0)
        was_training = self.training
        self.eval()
        total, count = 0.0, 0
        try:
            with no_grad():
                for inputs, targets in dataset:
                    n = _batch_size(inputs)
                    total += float(self.loss(targets, self(inputs)).data) * n
                    count += n
        finally:
            self.train(was_training)  # back to the mode the model was in
        return total / max(count, 1)

    def recalibrate_batchnorm(self, dataset, batches=200):
        """Re-estimate every BatchNorm layer's moving statistics with the current weights.

        Runs ``batches`` batches of ``dataset`` forward in training mode (no weight update) and
        sets the moving mean and variance to the plain average of their batch statistics. Use it
        after swapping in other weights (``use_ema_weights()``): the moving statistics were
        gathered with the trained weights, not with their average. Returns the batches used.
        """
        from .nn import BatchNormalization

        layers = [m for _, m in self.named_modules() if isinstance(m, BatchNormalization)]
        saved = [m.momentum for m in layers]
        used, was_training = 0, self.training
        self.train()
        try:
            with no_grad():
                for inputs, _ in dataset:
                    if used == batches:
                        break
                    for m in layers:  # moving <- (k * moving + batch) / (k + 1): a running mean
                        m.momentum = used / (used + 1)
                    self(inputs)
                    used += 1
        finally:
            for m, momentum in zip(layers, saved):
                m.momentum = momentum
            self.train(was_training)
        return used

    def predict(self, inputs, batch_size=64):
        """The model's outputs as a NumPy array, in inference mode, ``batch_size`` at a time."""
        was_training = self.training
        self.eval()
        n = _batch_size(inputs)
        outputs = []
        try:
            with no_grad():
                for start in range(0, n, batch_size):
                    part = ({k: v[start:start + batch_size] for k, v in inputs.items()}
                            if isinstance(inputs, dict) else inputs[start:start + batch_size])
                    outputs.append(self(part).data)
        finally:
            self.train(was_training)
        return np.concatenate(outputs)


@contextlib.contextmanager
def _interrupt_between_batches():
    """Defer Ctrl-C to the end of the current batch, so no update is left half-applied.

    Yields a function that says whether Ctrl-C was pressed; a second Ctrl-C interrupts at once.
    Only the main thread can handle signals; elsewhere Ctrl-C behaves as usual.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    pressed = []

    def handler(signum, frame):
        if pressed:
            raise KeyboardInterrupt
        pressed.append(True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(pressed)
    finally:
        signal.signal(signal.SIGINT, previous)


def _progress(total, desc, verbose, initial=0):
    if not verbose:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, initial=initial, unit="batch", leave=True,
                dynamic_ncols=True)
