"""Optimizers with the semantics of their Keras namesakes.

Each ``step(params)`` reads ``p.grad`` and updates ``p.data`` in place. ``state_dict()`` holds the
step count and the per-parameter moments, so training resumes exactly.
"""
from __future__ import annotations

import numpy as np


class Optimizer:
    """``learning_rate``: a number, or a schedule (any callable of the step count, such as
    :class:`ExponentialDecay`), as in Keras. ``clipnorm`` clips each gradient to that norm,
    ``global_clipnorm`` all of them together (g * c / max(norm, c))."""
    slot_names = ()

    def __init__(self, learning_rate=1e-3, clipnorm=None, global_clipnorm=None):
        if not callable(learning_rate):
            _check_number(self, "learning_rate", learning_rate, 0, None)
        self.learning_rate = learning_rate if callable(learning_rate) else float(learning_rate)
        for name, value in (("clipnorm", clipnorm), ("global_clipnorm", global_clipnorm)):
            if value is not None and not value > 0:
                raise ValueError(f"{type(self).__name__}: {name} must be > 0, got {value}")
        if clipnorm is not None and global_clipnorm is not None:
            raise ValueError(f"{type(self).__name__}: give clipnorm or global_clipnorm, not both")
        self.clipnorm, self.global_clipnorm = clipnorm, global_clipnorm
        self.iterations = 0
        self.slots = None  # {slot name: [array per parameter]}

    @property
    def current_learning_rate(self):
        """The rate the next step uses (a schedule's value at the current step)."""
        if callable(self.learning_rate):
            return float(self.learning_rate(self.iterations))
        return self.learning_rate

    def _clipped(self, params):
        """The gradients, clipped by norm as asked."""
        grads = [None if p.grad is None else p.grad.astype(p.data.dtype, copy=False)
                 for p in params]
        if self.clipnorm is not None:
            grads = [None if g is None else g * _shrink(np.sqrt(np.sum(g * g)), self.clipnorm)
                     for g in grads]
        elif self.global_clipnorm is not None:
            norm = np.sqrt(sum(float(np.sum(g * g)) for g in grads if g is not None))
            grads = [None if g is None else g * _shrink(norm, self.global_clipnorm)
                     for g in grads]
        return grads

    def _build(self, params):
        self.slots = {name: [np.zeros_like(p.data) for p in params] for name in self.slot_names}

    def step(self, params):
        """Apply one update to every parameter that has a gradient."""
        params = list(params)
        if self.slots is None:
            self._build(params)
        elif self.slot_names and len(self.slots[self.slot_names[0]]) != len(params):
            raise ValueError(f"{type(self).__name__}: built for a different list of parameters")
        self._lr = self.current_learning_rate
        grads = self._clipped(params)
        self.iterations += 1
        self._begin_step()
        for i, (p, g) in enumerate(zip(params, grads)):
            if g is None:
                continue
            slots = {name: arrays[i] for name, arrays in self.slots.items()}
            self._update(p.data, g, **slots)

    def zero_grad(self, params):
        for p in params:
            p.grad = None

    def _begin_step(self):
        """Per-step scalars shared by all parameters."""

    def _update(self, var, grad, **slots):  # pragma: no cover - interface
        raise NotImplementedError

    def state_dict(self):
        state = {"iterations": np.array(self.iterations)}
        if not callable(self.learning_rate):  # a schedule follows from the step count
            state["learning_rate"] = np.array(self.learning_rate)
        for name, arrays in (self.slots or {}).items():
            for i, a in enumerate(arrays):
                state[f"{name}/{i}"] = a.copy()
        return state

    def load_state_dict(self, state, params=None):
        iterations = np.asarray(state["iterations"])
        if iterations.shape != () or iterations.dtype.kind not in "iu" or iterations < 0:
            raise ValueError(f"iterations must be a whole number >= 0, got {iterations!r}")
        if "learning_rate" in state:
            rate = np.asarray(state["learning_rate"])
            if rate.shape != () or not np.isfinite(rate) or rate < 0:
                raise ValueError(f"learning_rate must be a finite number >= 0, got {rate!r}")
        self.iterations = int(iterations)
        if "learning_rate" in state and not callable(self.learning_rate):
            self.learning_rate = float(state["learning_rate"])
        if not self.slot_names:
            return
        count = sum(1 for k in state if k.startswith(self.slot_names[0] + "/"))
        if count == 0:
            self.slots = None
            return
        self.slots = {name: [np.array(state[f"{name}/{i}"]) for i in range(count)]
                      for name in self.slot_names}
        if params is not None:
            for i, p in enumerate(params):
                for name in self.slot_names:
                    if i >= count or self.slots[name][i].shape != p.data.shape:
                        raise ValueError(f"{type(self).__name__} state does not fit the model: "
                                         f"slot {name}/{i} vs parameter of shape {p.data.shape}")


