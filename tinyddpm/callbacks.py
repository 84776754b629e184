"""Callbacks for ``Model.fit``, as in Keras: ``ModelCheckpoint`` and ``EarlyStopping``."""
from __future__ import annotations

import math

from .checkpoint import save_checkpoint


class Callback:
    model = None

    def set_model(self, model):
        self.model = model

    def on_train_begin(self): ...
    def on_epoch_end(self, epoch, logs): ...
    def on_interrupt(self, epoch, step): ...
    def on_train_end(self): ...


class ModelCheckpoint(Callback):
    """Save the model (weights, optimizer state, epoch, history) to ``filepath`` after each epoch.

    ``save_best_only=True``: only when ``monitor`` (default ``val_loss``, or ``loss`` without
    validation data) improves. ``save_on_interrupt=True`` also saves the exact mid-epoch state on
    Ctrl-C, for ``--resume`` (use it on a checkpoint that is not ``save_best_only``).
    ``extra`` (a dict, e.g. the data seed) is stored in the header.
    """

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, save_on_interrupt=False,
                 extra=None, verbose=0):
        self.filepath, self.monitor = str(filepath), monitor
        self.save_best_only, self.save_on_interrupt = save_best_only, save_on_interrupt
        self.extra, self.verbose = dict(extra or {}), verbose
        self.best = math.inf

    def _save(self):
        save_checkpoint(self.filepath, self.model, self.model.optimizer,
                        extra={**self.extra, "best": None if math.isinf(self.best) else self.best})

    def on_epoch_end(self, epoch, logs):
        value = logs.get(self.monitor, logs.get("loss"))
        if self.save_best_only:
            if value is None or not value < self.best:
                return
            self.best = value
        elif value is not None:
            self.best = min(self.best, value)
        self._save()
        if self.verbose:
            print(f"saved {self.filepath} (epoch {epoch + 1}, {self.monitor}={value:.4f})")

    def on_interrupt(self, epoch, step):
        if self.save_on_interrupt:
            self._save()


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs."""

    def __init__(self, monitor="val_loss", patience=0, min_delta=0.0):
        self.monitor, self.patience, self.min_delta = monitor, int(patience), float(min_delta)
        self.best, self.wait = math.inf, 0

    def on_train_begin(self):
        self.best, self.wait = math.inf, 0

    def on_epoch_end(self, epoch, logs):
        value = logs.get(self.monitor)
        if value is None:
            return
        if value < self.best - self.min_delta:
            self.best, self.wait = value, 0
        else:
            self.wait += 1
            if self.wait > self.patience:
                self.model.stop_training = True
