"""Callbacks for ``Model.fit``, as in Keras: the ``Callback`` base class with every Keras hook,
``ModelCheckpoint``, ``EarlyStopping``, ``LearningRateScheduler`` and ``ReduceLROnPlateau``.

``fit`` calls, in order: ``on_train_begin``; per epoch ``on_epoch_begin``, per batch
``on_train_batch_begin`` / ``on_train_batch_end`` (which call ``on_batch_begin`` /
``on_batch_end``, as in Keras), then for the validation data ``on_test_begin``, the
``on_test_batch_*`` hooks and ``on_test_end``, then ``on_epoch_end``; finally ``on_train_end``.
``evaluate`` and ``predict`` call the ``on_test_*`` and ``on_predict_*`` hooks. Every hook gets a
``logs`` dict (possibly empty). Setting ``self.model.stop_training = True`` in any hook stops
training at the end of the current batch. ``self.params`` holds ``epochs``, ``steps`` and
``verbose``. One hook is tinyddpm's own: ``on_interrupt(epoch, step)``, on Ctrl-C.
"""
from __future__ import annotations

import math
import os
import re

from .checkpoint import save_checkpoint


class Callback:
    """Base class: override the hooks you need (see the module docstring)."""

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None): ...
    def on_train_end(self, logs=None): ...
    def on_epoch_begin(self, epoch, logs=None): ...
    def on_epoch_end(self, epoch, logs=None): ...

    def on_train_batch_begin(self, batch, logs=None):
        self.on_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self.on_batch_end(batch, logs)

    def on_batch_begin(self, batch, logs=None): ...
    def on_batch_end(self, batch, logs=None): ...
    def on_test_begin(self, logs=None): ...
    def on_test_end(self, logs=None): ...
    def on_test_batch_begin(self, batch, logs=None): ...
    def on_test_batch_end(self, batch, logs=None): ...
    def on_predict_begin(self, logs=None): ...
    def on_predict_end(self, logs=None): ...
    def on_predict_batch_begin(self, batch, logs=None): ...
    def on_predict_batch_end(self, batch, logs=None): ...
    def on_interrupt(self, epoch, step): ...


class CallbackList:
    """The callbacks of one ``fit``/``evaluate``/``predict`` call: ``hooks.on_epoch_end(3, logs)``
    calls ``on_epoch_end(3, logs)`` on each, in order."""

    def __init__(self, callbacks, model, params, do_validation=False):
        self.callbacks = list(callbacks or ())
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks: expected tinyddpm.callbacks.Callback objects, got "
                                f"{type(cb).__name__}")
            cb.set_model(model)
            cb.set_params(params)
            cb._do_validation = do_validation  # whether fit() has validation data

    def __getattr__(self, hook):
        def call(*args):
            for cb in self.callbacks:
                getattr(cb, hook)(*args)
        return call


def _monitored(callback, logs):
    """``logs[callback.monitor]``, or a clear error listing what the logs hold."""
    if callback.monitor not in logs:
        raise ValueError(f"{type(callback).__name__}: monitor={callback.monitor!r} is not in the "
                         f"logs, which hold {sorted(logs)}; check the spelling, and pass "
                         "validation_data to fit() to monitor a 'val_' value")
    return logs[callback.monitor]


def _check_validation(callback):
    """Before any work: a 'val_' monitor needs validation data."""
    if callback.monitor.startswith("val_") and not getattr(callback, "_do_validation", True):
        raise ValueError(f"{type(callback).__name__}: monitor={callback.monitor!r} needs "
                         "validation data: pass validation_data to fit(), or monitor 'loss'")