def _check_number(optimizer, name, value, low, high, high_open=False):
    """A finite real number in [low, high] (``high_open``: [low, high)), or a ValueError naming
    the optimizer and the argument."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and np.isfinite(value) and value >= low and (
            high is None or (value < high if high_open else value <= high))
    if not ok:
        bounds = f">= {low}" if high is None else f"in [{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{type(optimizer).__name__}: {name} must be a finite number {bounds}, "
                         f"got {value!r}")


def _check_moments(optimizer, beta_1, beta_2, epsilon):
    _check_number(optimizer, "beta_1", beta_1, 0, 1, high_open=True)
    _check_number(optimizer, "beta_2", beta_2, 0, 1, high_open=True)
    _check_number(optimizer, "epsilon", epsilon, 0, None)


class SGD(Optimizer):
    """v <- momentum v - lr g;  var <- var + v  (Nesterov: var <- var + momentum v - lr g)."""
    slot_names = ("velocity",)

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **clipping):
        super().__init__(learning_rate, **clipping)
        _check_number(self, "momentum", momentum, 0, 1)
        self.momentum, self.nesterov = float(momentum), nesterov

    def _update(self, var, grad, velocity):
        lr = self._lr
        if self.momentum == 0:
            var -= lr * grad
            return
        velocity *= self.momentum
        velocity -= lr * grad
        var += self.momentum * velocity - lr * grad if self.nesterov else velocity


class Adam(Optimizer):
    """Keras Adam:  m <- m + (g - m)(1 - b1);  v <- v + (g^2 - v)(1 - b2);
    var <- var - lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + epsilon)."""
    slot_names = ("m", "v")

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **clipping):
        super().__init__(learning_rate, **clipping)
        _check_moments(self, beta_1, beta_2, epsilon)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def _begin_step(self):
        t = self.iterations
        self._alpha = self._lr * np.sqrt(1 - self.beta_2 ** t) / (1 - self.beta_1 ** t)

    def _update(self, var, grad, m, v):
        m += (grad - m) * (1 - self.beta_1)
        v += (grad * grad - v) * (1 - self.beta_2)
        var -= self._alpha * m / (np.sqrt(v) + self.epsilon)


class Nadam(Optimizer):
    """Keras Nadam: Adam with Nesterov momentum and a momentum schedule.

    mu_t = beta_1 (1 - 0.5 * 0.96^t)           (current Keras; ``legacy_schedule=True``:
                                                0.96^(0.004 t), old Keras and torch's default)
    prod_t = mu_1 ... mu_t
    m <- m + (g - m)(1 - beta_1);  v <- v + (g^2 - v)(1 - beta_2)
    m_hat = mu_{t+1} m / (1 - prod_t mu_{t+1}) + (1 - mu_t) g / (1 - prod_t)
    v_hat = v / (1 - beta_2^t)
    var <- var - lr m_hat / (sqrt(v_hat) + epsilon)
    """
    slot_names = ("m", "v")

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 legacy_schedule=False, **clipping):
        super().__init__(learning_rate, **clipping)
        _check_moments(self, beta_1, beta_2, epsilon)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.legacy_schedule = legacy_schedule

    def _mu(self, t):
        decay_power = 0.004 * t if self.legacy_schedule else t
        return self.beta_1 * (1.0 - 0.5 * 0.96 ** decay_power)

    def _u_product(self, t):
        return float(np.prod([self._mu(i) for i in range(1, t + 1)])) if t else 1.0

    def _begin_step(self):
        t = self.iterations
        if getattr(self, "_product_step", None) != t - 1:  # fresh or resumed: recompute
            self._product = self._u_product(t - 1)
        self._product *= self._mu(t)
        self._product_step = t
        mu_t, mu_next = self._mu(t), self._mu(t + 1)
        self._c_m = mu_next / (1 - self._product * mu_next)
        self._c_g = (1 - mu_t) / (1 - self._product)
        self._v_correction = 1 - self.beta_2 ** t

    def _update(self, var, grad, m, v):
        m += (grad - m) * (1 - self.beta_1)
        v += (grad * grad - v) * (1 - self.beta_2)
        m_hat = self._c_m * m + self._c_g * grad
        var -= self._lr * m_hat / (np.sqrt(v / self._v_correction) + self.epsilon)


def _shrink(norm, limit):
    return limit / max(float(norm), limit)


class LearningRateSchedule:
    """Base class of the schedules: ``schedule(step) -> learning rate`` (step counted from 0)."""

    def __call__(self, step):  # pragma: no cover - interface
        raise NotImplementedError


class ExponentialDecay(LearningRateSchedule):
    """lr(step) = initial_learning_rate * decay_rate ^ (step / decay_steps) (Keras'
    ``ExponentialDecay``; ``staircase=True`` floors the exponent)."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False):
        if not decay_steps > 0:
            raise ValueError(f"ExponentialDecay: decay_steps must be > 0, got {decay_steps}")
        self.initial_learning_rate, self.decay_steps = float(initial_learning_rate), decay_steps
        self.decay_rate, self.staircase = float(decay_rate), staircase

    def __call__(self, step):
        p = step / self.decay_steps
        return self.initial_learning_rate * self.decay_rate ** (np.floor(p) if self.staircase
                                                                else p)


class CosineDecay(LearningRateSchedule):
    """lr(step) = initial_learning_rate * ((1 - alpha) c + alpha), c = (1 + cos(pi s / D)) / 2,
    s = min(step, decay_steps = D) (Keras' ``CosineDecay``, without warm-up)."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0):
        if not decay_steps > 0:
            raise ValueError(f"CosineDecay: decay_steps must be > 0, got {decay_steps}")
        self.initial_learning_rate, self.decay_steps = float(initial_learning_rate), decay_steps
        self.alpha = float(alpha)

    def __call__(self, step):
        c = 0.5 * (1 + np.cos(np.pi * min(step, self.decay_steps) / self.decay_steps))
        return self.initial_learning_rate * ((1 - self.alpha) * c + self.alpha)


class schedules:  # noqa: N801 - Keras' ``optimizers.schedules`` namespace
    LearningRateSchedule = LearningRateSchedule
    ExponentialDecay = ExponentialDecay
    CosineDecay = CosineDecay


def get(optimizer):
    """An optimizer from an instance or a Keras name ('nadam', 'adam', 'sgd')."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    names = {"nadam": Nadam, "adam": Adam, "sgd": SGD}
    if optimizer not in names:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {sorted(names)}")
    return names[optimizer]()
