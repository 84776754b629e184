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
import warnings

import numpy as np

from . import losses as losses_mod
from . import optimizers as optimizers_mod
from .callbacks import CallbackList
from .nn import Module
from .tensor import Tensor, no_grad


class TrainingDiverged(FloatingPointError):
    """The loss, a gradient or an update became NaN or infinite. The step was not taken: the
    model (weights, optimizer state, moving average) holds its last good state, all finite."""


class Interrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C (SIGINT) or SIGTERM; ``signal`` is which (a KeyboardInterrupt,
    so code that catches Ctrl-C catches both)."""

    def __init__(self, signum=signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signal = int(signum)


class History:
    """What ``fit`` returns, as in Keras: ``history.history == {"loss": [...], "val_loss": [...]}``
    for the epochs of that call, ``history.epoch`` their indices, ``history.params`` (``epochs``,
    ``steps``, ``verbose``) and ``history.model``. Each ``fit`` returns a new one (also kept as
    ``model.history``); ``model.run_history`` holds every epoch of the run, across ``fit`` calls
    and checkpoints, which is what a checkpoint saves."""

    def __init__(self, history=None, epoch=None):
        self.history = {k: list(v) for k, v in (history or {}).items()}
        lengths = {len(v) for v in self.history.values()}
        self.epoch = list(epoch) if epoch is not None else list(range(max(lengths, default=0)))
        self.params, self.model = {}, None

    def append(self, epoch, logs):
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))

    def truncate(self, epochs):
        """Keep the records of epochs 0..epochs-1 (a run restarted at epoch ``epochs``)."""
        keep = [i for i, e in enumerate(self.epoch) if e < epochs]
        self.epoch = [self.epoch[i] for i in keep]
        self.history = {k: [v[i] for i in keep if i < len(v)] for k, v in self.history.items()}

    def __repr__(self):
        return f"History({self.history})"


def _batch_size(inputs):
    first = next(iter(inputs.values())) if isinstance(inputs, dict) else \
        inputs[0] if isinstance(inputs, (list, tuple)) else inputs
    return len(first.data if hasattr(first, "data") else first)


def _as_model_floats(inputs, dtype):
    """Float arrays and tensors of another precision (NumPy's float64 noise, X / 255., a
    float64 array minus a model output) in the model's own, as Keras casts its inputs; a tensor
    that asks for a gradient, integers (time steps, labels) and lists of batches are left as
    they are."""
    def cast(v):
        data = v.data if isinstance(v, Tensor) and not v.requires_grad else v
        if isinstance(data, np.ndarray) and data.dtype.kind == "f" and data.dtype != dtype:
            return data.astype(dtype)
        return v
    if isinstance(inputs, dict):
        return {k: cast(v) for k, v in inputs.items()}
    if isinstance(inputs, (list, tuple)):
        return type(inputs)(cast(v) for v in inputs)
    return cast(inputs)


def _wants_grad(inputs):
    """Whether any input tensor asks for a gradient (then even an inference call keeps a graph)."""
    return any(isinstance(v, Tensor) and v.requires_grad for v in _parts(inputs))


class _NoBatch(ValueError):
    """Data that gave no batch."""


def _verbosity(verbose):
    """Keras' ``verbose``: 0 silent, 1 (or "auto") a progress bar, 2 or more one line an epoch."""
    if verbose == "auto":
        return 1
    if isinstance(verbose, bool) or not isinstance(verbose, (int, np.integer)) or verbose < 0:
        raise ValueError(f"verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
    return min(int(verbose), 2)


def _parts(x):
    """The arrays of ``x``: one array, a dict of them (named inputs) or a list of them."""
    return list(x.values()) if isinstance(x, dict) else list(x) if isinstance(x, (list, tuple)) \
        else [x]


def _take(x, rows):
    """``x`` (an array, a dict or a list of arrays) at ``rows`` (a slice or indices)."""
    if isinstance(x, dict):
        return {k: np.asarray(v)[rows] for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [np.asarray(v)[rows] for v in x]
    return np.asarray(x)[rows]


def _samples(x, y):
    """How many samples x and y hold (the same number, or an error)."""
    sizes = {len(v) for v in _parts(x)} | {len(y)}
    if len(sizes) != 1:
        raise ValueError(f"x and y hold different numbers of samples: {sorted(sizes)}")
    return sizes.pop()


class ArrayBatches:
    """Arrays ``x`` (an array, a dict or a list of arrays) and ``y`` as ``(inputs, targets)``
    batches of ``batch_size``, the last one smaller; with ``shuffle``, each epoch in its own
    order, from ``seed`` and the epoch (``set_epoch``), so a resumed run sees the same batches."""

    def __init__(self, x, y, batch_size=32, shuffle=False, seed=0):
        self.x, self.y = x, np.asarray(y)
        self.n, self.batch_size = _samples(x, y), _whole(batch_size, "batch_size", low=1)
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return -(-self.n // self.batch_size)

    def __iter__(self):
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
                 if self.shuffle else np.arange(self.n))
        for start in range(0, self.n, self.batch_size):
            rows = order[start:start + self.batch_size]
            yield _take(self.x, rows), self.y[rows]


def _fit_data(x, y, batch_size, validation_split, validation_data, shuffle):
    """fit()'s data as (training batches, validation batches or None), as Keras reads them."""
    if y is None:  # a data set of batches
        if isinstance(x, (np.ndarray, dict)):  # Keras: "Target data is missing"
            shape = x.shape if isinstance(x, np.ndarray) else {k: np.shape(v) for k, v in x.items()}
            raise ValueError(f"fit(): x, of shape {shape}, has no targets y: a diffusion model "
                             "learns the noise of noisy images, so give it the data set of "
                             "prepare_dataset(images, batch_size), or x = {'X_noisy', 'time'} "
                             "arrays and y = their noise")
        if batch_size is not None or validation_split:
            raise ValueError("fit(): batch_size and validation_split apply to arrays (x, y); a "
                             "data set of batches has its own batch size")
        train = x
    else:
        n = _samples(x, y)
        if not 0 <= validation_split < 1:
            raise ValueError(f"fit(): validation_split must lie in [0, 1), got "
                             f"{validation_split}")
        keep = n - int(n * validation_split)  # Keras keeps the last part, before shuffling
        if validation_split:
            if validation_data is not None:
                raise ValueError("fit(): give validation_data or validation_split, not both")
            validation_data = (_take(x, slice(keep, n)), np.asarray(y)[keep:])
        from .nn import _rng
        train = ArrayBatches(_take(x, slice(0, keep)), np.asarray(y)[:keep], batch_size or 32,
                             shuffle=shuffle, seed=int(_rng.integers(2**31)))
    if isinstance(validation_data, tuple) and len(validation_data) == 2 and \
            isinstance(validation_data[0], (np.ndarray, dict, list)):
        validation_data = ArrayBatches(*validation_data, batch_size or 32)
    return train, validation_data


def _check_schedule(model, data, name):
    """Data prepared with another noise schedule than the model's (``prepare_dataset``'s
    ``T``/``alpha_cumprod``) is an error before training: the model would learn, and its
    samplers use, two different processes."""
    config = getattr(model, "config", None) or {}
    data_abar = getattr(data, "alpha_cumprod", None)
    if "T" not in config or data_abar is None:
        return
    from .diffusion import model_schedule

    own = model_schedule(model)[1]
    if len(data_abar) != len(own) or not np.array_equal(data_abar, own):
        raise ValueError(f"fit(): {name} was prepared with a noise schedule of T = "
                         f"{len(data_abar) - 1} steps that is not this model's (T = "
                         f"{config['T']}, {config.get('schedule') or 'cosine'}); prepare it "
                         "with prepare_dataset(X, ..., alpha_cumprod=model_schedule(model)[1])")


def _whole(value, name, low=0):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
    return int(value)


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
        decay, steps = np.asarray(state["decay"]), np.asarray(state["steps"])
        if not (decay.shape == () and 0 < decay < 1):
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay!r}")
        if not (steps.shape == () and steps.dtype.kind in "iu" and steps >= 0):
            raise ValueError(f"EMA steps must be a whole number >= 0, got {steps!r}")
        self.decay, self.steps = float(decay), int(steps)
        shadow = {k[len("shadow/"):]: np.array(v) for k, v in state.items() if k.startswith("shadow/")}
        self.shadow = shadow or None


class Model(Module):
    """A :class:`~tinyddpm.nn.Module` that can be compiled and trained like a Keras model.

    As in Keras, a model is in inference mode unless it is training: ``model(x)`` uses
    BatchNorm's moving statistics and records no autograd graph (unless an input tensor
    requires a gradient), so a sampling loop runs at flat memory; ``fit`` and ``train_step``
    train and leave it in inference mode; ``model(x, training=True)`` makes one call in training
    mode. ``model.train()`` (PyTorch's habit) switches to training mode until ``model.eval()``.
    """

    def __init__(self, name=None):
        super().__init__(name)
        self.training = False  # inference unless training (layers attached later follow it)
        self.loss = self.optimizer = self.ema = None
        self.stop_training = False
        self.epoch = 0          # epochs completed
        self.step_in_epoch = 0  # batches completed in the current epoch (for exact resumption)
        self._partial_loss_sum = 0.0  # sum of loss x batch size over those batches
        self._partial_samples = 0     # and their samples
        self.batch_size_trained = None  # the batch size of the run (an epoch's first batch)
        self.history = History()      # the last fit()'s
        self.run_history = History()  # every epoch of this run (saved in checkpoints)

    def __call__(self, inputs, *args, training=None, **kwargs):
        """Run the model; ``training``: None keeps the current mode (inference unless fit,
        ``train_step`` or ``train()`` set training), True or False sets it for this call."""
        training = self.training if training is None else bool(training)
        inputs = _as_model_floats(inputs, self.dtype)
        with self.mode(training):
            if training or _wants_grad(inputs):
                return super().__call__(inputs, *args, **kwargs)
            with no_grad():
                return super().__call__(inputs, *args, **kwargs)

    def compile(self, loss="huber", optimizer="nadam", ema=None):
        """Choose the loss (``Huber()``, ``"mae"``, ...) and the optimizer (``Nadam()``, ``"adam"``).

        ``ema=0.999`` also keeps an exponential moving average of the weights
        (:class:`ExponentialMovingAverage`); ``use_ema_weights()`` swaps it in for sampling.
        """
        for name, value, example in (("loss", loss, "huber"), ("optimizer", optimizer, "nadam")):
            if isinstance(value, type):  # Keras takes instances (or names) too
                raise TypeError(f"compile(): {name}={value.__name__} is the class; pass an "
                                f"instance, {name}=td.{value.__name__}(), or a name such as "
                                f"{example!r}")
        self.loss = losses_mod.get(loss)
        if (getattr(self, "config", None) or {}).get("learn_sigma") and \
                not isinstance(self.loss, losses_mod.HybridLoss):
            shown = repr(loss) if isinstance(loss, str) else f"{type(loss).__name__}()"
            raise ValueError(f"loss={shown}: this model learns its variances (learn_sigma=True), "
                             "so its output holds eps and v and it trains with "
                             "loss=td.HybridLoss() (L_simple + 0.001 L_vlb); build it with "
                             "learn_sigma=False to train on eps alone")
        if hasattr(self.loss, "bind"):  # a loss that needs the model (HybridLoss: its schedule)
            self.loss.bind(self)
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
        """Forward in training mode, loss, backward, one optimizer step; returns the loss as a
        float. The model is back in the mode it was in afterwards.

        A step that would leave a weight, a BatchNorm statistic or the optimizer's moments NaN
        or infinite is not taken: when the loss or a gradient is not finite, or the update
        itself overflows, everything is put back as it was before the step. The returned loss
        is then not finite (``fit`` raises :class:`TrainingDiverged`).
        """
        self._require_compiled("train_step()")
        named = list(self.named_trainable_parameters())
        params = [p for _, p in named]
        stats = self._save_statistics()  # the forward pass moves BatchNorm's statistics
        with self.mode(True):
            loss = self.loss(targets, self(inputs))
            value = float(loss.data)
            if not math.isfinite(value):
                return self._undo(stats, f"the loss became {value}", value)
            for p in params:
                p.grad = None
            loss.backward()
            # the sum of squared gradients overflows (float32) when any |g| > 1.8e19, where
            # Adam's second moment would become infinite: a step not to take
            if not math.isfinite(sum(float(np.vdot(p.grad, p.grad)) for p in params
                                     if p.grad is not None)):
                return self._undo(stats, f"the gradients overflowed (loss {value:.4g})")
            saved = self._save_weights(params)
            self.optimizer.step(params)
            if not all(np.isfinite(p.data).all() for p in params):
                self._restore_weights(params, saved)
                return self._undo(stats, f"the update made weights non-finite (loss {value:.4g})")
            if self.ema is not None:
                self.ema.update(named)
        return value

    def _save_statistics(self):
        return [(module, key, getattr(module, key).copy()) for _, module in self.named_modules()
                for key in module._buffers]

    def _undo(self, stats, why, value=math.inf):
        """Put the BatchNorm statistics back, remember why (for TrainingDiverged), and return
        the non-finite value train_step reports."""
        for module, key, saved in stats:
            object.__setattr__(module, key, saved)
        self._divergence = why
        return value

    def _save_weights(self, params):
        """Copies of the weights and the optimizer's per-weight arrays (into buffers kept from
        the step before: about 0.15 ms for the book's U-Net)."""
        arrays = [p.data for p in params] + [a for slot in (self.optimizer.slots or {}).values()
                                             for a in slot]
        buffers = getattr(self, "_undo_buffers", None)
        if buffers is None or len(buffers) != len(arrays) or \
                any(b.shape != a.shape or b.dtype != a.dtype for b, a in zip(buffers, arrays)):
            buffers = self._undo_buffers = [np.empty_like(a) for a in arrays]
        for b, a in zip(buffers, arrays):
            np.copyto(b, a)
        return buffers, self.optimizer.iterations, self.optimizer.slots is None

    def _restore_weights(self, params, saved):
        buffers, iterations, unbuilt = saved
        self.optimizer.iterations = iterations
        if unbuilt:
            self.optimizer.slots = None
        arrays = [p.data for p in params] + [a for slot in (self.optimizer.slots or {}).values()
                                             for a in slot]
        for a, b in zip(arrays, buffers):
            np.copyto(a, b)

    def fit(self, x, y=None, batch_size=None, epochs=1, verbose=1, callbacks=(),
            validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=None,
            steps_per_epoch=None):
        """Train epochs ``initial_epoch`` .. ``epochs - 1`` (as in Keras: ``epochs`` is the index
        to stop at, ``initial_epoch`` defaults to 0, so each call trains ``epochs`` epochs
        unless told where to start) and return a new :class:`History` of them.

        The data, as in Keras: arrays ``x`` (or a dict of arrays, one per named input) and
        ``y``, cut into batches of ``batch_size`` (default 32), shuffled each epoch unless
        ``shuffle=False`` (seeded by :func:`tinyddpm.set_seed`), the last ``validation_split``
        of them kept for validation; or ``x`` alone, a data set: any re-iterable of
        ``(inputs, targets)`` batches (``prepare_dataset``, a list). ``validation_data``: a
        data set, or ``(x_val, y_val)`` arrays. For a data set ``train_set``, if it has
        ``set_epoch`` (``prepare_dataset``), epoch k always yields the same batches for a seeded
        set. To continue a run exactly (a checkpoint loaded, possibly mid-epoch), pass
        ``initial_epoch=model.epoch``: the batches of an interrupted epoch already done are
        skipped, so the run reaches the weights an uninterrupted one would. An epoch's ``loss``
        is the mean over its samples (batches weighted by their size, as Keras does);
        ``validation_data`` is evaluated after every epoch in inference mode with the same noise
        each time (``set_epoch(0)``). Data that runs out (a one-shot generator) stops training
        with a warning; it is never reported as a loss. The callbacks get every Keras hook (see
        :mod:`tinyddpm.callbacks`). Ctrl-C (or SIGTERM) stops at the end of the current batch (a
        second one at once); callbacks then get ``on_interrupt`` (``ModelCheckpoint`` saves the
        state there) and KeyboardInterrupt is raised. A NaN or infinite loss, gradient or update
        raises :class:`TrainingDiverged` before the weights change. ``verbose``: 0 silent, 1 a progress
        bar per epoch, 2 one line per epoch. The model is in inference mode afterwards (or in
        the mode it was in).
        """
        self._require_compiled("fit()")
        train_set, validation_data = _fit_data(x, y, batch_size, validation_split,
                                               validation_data, shuffle)
        epochs = _whole(epochs, "fit(): epochs")
        verbose = _verbosity(verbose)
        if steps_per_epoch is not None:
            steps_per_epoch = _whole(steps_per_epoch, "fit(): steps_per_epoch", low=1)
        if initial_epoch is None or _whole(initial_epoch, "fit(): initial_epoch") != self.epoch:
            self.epoch, self.step_in_epoch = initial_epoch or 0, 0  # start that epoch afresh
        self.run_history.truncate(self.epoch)
        steps_known = steps_per_epoch or (len(train_set) if hasattr(train_set, "__len__") else None)
        if steps_known is not None and self.step_in_epoch > steps_known:
            raise ValueError(f"fit(): this model stopped {self.step_in_epoch} batches into epoch "
                             f"{self.epoch + 1}, but an epoch of this data has {steps_known}; "
                             "the state was not saved from this data (or was edited)")
        _check_schedule(self, train_set, "x")
        _check_schedule(self, validation_data, "validation_data")
        for name, data in (("x", train_set), ("validation_data", validation_data)):
            if getattr(data, "target", None) == "hybrid" and \
                    not isinstance(self.loss, losses_mod.HybridLoss):
                raise ValueError(f"fit(): {name} was prepared with target='hybrid', for "
                                 f"HybridLoss, but this model is compiled with "
                                 f"{type(self.loss).__name__}: prepare it without target= (the "
                                 "noise), or train a model that learns its variances "
                                 "(build_improved_model(learn_sigma=True)) with "
                                 "loss=td.HybridLoss()")
        size = getattr(train_set, "batch_size", None)
        if self.step_in_epoch and self.batch_size_trained and size and \
                size != self.batch_size_trained:
            raise ValueError(f"fit(): this model stopped {self.step_in_epoch} batches into epoch "
                             f"{self.epoch + 1} at batch size {self.batch_size_trained}; to "
                             "continue that epoch exactly, give batches of that size (got "
                             f"{size}), or start the epoch afresh with initial_epoch=None")
        steps = steps_per_epoch or (len(train_set) if hasattr(train_set, "__len__") else None)
        history = History()
        history.params = {"epochs": epochs, "steps": steps, "verbose": verbose}
        history.model, self.history = self, history
        hooks = CallbackList(callbacks, self, history.params,
                             do_validation=validation_data is not None)
        self.stop_training = False  # as in Keras, looked at after each batch and epoch
        hooks.on_train_begin({})
        with self.mode(True):
            while self.epoch < epochs:
                epoch = self.epoch
                hooks.on_epoch_begin(epoch, {})
                try:
                    with _interrupt_between_batches() as stop:
                        loss = self._train_epoch(train_set, epoch, epochs, verbose,
                                                 steps_per_epoch, stop, hooks)
                except KeyboardInterrupt:
                    hooks.on_interrupt(epoch, self.step_in_epoch)
                    raise
                if loss is None:  # the data ran out: never a loss of 0
                    if not history.epoch:
                        raise ValueError(f"fit(): train_set gave no batch in epoch {epoch + 1}")
                    warnings.warn(f"fit(): train_set gave no batch in epoch {epoch + 1}: it ran "
                                  "out (a one-shot generator or iterator?), so training stops "
                                  "here. Pass data that can be iterated again each epoch (a "
                                  "list, or prepare_dataset(...))", RuntimeWarning, stacklevel=2)
                    break
                logs = {"loss": loss}
                ran_out = False
                if validation_data is not None:
                    try:
                        logs["val_loss"] = self._mean_loss(validation_data, hooks,
                                                           "validation_data")
                    except _NoBatch:
                        if not history.epoch:
                            raise
                        ran_out = True
                    except KeyboardInterrupt:  # the epoch is trained: saved as its last batch
                        hooks.on_interrupt(epoch, self.step_in_epoch)
                        raise
                self.epoch, self.step_in_epoch = epoch + 1, 0
                self.run_history.append(epoch, logs)  # before the callbacks: checkpoints hold it
                if ran_out:
                    history.append(epoch, logs)
                    warnings.warn(f"fit(): validation_data gave no batch after epoch {epoch + 1}: "
                                  "it ran out (a one-shot generator or iterator?), so training "
                                  "stops here, with this epoch trained but neither validated nor "
                                  "passed to the callbacks. Pass validation data that can be "
                                  "iterated again (a list, or prepare_dataset(...))",
                                  RuntimeWarning, stacklevel=2)
                    break
                hooks.on_epoch_end(epoch, logs)
                history.append(epoch, logs)  # after the callbacks, as Keras' History: with
                if verbose:                  # what they added to the logs
                    print(f"Epoch {epoch + 1}/{epochs}: " +
                          ", ".join(f"{k}={v:.4f}" for k, v in logs.items()))
                if self.stop_training:
                    break
        hooks.on_train_end({})
        return history

    def _train_epoch(self, train_set, epoch, epochs, verbose, steps_per_epoch, stop, hooks):
        """One epoch of training batches; returns the epoch's loss (mean over its samples), or
        None if ``train_set`` gave no batch."""
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        total = steps_per_epoch or (len(train_set) if hasattr(train_set, "__len__") else None)
        skip = self.step_in_epoch  # batches already done before an interruption
        loss_sum, samples = ((self._partial_loss_sum, self._partial_samples) if skip
                             else (0.0, 0))
        bar = _progress(total, f"Epoch {epoch + 1}/{epochs}", verbose == 1, initial=skip)
        seen_images, start, any_batch = 0, time.perf_counter(), bool(skip)
        try:
            for step, (inputs, targets) in enumerate(train_set):
                if steps_per_epoch is not None and step >= steps_per_epoch:
                    break
                if step < skip:
                    continue
                any_batch = True
                hooks.on_train_batch_begin(step, {})
                value = self.train_step(inputs, targets)
                if not math.isfinite(value):
                    raise TrainingDiverged(
                        f"{self._divergence} at epoch {epoch + 1}, batch {step + 1}; training "
                        "stopped, and the model keeps the weights of the last good step (a "
                        "saved checkpoint is untouched). Try a lower learning rate.")
                n = _batch_size(inputs)
                if step == 0 or not self.batch_size_trained:
                    self.batch_size_trained = n  # recorded in checkpoints, checked on resume
                loss_sum += value * n
                samples += n
                self.step_in_epoch = step + 1
                self._partial_loss_sum, self._partial_samples = loss_sum, samples
                hooks.on_train_batch_end(step, {"loss": loss_sum / samples})
                if stop():  # Ctrl-C or SIGTERM arrived during this batch: stop after it
                    raise Interrupted(stop())
                seen_images += n
                if bar is not None:
                    rate = seen_images / max(time.perf_counter() - start, 1e-9)
                    bar.set_postfix(loss=f"{loss_sum / samples:.4f}", img_s=f"{rate:.0f}",
                                    refresh=False)
                    bar.update(1)
                if self.stop_training:  # a batch hook asked to stop: end the epoch here
                    break
        finally:
            if bar is not None:
                bar.close()
        return loss_sum / samples if any_batch and samples else None

    def evaluate(self, x, y=None, batch_size=None, verbose=0, callbacks=()):
        """Mean loss over the samples of ``x`` (a data set of ``(inputs, targets)`` batches, or
        arrays ``x`` and ``y`` cut into batches of ``batch_size``, default 32), batches weighted
        by their size as Keras does, in inference mode; the model is back in its mode
        afterwards. ``callbacks`` get the ``on_test_*`` hooks. Empty data is an error."""
        self._require_compiled("evaluate()")
        dataset = x if y is None else ArrayBatches(x, y, batch_size or 32)
        hooks = CallbackList(callbacks, self, {"verbose": verbose})
        return self._mean_loss(dataset, hooks, "evaluate()")

    def _mean_loss(self, dataset, hooks, what):
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(0)
        total, count = 0.0, 0
        hooks.on_test_begin({})
        with self.mode(False), no_grad():
            for step, (inputs, targets) in enumerate(dataset):
                hooks.on_test_batch_begin(step, {})
                n = _batch_size(inputs)
                total += float(self.loss(targets, self(inputs)).data) * n
                count += n
                hooks.on_test_batch_end(step, {"loss": total / count})
        if not count:
            raise _NoBatch(f"{what}: the data gave no batch (empty, or a one-shot generator "
                           "that ran out: pass data that can be iterated again, such as a "
                           "list or prepare_dataset(...))")
        hooks.on_test_end({"loss": total / count})
        return total / count

    def recalibrate_batchnorm(self, dataset, batches=200):
        """Re-estimate every BatchNorm layer's moving statistics with the current weights.

        Runs ``batches`` batches of ``dataset`` forward in training mode (no weight update) and
        sets the moving mean and variance to the plain average of their batch statistics. Use it
        after swapping in other weights (``use_ema_weights()``): the moving statistics were
        gathered with the trained weights, not with their average. Returns the batches used.
        """
        from .nn import BatchNormalization

        batches = _whole(batches, "recalibrate_batchnorm(): batches")
        layers = [m for _, m in self.named_modules() if isinstance(m, BatchNormalization)]
        saved = [m.momentum for m in layers]
        used = 0
        try:
            with self.mode(True), no_grad():
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
        return used

    def predict(self, inputs, batch_size=64, verbose=0, callbacks=()):
        """The model's outputs as a NumPy array, in inference mode, ``batch_size`` at a time
        (the model is back in its mode afterwards). ``inputs``: an array, a dict of arrays (the
        U-Net's ``{"X_noisy": ..., "time": ...}``) or an iterable of such batches (a data set;
        of ``(inputs, targets)`` pairs, the targets are ignored). ``callbacks`` get the
        ``on_predict_*`` hooks."""
        hooks = CallbackList(callbacks, self, {"verbose": verbose})
        if isinstance(inputs, (dict, np.ndarray, Tensor)):
            batches = (_take(inputs, slice(i, i + batch_size))
                       for i in range(0, _batch_size(inputs), batch_size))
        else:
            batches = (b[0] if isinstance(b, tuple) else b for b in inputs)
        outputs = []
        hooks.on_predict_begin({})
        with self.mode(False), no_grad():
            for step, part in enumerate(batches):
                hooks.on_predict_batch_begin(step, {})
                outputs.append(self(part).data)
                hooks.on_predict_batch_end(step, {"outputs": outputs[-1]})
        hooks.on_predict_end({})
        if not outputs:
            raise ValueError("predict(): the inputs gave no batch")
        return np.concatenate(outputs)


@contextlib.contextmanager
def _interrupt_between_batches():
    """Defer Ctrl-C (SIGINT) and SIGTERM (what ``kill``, ``timeout`` and job schedulers send)
    to the end of the current batch, so no update is left half-applied; both then stop training
    as Ctrl-C does (callbacks get ``on_interrupt``: ``ModelCheckpoint`` saves the state).

    Yields a function that says whether one arrived; a second one interrupts at once. Only the
    main thread can handle signals; elsewhere they behave as usual.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    pressed = []

    def handler(signum, frame):
        if pressed:
            raise Interrupted(signum)
        pressed.append(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: pressed[0] if pressed else 0
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _progress(total, desc, verbose, initial=0):  # verbose: whether to show a bar
    if not verbose:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, initial=initial, unit="batch", leave=True,
                dynamic_ncols=True)
