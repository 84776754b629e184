"""The diffusion process in NumPy: forward steps, the shortcut, training batches.

The slides' notation (Ho et al., 2020), with ``alpha, alpha_cumprod, beta`` from
:mod:`tinyddpm.schedule`, indexed by t = 0..T:

* forward process   q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)   -> forward_step
* shortcut          q(x_t | x_0)     = N(sqrt(abar_t) x_0, (1 - abar_t) I)       -> q_sample
* training batch    t ~ U{1..T}, X_noisy = sqrt(abar_t) X + sqrt(1 - abar_t) eps, target eps
                                                                                 -> prepare_batch
* data pipeline     shuffle(10_000), batch(32), map(prepare_batch), prefetch(1)  -> prepare_dataset

Images are NHWC, as in the book: (N, 28, 28, 1), pixels in [-1, 1] once prepared. The reverse
process (the samplers) is in :mod:`tinyddpm.sampling`.
"""
import functools
import math
import numbers
import queue
import threading

import numpy as np

from .schedule import SCHEDULES, _check_T, schedule_spec

__all__ = ["T", "get_schedule", "model_schedule", "forward_step", "q_sample", "prepare_batch",
           "prepare_dataset", "BatchDataset", "shuffle_buffer_order"]

#: The book's number of diffusion steps.
T = 4000


def get_schedule(T=T, kind="cosine", **params):
    """The (alpha, alpha_cumprod, beta) triple for ``T`` steps, computed once and cached.

    ``kind`` is "cosine" (:func:`~tinyddpm.schedule.variance_schedule`, the slides') or
    "linear" (:func:`~tinyddpm.schedule.linear_schedule`); ``params`` are that function's
    (``s``, ``max_beta``; ``beta_start``, ``beta_end``). The arrays are shared between
    callers, so they are read-only; copy one to change it.
    """
    T = _check_T(T)
    spec = schedule_spec({"kind": kind, **params})
    return _cached_schedule(T, tuple(spec.items()))


@functools.lru_cache(maxsize=8)
def _cached_schedule(T, spec):
    spec = dict(spec)
    arrays = SCHEDULES[spec.pop("kind")](T, **spec)
    for a in arrays:
        a.flags.writeable = False
    return arrays


def model_schedule(model, T=None, schedule=None):
    """The (alpha, alpha_cumprod, beta) of the schedule ``model`` was trained with: its
    ``config["T"]`` and ``config["schedule"]`` (the cosine schedule when a config predates the
    field). The samplers use it; ``T`` or ``schedule`` given and different is an error, since a
    model sampled with another schedule than its own gives garbage with no other sign (measured:
    the shipped model with T=100 instead of 4000, FID 62 instead of 11).

    A model without a config (any callable) takes ``T`` (default 4000) and ``schedule`` (default
    cosine) as given.

    Raises
    ------
    ValueError
        ``T`` or ``schedule`` differs from the model's.
    """
    config = getattr(model, "config", None) or {}
    if "T" not in config:
        spec = schedule_spec(schedule)
        return get_schedule(**spec) if T is None else get_schedule(T, **spec)
    try:
        own_T = _check_T(config["T"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"model.config['T'] is not valid: {e}") from None
    own = schedule_spec(config.get("schedule"))
    if T is not None and (isinstance(T, bool) or T != own_T):
        raise ValueError(f"T={T!r}: this model was trained with T={own_T} time steps, and a "
                         "sampler must use the schedule the model was trained with; drop T")
    if schedule is not None and schedule_spec(schedule) != own:
        raise ValueError(f"schedule={schedule!r}: this model was trained with the schedule "
                         f"{own}; drop schedule")
    return get_schedule(own_T, **own)


# --------------------------------------------------------------------------- forward process

def _rng(rng):
    """A numpy Generator from None (fresh entropy), an int seed, or a Generator."""
    if rng is None or isinstance(rng, (numbers.Integral, np.random.Generator, np.random.SeedSequence)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be None, an int seed or a numpy.random.Generator, "
                    f"got {type(rng).__name__}")


def _float_array(x, name):
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    if x.ndim == 0:
        raise ValueError(f"{name} must be an array of images (N, ...), got a scalar")
    return x


def _per_sample(coef, t, x, low=0):
    """Gather coef[t] and shape it to broadcast against x: a scalar, or (N, 1, 1, ...); t an
    int or an int array (N,) in low..T."""
    t = np.asarray(t)
    if not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"t must be an int or an int array, got dtype {t.dtype}")
    if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != x.shape[0]):
        raise ValueError(f"t must be a scalar or of shape ({x.shape[0]},) to match x of "
                         f"shape {x.shape}, got shape {t.shape}")
    last = len(coef) - 1
    if t.size and (t.min() < low or t.max() > last):
        raise ValueError(f"t must lie in {low}..{last} (the schedule's T), got values in "
                         f"{t.min()}..{t.max()}")
    c = np.asarray(coef)[t]
    if c.ndim == 1:
        c = c.reshape((-1,) + (1,) * (x.ndim - 1))
    return c.astype(x.dtype, copy=False)