def _better(mode, monitor):
    """The comparison for ``mode`` ('min', 'max' or 'auto': 'max' for accuracies, else 'min')."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "max" or mode == "auto" and re.search(r"acc|auc", monitor):
        return -1.0  # values are compared as sign * value, lower is better
    return 1.0


class ModelCheckpoint(Callback):
    """Save the model (weights, optimizer state, epoch, history) to ``filepath`` after each epoch.

    ``filepath`` may hold Keras-style fields, filled from the epoch (counted from 1) and the logs:
    ``"ckpt_{epoch:02d}_{val_loss:.3f}.npz"`` writes one file per epoch. ``save_best_only=True``:
    only when ``monitor`` (default ``val_loss``) improves (``mode``: 'auto', 'min' or 'max'); a
    monitor missing from the logs is an error, not a silent fallback. ``save_on_interrupt=True``
    also saves the exact mid-epoch state on Ctrl-C, for ``--resume`` (use it on a plain path that
    is not ``save_best_only``). ``extra`` (a dict, e.g. the data seed) is stored in the header.
    A plain path is locked while training (``<path>.lock``): another process training into the
    same file gets a :class:`~tinyddpm._files.LockedError` at its start, not a lost run. Every
    save is atomic; one that fails raises :class:`~tinyddpm._files.WriteError` (the previous file
    is kept).
    """

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, save_on_interrupt=False,
                 extra=None, verbose=0, mode="auto"):
        super().__init__()
        self.filepath, self.monitor = str(filepath), monitor
        self.save_best_only, self.save_on_interrupt = save_best_only, save_on_interrupt
        self.extra, self.verbose = dict(extra or {}), verbose
        self.sign = _better(mode, monitor)
        self.best = math.inf * self.sign
        if save_on_interrupt and "{" in self.filepath:
            raise ValueError("ModelCheckpoint: save_on_interrupt needs a plain filepath (a "
                             "mid-epoch state has no epoch logs to fill it in)")

    def on_train_begin(self, logs=None):
        from ._files import FileLock, check_output

        if self.save_best_only:
            _check_validation(self)
        folder = os.path.dirname(os.path.abspath(self.filepath))
        if "{" not in folder:  # before any training: the file can be written there
            os.makedirs(folder, exist_ok=True)  # as Keras' ModelCheckpoint does
            check_output(os.path.join(folder, "x.npz") if "{" in self.filepath else
                         self.filepath, "ModelCheckpoint(filepath)")
        if "{" not in self.filepath:  # one file: no other process may write it meanwhile
            self._lock = FileLock(self.filepath).acquire("another process's ModelCheckpoint")

    def on_train_end(self, logs=None):
        lock = self.__dict__.pop("_lock", None)
        if lock is not None:
            lock.release()

    def _path(self, epoch, logs):
        try:
            return self.filepath.format(epoch=epoch + 1, **logs)
        except KeyError as e:
            raise ValueError(f"ModelCheckpoint: filepath {self.filepath!r} names {e.args[0]!r}, "
                             f"which is not in the logs ({sorted(logs)} and 'epoch')") from None

    def _save(self, path):
        best = None if math.isinf(self.best) else self.best
        save_checkpoint(path, self.model, self.model.optimizer, extra={**self.extra, "best": best})

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        path = self._path(epoch, logs)
        if self.save_best_only:
            value = _monitored(self, logs)
            if not self.sign * value < self.sign * self.best:
                return
            self.best = value
        elif self.monitor in logs and self.sign * logs[self.monitor] < self.sign * self.best:
            self.best = logs[self.monitor]
        self._save(path)
        if self.verbose:
            print(f"saved {path} (epoch {epoch + 1}, {self.monitor}="
                  f"{logs.get(self.monitor, float('nan')):.4f})")

    def on_interrupt(self, epoch, step):
        if self.save_on_interrupt:
            self._save(self.filepath)


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs,
    as Keras does: with val_loss 1.0, 0.9, 0.95, 0.96, ... training stops after 3 epochs with
    ``patience=1`` and after 4 with ``patience=2``. ``restore_best_weights=True`` puts back the
    weights of the best epoch when it stops (and at the end of training). ``mode``: 'auto',
    'min' or 'max'. A monitor missing from the logs is an error.
    """

    def __init__(self, monitor="val_loss", patience=0, min_delta=0.0, mode="auto",
                 restore_best_weights=False, verbose=0):
        super().__init__()
        if int(patience) != patience or patience < 0:
            raise ValueError(f"EarlyStopping: patience must be a whole number >= 0, got {patience}")
        self.monitor, self.patience, self.min_delta = monitor, int(patience), abs(float(min_delta))
        self.sign = _better(mode, monitor)
        self.restore_best_weights, self.verbose = restore_best_weights, verbose
        self.best, self.wait, self.best_weights, self.stopped_epoch = math.inf, 0, None, 0

    def on_train_begin(self, logs=None):
        _check_validation(self)
        self.best, self.wait, self.best_weights, self.stopped_epoch = math.inf, 0, None, 0

    def on_epoch_end(self, epoch, logs=None):
        value = self.sign * _monitored(self, logs or {})
        self.wait += 1
        if value + self.min_delta < self.best:
            self.best, self.wait = value, 0
            if self.restore_best_weights:
                self.best_weights = self.model.state_dict()
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)


def _current_rate(model):
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not hasattr(optimizer, "current_learning_rate"):
        raise ValueError("the learning-rate callbacks need a compiled model")
    return optimizer.current_learning_rate


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of each epoch to ``schedule(epoch, lr)`` (or
    ``schedule(epoch)``), as Keras does; the rate joins the epoch's logs as ``learning_rate``."""

    def __init__(self, schedule, verbose=0):
        super().__init__()
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        lr = _current_rate(self.model)
        try:
            new = self.schedule(epoch, lr)
        except TypeError:  # a one-argument schedule
            new = self.schedule(epoch)
        new = float(new)
        if not math.isfinite(new):
            raise ValueError(f"LearningRateScheduler: the schedule returned {new} at epoch "
                             f"{epoch + 1}")
        self.model.optimizer.learning_rate = new
        if self.verbose:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {new}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = _current_rate(self.model)


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved by more than
    ``min_delta`` for ``patience`` epochs, then wait ``cooldown`` epochs; never below
    ``min_lr`` (Keras' rule, step for step). A monitor missing from the logs is an error."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto",
                 min_delta=1e-4, cooldown=0, min_lr=0.0):
        super().__init__()
        if not 0 <= factor < 1:
            raise ValueError(f"ReduceLROnPlateau: factor must lie in [0, 1), got {factor}")
        self.monitor, self.factor, self.patience = monitor, float(factor), int(patience)
        self.verbose, self.min_delta, self.cooldown = verbose, abs(float(min_delta)), int(cooldown)
        self.min_lr, self.sign = float(min_lr), _better(mode, monitor)
        self.best, self.wait, self.cooldown_counter = math.inf, 0, 0

    def on_train_begin(self, logs=None):
        _check_validation(self)
        self.best, self.wait, self.cooldown_counter = math.inf, 0, 0

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs["learning_rate"] = _current_rate(self.model)
        value = self.sign * _monitored(self, logs)
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if value < self.best - self.min_delta:
            self.best, self.wait = value, 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience:
                old = _current_rate(self.model)
                if old > self.min_lr:
                    new = max(old * self.factor, self.min_lr)
                    self.model.optimizer.learning_rate = new
                    if self.verbose:
                        print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to "
                              f"{new}.")
                    self.cooldown_counter, self.wait = self.cooldown, 0