def forward_step(x_prev, t, beta, rng=None):
    r"""One step of the forward (noising) process, from x_{t-1} to x_t.

    .. math::

        q(x_t \mid x_{t-1}) = \mathcal N\left(\sqrt{1 - \beta_t}\, x_{t-1},\ \beta_t I\right),
        \qquad
        x_t = \sqrt{1 - \beta_t}\, x_{t-1} + \sqrt{\beta_t}\, \epsilon_t,
        \quad \epsilon_t \sim \mathcal N(0, I)

    Parameters
    ----------
    x_prev : array_like, shape (N, ...)
        x_{t-1}, e.g. NHWC images in [-1, 1].
    t : int or array of int, shape (N,)
        The step being taken, 1..T (one per image when an array).
    beta : numpy.ndarray, shape (T + 1,)
        The schedule's beta_t for t = 0..T.
    rng : numpy.random.Generator or int, optional

    Returns
    -------
    numpy.ndarray
        x_t, same shape and (float) dtype as ``x_prev``.
    """
    x_prev = _float_array(x_prev, "x_prev")
    b = _per_sample(beta, t, x_prev)
    eps = _rng(rng).standard_normal(x_prev.shape).astype(x_prev.dtype, copy=False)
    return np.sqrt(1 - b) * x_prev + np.sqrt(b) * eps


def q_sample(x0, t, alpha_cumprod, noise=None, rng=None):
    r"""Jump straight from x_0 to x_t: the shortcut of the forward process.

    Since a chain of Gaussian steps is Gaussian,

    .. math::

        q(x_t \mid x_0) = \mathcal N\left(\sqrt{\bar\alpha_t}\, x_0,\ (1 - \bar\alpha_t) I\right),
        \qquad
        x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, \epsilon,
        \quad \bar\alpha_t = \prod_{i=1}^t (1 - \beta_i)

    Parameters
    ----------
    x0 : array_like, shape (N, ...)
        Clean images, e.g. NHWC in [-1, 1].
    t : int or array of int, shape (N,)
        Time step(s) in 0..T; an array gives one step per image (broadcast over H, W, C).
    alpha_cumprod : numpy.ndarray, shape (T + 1,)
    noise : array_like, optional
        The epsilon to use (same shape as x0); drawn from ``rng`` when omitted.
    rng : numpy.random.Generator or int, optional

    Returns
    -------
    numpy.ndarray
        x_t, same shape and (float) dtype as ``x0``. Pass ``noise`` to know the epsilon used.
    """
    x0 = _float_array(x0, "x0")
    abar = _per_sample(alpha_cumprod, t, x0)
    if noise is None:
        noise = _rng(rng).standard_normal(x0.shape).astype(x0.dtype, copy=False)
    else:
        noise = np.asarray(noise, dtype=x0.dtype)
        if noise.shape != x0.shape:
            raise ValueError(f"noise has shape {noise.shape}, x0 has shape {x0.shape}")
    return np.sqrt(abar) * x0 + np.sqrt(1 - abar) * noise


# --------------------------------------------------------------------------- training batches

def _images_nhwc01(X):
    """X as float32 NHWC in [0, 1]: uint8 is divided by 255, floats must already be in [0, 1]."""
    if not isinstance(X, np.ndarray):
        raise TypeError(f"X must be a numpy array of images, got {type(X).__name__}")
    if X.ndim == 3:
        X = X[..., np.newaxis]  # (N, H, W) -> (N, H, W, 1)
    if X.ndim != 4:
        raise ValueError(f"X must have shape (N, H, W) or (N, H, W, C), got {X.shape}")
    if X.dtype == np.uint8:
        return X.astype(np.float32) / 255
    if not np.issubdtype(X.dtype, np.floating):
        raise TypeError(f"X must be uint8 (0..255) or float (0..1), got dtype {X.dtype}")
    X = X.astype(np.float32, copy=False)
    if X.size and (X.min() < 0 or X.max() > 1):
        raise ValueError(f"float images must be in [0, 1] (scale uint8 by /255), got values "
                         f"in [{X.min():g}, {X.max():g}]")
    return X


def _schedule_and_T(alpha_cumprod, T_):
    if alpha_cumprod is None:
        return get_schedule(T if T_ is None else T_)[1], (T if T_ is None else T_)
    alpha_cumprod = np.asarray(alpha_cumprod)
    last = len(alpha_cumprod) - 1
    if T_ is None:
        return alpha_cumprod, last
    if not 1 <= T_ <= last:
        raise ValueError(f"T={T_} outside 1..{last}, the range of the alpha_cumprod given")
    return alpha_cumprod, T_


TARGETS = ("noise", "hybrid")


def prepare_batch(X, alpha_cumprod=None, T=None, rng=None, scale=True, y=None,
                  label_dropout=0.1, num_classes=10, target="noise"):
    r"""Turn clean images into a training batch: noisy images, their time steps, the noise.

    .. math::

        x \leftarrow 2x - 1, \qquad t \sim \mathcal U\{1, \dots, T\}, \qquad
        \epsilon \sim \mathcal N(0, I), \qquad
        X_\text{noisy} = \sqrt{\bar\alpha_t}\, x + \sqrt{1 - \bar\alpha_t}\, \epsilon

    The model learns to predict :math:`\epsilon` from :math:`(X_\text{noisy}, t)`.
    The slide's TensorFlow code, which this follows::

        def prepare_batch(X):
            X = tf.cast(X[..., tf.newaxis], tf.float32) * 2 - 1  # scale from -1 to +1
            X_shape = tf.shape(X)
            t = tf.random.uniform([X_shape[0]], minval=1, maxval=T + 1, dtype=tf.int32)
            alpha_cm = tf.gather(alpha_cumprod, t)
            alpha_cm = tf.reshape(alpha_cm, [X_shape[0]] + [1] * (len(X_shape) - 1))
            noise = tf.random.normal(X_shape)
            return {
                "X_noisy": alpha_cm ** 0.5 * X + (1 - alpha_cm) ** 0.5 * noise,
                "time": t,
            }, noise

    Parameters
    ----------
    X : numpy.ndarray, shape (N, H, W) or (N, H, W, C)
        Images as uint8 in 0..255 (divided by 255 here) or float in [0, 1].
    alpha_cumprod : numpy.ndarray, shape (T + 1,), optional
        Default: the cosine schedule with ``T`` steps (cached).
    T : int, optional
        Largest time step drawn. Default: 4000, or ``len(alpha_cumprod) - 1``.
    rng : numpy.random.Generator or int, optional
        Draws t first, then the noise.
    scale : bool
        False: ``X`` is already in the space the model denoises (float32 NHWC, e.g. the
        normalised latents of :mod:`tinyddpm.latent`) and is used as it is.
    y : numpy.ndarray of int, shape (N,), optional
        Class labels, for a class-conditional model: the inputs then carry ``"label"``, where
        each label is replaced by ``num_classes`` ("no class") with probability
        ``label_dropout`` -- classifier-free guidance training, so that one model learns both
        eps(x_t, t, class) and eps(x_t, t).
    target : "noise" or "hybrid"
        "hybrid": the targets are a dict ``{"noise", "X", "time"}`` (the noise, the clean
        images in [-1, 1] and t), what :class:`tinyddpm.losses.HybridLoss` needs beside the
        noise (Nichol & Dhariwal, 2021).

    Returns
    -------
    inputs : dict
        ``"X_noisy"``: float32 (N, H, W, C); ``"time"``: int32 (N,) in 1..T.
    noise : numpy.ndarray
        float32 (N, H, W, C), the epsilon added (the training target); with
        ``target="hybrid"`` the dict above.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(map(repr, TARGETS))}, got "
                         f"{target!r}")
    if scale:
        X = _images_nhwc01(X) * 2 - 1  # scale from -1 to +1
    else:
        X = _float_array(X, "X").astype(np.float32, copy=False)
    alpha_cumprod, T_ = _schedule_and_T(alpha_cumprod, T)
    rng = _rng(rng)
    t = rng.integers(1, T_ + 1, size=len(X)).astype(np.int32)
    noise = rng.standard_normal(X.shape, dtype=np.float32)
    X_noisy = q_sample(X, t, alpha_cumprod, noise=noise)
    targets = noise if target == "noise" else {"noise": noise, "X": X, "time": t}
    if y is None:
        return {"X_noisy": X_noisy, "time": t}, targets
    label = np.array(y, dtype=np.int64)
    if label.shape != (len(X),) or label.min() < 0 or label.max() >= num_classes:
        raise ValueError(f"y must hold {len(X)} class labels in 0..{num_classes - 1}, got shape "
                         f"{label.shape}, values {label.min()}..{label.max()}")
    label[rng.random(len(X)) < label_dropout] = num_classes  # "no class"
    return {"X_noisy": X_noisy, "time": t, "label": label}, targets


# --------------------------------------------------------------------------- the data pipeline

def shuffle_buffer_order(n, buffer_size, rng):
    """The order in which a ``tf.data``-style shuffle buffer emits items 0..n-1.

    The buffer algorithm: fill a buffer with the first ``buffer_size`` items; then for each
    next item, pick a uniformly random slot, emit its item and put the new item there; when
    the input is exhausted, emit what is left in the buffer in random order. An item can only
    come out after it went in, so the shuffle is local: the k-th item emitted is one of the
    first ``buffer_size + k`` items.

    This computes the same thing without a Python loop over items. With slot choices
    j_0, j_1, ... (one per step k, when item ``buffer_size + k`` goes in), step k emits
    whatever slot j_k last received: item ``buffer_size + k'`` for the latest earlier step k'
    with j_k' = j_k, or the initial item j_k if there is none. Grouping the steps by slot
    (a stable argsort) puts each step right after the one it follows.

    Returns
    -------
    numpy.ndarray of int64, shape (n,)
        A permutation of 0..n-1.
    """
    B = min(buffer_size, n)
    steps = n - B
    slots = rng.integers(0, B, size=steps)
    by_slot = np.argsort(slots, kind="stable")          # steps grouped by slot, in time order
    first_in_slot = np.ones(steps, dtype=bool)
    first_in_slot[1:] = slots[by_slot[1:]] != slots[by_slot[:-1]]
    emitted = np.empty(steps, dtype=np.int64)
    previous = np.empty(steps, dtype=np.int64)          # B + k' of the step before, same slot
    previous[1:] = B + by_slot[:-1]
    emitted[by_slot] = np.where(first_in_slot, slots[by_slot], previous)
    buffer = np.arange(B, dtype=np.int64)               # what each slot holds at the end
    last_in_slot = np.ones(steps, dtype=bool)
    last_in_slot[:-1] = first_in_slot[1:]
    buffer[slots[by_slot[last_in_slot]]] = B + by_slot[last_in_slot]
    return np.concatenate([emitted, buffer[rng.permutation(B)]])


class _WorkerError:
    def __init__(self, exc):
        self.exc = exc


_DONE = object()


class BatchDataset:
    """The training/validation pipeline; see :func:`prepare_dataset`.

    Iterating gives ``(inputs, noise)`` pairs from :func:`prepare_batch`. Each ``iter()``
    is one epoch. The random numbers of epoch k (shuffle order, time steps, noise) come
    from a generator seeded with ``(seed, k)``, so epoch k is the same whether a run got
    there uninterrupted or resumed with ``set_epoch(k)``.
    """

    _thread_prefix = "tinyddpm-prefetch"

    def __init__(self, X, batch_size=32, shuffle=False, seed=None, *, alpha_cumprod=None,
                 T=None, buffer_size=10_000, prefetch=1, epoch=0, scale=True, labels=None,
                 label_dropout=0.1, target="noise"):
        if not isinstance(X, np.ndarray) or X.ndim not in (3, 4) or len(X) == 0:
            raise ValueError("X must be a non-empty numpy array of shape (N, H, W) or "
                             f"(N, H, W, C), got {getattr(X, 'shape', type(X).__name__)}")
        for name, value, low in (("batch_size", batch_size, 1), ("buffer_size", buffer_size, 1),
                                 ("prefetch", prefetch, 0), ("epoch", epoch, 0)):
            _check_int(name, value, low)
        if seed is not None:
            _check_int("seed", seed, 0)
        self.X = X
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.buffer_size = int(buffer_size)
        self.prefetch = int(prefetch)
        self.alpha_cumprod, self.T = _schedule_and_T(alpha_cumprod, T)
        self.scale = bool(scale)
        if labels is not None and np.shape(labels) != (len(X),):
            raise ValueError(f"labels must have shape ({len(X)},) to match X, got "
                             f"{np.shape(labels)}")
        self.labels = None if labels is None else np.asarray(labels, np.int64)
        self.label_dropout = float(label_dropout)
        if target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(map(repr, TARGETS))}, got "
                             f"{target!r}")
        self.target = target
        #: The seed actually used (drawn from fresh entropy when seed=None): log it to replay.
        self.seed = int(np.random.SeedSequence().entropy) if seed is None else int(seed)
        self.epoch = int(epoch)  # the epoch the next iter() will produce

    def set_epoch(self, epoch):
        """Make the next pass produce epoch ``epoch`` (e.g. when resuming a training run)."""
        self.epoch = _check_int("epoch", epoch, 0)

    def __len__(self):
        return math.ceil(len(self.X) / self.batch_size)

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        batches = self._batches(epoch)
        return batches if self.prefetch == 0 else self._prefetched(batches, epoch)

    def _batches(self, epoch):
        """The batches of one epoch, computed in the calling thread."""
        shuffle_seed, batch_seed = np.random.SeedSequence([self.seed, epoch]).spawn(2)
        n = len(self.X)
        if self.shuffle:
            order = shuffle_buffer_order(n, self.buffer_size, np.random.default_rng(shuffle_seed))
        else:
            order = np.arange(n)
        rng = np.random.default_rng(batch_seed)
        for start in range(0, n, self.batch_size):
            index = order[start:start + self.batch_size]
            y = None if self.labels is None else self.labels[index]
            yield prepare_batch(self.X[index], self.alpha_cumprod, self.T, rng, self.scale, y,
                                self.label_dropout, target=self.target)

    def _prefetched(self, batches, epoch):
        """Run ``batches`` in a daemon thread, at most ``prefetch`` batches ahead."""
        q = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        thread = threading.Thread(target=_produce, args=(batches, q, stop), daemon=True,
                                  name=f"{self._thread_prefix}-epoch{epoch}")
        thread.start()
        try:
            while True:
                item = q.get()
                if item is _DONE:
                    return
                if isinstance(item, _WorkerError):
                    raise item.exc
                yield item
        finally:  # runs on exhaustion, on error, and when the consumer breaks off (close())
            stop.set()
            _drain(q)
            thread.join(timeout=5)


def _produce(batches, q, stop):
    """Worker: put each batch on q (checking stop while waiting), then _DONE or the error."""
    try:
        for item in batches:
            if not _put(q, item, stop):
                return
    except BaseException as exc:  # re-raised in the consumer
        _put(q, _WorkerError(exc), stop)
        return
    finally:
        batches.close()
    _put(q, _DONE, stop)


def _put(q, item, stop):
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            pass
    return False


def _drain(q):
    try:
        while True:
            q.get_nowait()
    except queue.Empty:
        pass


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def prepare_dataset(X, batch_size=32, shuffle=False, seed=None, **options):
    """Batches of noisy images for training or validation, like the slide's ``tf.data`` pipeline.

    The slide's code, which this follows::

        def prepare_dataset(X, batch_size=32, shuffle=False):
            ds = tf.data.Dataset.from_tensor_slices(X)
            if shuffle:
                ds = ds.shuffle(10_000)
            return ds.batch(batch_size).map(prepare_batch).prefetch(1)

    * shuffle: a 10,000-item shuffle buffer exactly like ``shuffle(10_000)`` (see
      :func:`shuffle_buffer_order`), reshuffled every epoch;
    * batch: ``batch_size`` images a batch, the last partial batch kept;
    * map: :func:`prepare_batch` on each batch (t ~ U{1..T}, fresh noise every epoch);
    * prefetch: the next batch is prepared in a background daemon thread while the current
      one is used. Breaking out of a loop stops the thread; an exception raised while
      preparing a batch is re-raised in the loop.

    Reproducibility: the random numbers of epoch k (shuffle order, then independent streams
    for t and the noise) come from ``SeedSequence([seed, k])``. Each ``for`` pass over the
    dataset is the next epoch (0, 1, 2, ...); ``set_epoch(k)`` or ``epoch=k`` makes the next
    pass epoch k, so a training run resumed at epoch k sees the same batches as one that was
    never interrupted. With ``seed=None`` a seed is drawn once (see the ``seed`` attribute).
    For a validation set scored on identical noise each time, call ``set_epoch(0)`` before
    each pass.

    Parameters
    ----------
    X : numpy.ndarray, shape (N, 28, 28) or (N, 28, 28, 1)
        Images, float in [0, 1] (or uint8 0..255).
    batch_size : int
    shuffle : bool
    seed : int, optional
    **options
        ``buffer_size=10_000``, ``prefetch=1`` (0: no thread), ``epoch=0``,
        ``alpha_cumprod=None``, ``T=None``, ``scale=True`` (False for latents),
        ``labels=None`` (class labels for a conditional model), ``label_dropout=0.1``,
        ``target="noise"`` ("hybrid" for :class:`~tinyddpm.losses.HybridLoss`) (see
        :func:`prepare_batch`), passed to :class:`BatchDataset`.

    Returns
    -------
    BatchDataset
        Re-iterable; ``len()`` is the number of batches, ceil(N / batch_size).
    """
    return BatchDataset(X, batch_size, shuffle, seed, **options)
