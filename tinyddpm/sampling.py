"""The reverse process: every sampler, over one loop.

A trained model predicts the noise eps_theta(x_t, t) in x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t)
eps. From that one prediction, each sampler takes a step from a time step t to an earlier s:

* ``ddpm``           the slide's loop, every step t = T-1 .. 1 (Ho et al., 2020)  -> ddpm_step
* ``ddpm-respaced``  the same update on a subsequence of steps, betas recomputed
                     (Nichol & Dhariwal, 2021, section 4)                        -> respaced_ddpm_step
* ``ddim``           deterministic (eta = 0) or stochastic (Song et al., 2021)   -> ddim_step
* ``dpm-solver-2``   second-order single-step ODE solver, noise prediction
                     (Lu et al., 2022a); ``dpm-solver-1`` is DDIM                -> dpm_solver_2_step
* ``dpm++2m``        second-order multistep ODE solver, data prediction
                     (Lu et al., 2022b, "DPM-Solver++", Algorithm 2)              -> dpmpp_2m_step
* ``euler``, ``heun``  Karras et al., 2022 (EDM), Algorithm 1 (deterministic; Euler without
                     its second-order correction),
                     on sigma_t = sqrt((1 - abar_t) / abar_t)                    -> euler_step, heun_step

and the time steps they visit come from a spacing (:func:`timesteps`). :func:`sample` runs any of
them; :func:`generate` (the slide's) and :func:`generate_ddim` are the two it started with.

The ODE view (Song et al., 2021b; Karras et al., 2022): with x~ = x_t / sqrt(abar_t) and
sigma_t = sqrt((1 - abar_t) / abar_t), the reverse process without noise is dx~/dsigma = eps(x, t).
A DDIM step is one Euler step of that ODE; DPM-Solver and Heun take higher-order steps, so they
need fewer model evaluations (NFE) for the same error.

Every sampler clips its estimate of x_0, x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), to
[-1, 1] (``clip``) and recomputes eps from it: at t = T, where abar_T ~ 1.5e-10, the estimate
divides by 1.2e-5, and without the clip one step of error ruins a sample.
"""
from __future__ import annotations

import math
import numbers
import os

import numpy as np

__all__ = ["SAMPLERS", "SPACINGS", "DEFAULT_SAMPLER", "DEFAULT_STEPS", "sample", "timesteps", "generate", "generate_ddim",
           "ddpm_step", "respaced_ddpm_step", "ddim_timesteps", "ddim_step", "dpm_solver_2_step",
           "dpmpp_2m_step", "euler_step", "heun_step"]

# ------------------------------------------------------------------------- arguments and model


def _whole_number(name, value, low=None, high=None):
    """``value`` as an int, when it is a whole number in [low, high] (not a float, not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a whole number, got {type(value).__name__} {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = (f"in {low}..{high}" if low is not None and high is not None else
                  f">= {low}" if low is not None else f"<= {high}")
        raise ValueError(f"{name} must be {bounds}, got {value}")
    return int(value)


def _finite(name, value, low=None):
    """``value`` as a float, when it is a finite real number >= low."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a finite number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return float(value)


MAX_IMAGES = 1_000_000
"""The most images one call generates (about 3 GB of pixels); more: call again."""


def _check_model(model):
    """A model to sample: a tinyddpm model, or any callable mapping {'X_noisy', 'time'} to the
    predicted noise (not a class, a builder, or a file name)."""
    if isinstance(model, str):
        how = (f"tinyddpm.export.OnnxModel({model!r})" if model.endswith(".onnx") else
               f"td.load_pretrained({model!r}) for a file"
               if model.endswith(".npz") or os.sep in model else
               f"td.load_pretrained(kind={model!r})" if model in ("book", "conditional", "latent")
               else "td.load_pretrained()")
        raise TypeError(f"model: got the string {model!r}; load a model first, e.g. {how}")
    if isinstance(model, type) or (callable(model) and getattr(model, "__name__", "")
                                   .startswith(("build_", "load_"))):
        raise TypeError(f"model: got {getattr(model, '__name__', model)}, which makes a model; "
                        "call it first (e.g. td.load_pretrained(), td.build_diffusion_model())")
    if not callable(model):
        raise TypeError("model must be a tinyddpm model, or a callable that maps {'X_noisy': "
                        "x_t, 'time': t} to the predicted noise, got "
                        f"{type(model).__name__}")


def _as_model(model):
    """A torch twin of a tinyddpm model (from ``tinyddpm.export.to_torch``: it carries
    ``tinyddpm_header``; or its DistributedDataParallel wrapper) as
    :class:`tinyddpm.export.TorchModel`, so the samplers call it with tensors, in inference
    mode, with the schedule its header records; anything else as it is."""
    if hasattr(model, "tinyddpm_header") or hasattr(getattr(model, "module", None),
                                                    "tinyddpm_header"):
        from .export import TorchModel

        return TorchModel(model)
    return model


def _labels(model, label, batch_size):
    """``label`` (None, one class for all, or (batch_size,) classes; a class by number or by
    name, "sneaker") as an int64 array or None."""
    if label is None:
        return None
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        raise ValueError("label: this model is not class-conditional, so it cannot generate a "
                         "requested class (use td.load_pretrained(kind='conditional'), or train "
                         "one with `python -m tinyddpm train --conditional`)")
    from .data import class_index

    values = np.asarray(label, dtype=object)
    if values.ndim > 1 or (values.ndim == 1 and len(values) != batch_size):
        raise ValueError(f"label must be one class or {batch_size} classes (one per image), got "
                         f"shape {values.shape}")
    try:
        numbers_ = [class_index(v) if isinstance(v, str) else _whole_number("label", v)
                    for v in values.ravel()]
    except (TypeError, ValueError) as e:
        raise ValueError(f"label: {e}") from None
    label = np.broadcast_to(np.array(numbers_, np.int64).reshape(values.shape), (batch_size,))
    if label.min() < 0 or label.max() >= num_classes:
        raise ValueError(f"label: classes must lie in 0..{num_classes - 1}, got "
                         f"{label.min()}..{label.max()}")
    return np.array(label)


MODEL_BATCH = 256  # images per model call; a larger batch goes in slices (same images, to float32
#                   rounding: the products sum in another order)


def _predict_noise(model, X, t, label=None, guidance=1.0, with_v=False):
    """eps_theta(x_t, t) for a whole batch at one time step t, in inference mode.

    A class-conditional model (``num_classes`` set) mixes its conditional and unconditional
    predictions -- classifier-free guidance (Ho & Salimans, 2022):

        eps = eps(x_t, t) + w (eps(x_t, t, class) - eps(x_t, t))

    w = 0: unconditional (also what ``label=None`` gives); w = 1: plain conditional; w > 1:
    pushed further towards the class. Both predictions come from one call on a doubled batch.
    Any callable that maps ``{"X_noisy": X, "time": t}`` to the noise works as a model.

    A model that learns its variances (``model.learns_sigma``; its output has eps and v) gives
    eps here, and ``(eps, v)`` with ``with_v=True``.
    """
    from .nn import Module
    from .tensor import Tensor, no_grad

    learned = bool(getattr(model, "learns_sigma", False))
    if with_v and not learned:
        raise ValueError("this model does not learn its variances (build_improved_model("
                         "learn_sigma=True) does)")
    variances = []

    def call(inputs):  # always in inference mode, whatever mode the model was left in
        with no_grad():
            out = model(inputs, training=False) if isinstance(model, Module) else model(inputs)
        return out.data if isinstance(out, Tensor) else out

    def run(inputs):
        n = len(inputs["X_noisy"])
        if n <= MODEL_BATCH:
            out = call(inputs)
        else:  # in slices: the activations of 100,000 images at once would not fit in memory
            parts = [call({k: v[i:i + MODEL_BATCH] for k, v in inputs.items()})
                     for i in range(0, n, MODEL_BATCH)]
            same = all(isinstance(o, np.ndarray) and o.shape[1:] == parts[0].shape[1:]
                       for o in parts)
            out = np.concatenate(parts) if same else parts[0]  # (the check below names it)
        channels = inputs["X_noisy"].shape[-1]
        if learned and isinstance(out, np.ndarray) and out.shape[-1] == 2 * channels:
            out, v = out[..., :channels], out[..., channels:]
            variances.append(v)
        if not isinstance(out, np.ndarray) or out.shape != inputs["X_noisy"].shape or \
                out.dtype.kind != "f":
            raise TypeError(f"model: called on {{'X_noisy': {inputs['X_noisy'].shape}, 'time': "
                            f"...}} it returned {type(out).__name__} "
                            f"{getattr(out, 'shape', '')}, not the predicted noise (a float "
                            "array of X_noisy's shape)")
        return out

    n = len(X)
    time = np.full(n, t, dtype=np.int64)
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        eps = run({"X_noisy": X, "time": time})
        return (eps, variances[0]) if with_v else eps
    null = np.full(n, num_classes, dtype=np.int64)
    if label is None or guidance == 0:
        return run({"X_noisy": X, "time": time, "label": null})
    if guidance == 1:
        return run({"X_noisy": X, "time": time, "label": label})
    both = run({"X_noisy": np.concatenate([X, X]), "time": np.concatenate([time, time]),
                "label": np.concatenate([label, null])})
    cond, uncond = both[:n], both[n:]
    return uncond + guidance * (cond - uncond)


def _sample_shape(model, batch_size):
    """The shape the model denoises: (N, 28, 28, 1) images, or e.g. (N, 7, 7, 4) latents."""
    return (batch_size, *getattr(model, "image_shape", (28, 28, 1)))


def _finish(model, X):
    """The last x_0 as images in [0, 1]: rescaled pixels, or decoded latents for a model with a
    ``decode_samples`` method (:class:`tinyddpm.latent.LatentDiffusion`)."""
    if hasattr(model, "decode_samples"):
        return model.decode_samples(X)
    return np.clip((X + 1) / 2, 0, 1).astype(np.float32)


# ------------------------------------------------------------------------------ time steps

SPACINGS = ("leading", "trailing", "linspace", "karras")
KARRAS_SIGMA_MAX = 80.0  # Karras et al.'s sigma_max (their Table 1), below sigma_T ~ 8e4 here


def timesteps(T, steps, spacing="trailing", alpha_cumprod=None, rho=7.0):
    """The ``steps`` time steps a few-step sampler visits, from the noisiest down: a decreasing
    int64 array in 1..T. (After the last, the sampler goes to t = 0, the clean image.)

    The spacings, in the words of Lin et al., "Common Diffusion Noise Schedules and Sample Steps
    are Flawed" (WACV 2024, Table 2), here with steps numbered 1..T:

    * ``leading``:  t = 1 + floor(k T / steps), k = 0..steps-1 -- DDIM's and Stable Diffusion's
      first choice. It never starts at T: with 10 steps the first is t = 3601, where abar =
      0.024 and part of the image is "given"; with one step, t = 1.
    * ``trailing``: t = round(T - k T / steps), k = 0..steps-1 -- starts at T, ends at T / steps.
    * ``linspace``: t = round(linspace(T, 1, steps)) -- both ends (one step: t = T).
    * ``karras``:   sigma_k = (sigma_max^(1/rho) + k/(steps-1) (sigma_min^(1/rho) -
      sigma_max^(1/rho)))^rho (Karras et al. 2022, eq. 5, rho = 7), sigma_t = sqrt((1 - abar_t)
      / abar_t), sigma_min = sigma_1, sigma_max = min(sigma_T, 80) (theirs: sigma_T is 8e4
      here, and second-order steps from there are unstable), each sigma_k taken to the time step
      of the nearest log sigma; needs ``alpha_cumprod``. Steps that round to the same t are
      merged (fewer model calls).

    Raises
    ------
    ValueError
        ``steps`` outside 1..T, or an unknown ``spacing``.
    """
    T = _whole_number("T", T, 1)
    steps = _whole_number("steps", steps, 1, T)
    if spacing == "leading":
        ts = 1 + np.floor(np.arange(steps) * (T / steps))
    elif spacing == "trailing":
        ts = np.round(T - np.arange(steps) * (T / steps))
    elif spacing == "linspace":
        ts = np.round(np.linspace(T, 1, steps))
    elif spacing == "karras":
        if alpha_cumprod is None:
            raise ValueError("the karras spacing needs the schedule's alpha_cumprod")
        abar = np.asarray(alpha_cumprod, np.float64)
        log_sigma = 0.5 * (np.log1p(-abar[1:]) - np.log(abar[1:]))  # t = 1..T, increasing
        lo = np.exp(log_sigma[0] / rho)
        hi = np.exp(min(log_sigma[-1], math.log(KARRAS_SIGMA_MAX)) / rho)
        ramp = np.linspace(0, 1, steps) if steps > 1 else np.zeros(1)
        wanted = rho * np.log(hi + ramp * (lo - hi))
        ts = 1 + np.abs(log_sigma[None, :] - wanted[:, None]).argmin(axis=1)
        ts = np.array(sorted(set(ts.tolist()), reverse=True))
    else:
        raise ValueError(f"spacing must be one of {', '.join(SPACINGS)}, got {spacing!r}")
    ts = ts.astype(np.int64)[::-1] if spacing == "leading" else ts.astype(np.int64)
    return ts


def ddim_timesteps(T_, steps):
    """The ``leading`` spacing in increasing order: t_k = 1 + k T / steps, k = 0..steps-1 (the
    first DDIM of this package; it never visits t = T). See :func:`timesteps`."""
    return timesteps(T_, steps, "leading")[::-1]


# ----------------------------------------------------------------------- the samplers' steps

class Process:
    """The schedule's quantities at integer time steps t = 0..T, in float64:
    alpha(t) = sqrt(abar_t), sigma(t) = sqrt(1 - abar_t), lam(t) = log(alpha / sigma) (the
    log signal-to-noise ratio of DPM-Solver, + infinity at t = 0), karras_sigma(t) =
    sigma / alpha. ``x0(x, t, eps)`` and ``eps(x, t, x0)`` convert between the two predictions.
    """

    def __init__(self, alpha_cumprod):
        self.abar = np.asarray(alpha_cumprod, np.float64)
        sigmas = np.sqrt((1 - self.abar[1:]) / self.abar[1:])
        #: the time step nearest sigma = 80 (Karras et al.'s sigma_max, where the karras spacing
        #: starts); the second-order samplers take first-order steps from beyond it
        self.t_sigma_max = 1 + int(np.abs(np.log(sigmas) - math.log(KARRAS_SIGMA_MAX)).argmin())

    def alpha(self, t):
        return math.sqrt(self.abar[t])

    def sigma(self, t):
        return math.sqrt(1 - self.abar[t])

    def lam(self, t):
        return math.inf if t == 0 else math.log(self.alpha(t) / self.sigma(t))

    def karras_sigma(self, t):
        return self.sigma(t) / self.alpha(t)

    def x0(self, x, t, eps):
        return (x - self.sigma(t) * eps) / self.alpha(t)

    def eps(self, x, t, x0):
        return (x - self.alpha(t) * x0) / self.sigma(t)


def ddpm_step(X, eps, t, alpha, alpha_cumprod, beta, z):
    """One reverse step of the slides (Ho et al., 2020, Algorithm 2):

        x_{t-1} = 1 / sqrt(alpha_t) * (x_t - beta_t / sqrt(1 - abar_t) * eps_theta(x_t, t))
                  + sqrt(beta_t) * z,        z ~ N(0, I)  (z = 0 at the last step)
    """
    return (1 / alpha[t] ** 0.5 * (X - beta[t] / (1 - alpha_cumprod[t]) ** 0.5 * eps)
            + (1 - alpha[t]) ** 0.5 * z).astype(np.float32)


def respaced_betas(abar_t, abar_s):
    """The jump from t to an earlier s on a subsequence of time steps as one step of its own
    (Nichol & Dhariwal, 2021, section 4): beta'_t = 1 - abar_t / abar_s and its posterior
    variance beta~'_t = (1 - abar_s) / (1 - abar_t) beta'_t. Returns (beta', beta~')."""
    beta = 1 - abar_t / abar_s
    return beta, (1 - abar_s) / (1 - abar_t) * beta


def respaced_ddpm_step(X, x0, abar_t, abar_s, z, variance="beta"):
    """One ancestral step from t to an earlier s on a subsequence of time steps (Nichol &
    Dhariwal, 2021, section 4): the slide's step with the betas of the subsequence,

        beta'_t = 1 - abar_t / abar_s,    alpha'_t = 1 - beta'_t,

    written with the (clipped) x_0 estimate as the mean of the posterior q(x_s | x_t, x_0)
    (Ho et al. 2020, eq. 7), and the slide's variance sigma^2 = beta'_t (``variance="beta"``)
    or the posterior's, beta~'_t = (1 - abar_s) / (1 - abar_t) beta'_t (``"beta_tilde"``; Ho
    et al. 2020, section 3.2):

        x_s = sqrt(abar_s) beta'_t / (1 - abar_t) x0 + sqrt(alpha'_t) (1 - abar_s) / (1 - abar_t)
              x_t + sigma z            (z = 0 at the last step, s = 0)
    """
    beta, beta_tilde = respaced_betas(abar_t, abar_s)
    mean = (abar_s ** 0.5 * beta / (1 - abar_t) * x0
            + (1 - beta) ** 0.5 * (1 - abar_s) / (1 - abar_t) * X)
    if z is None:
        return mean.astype(np.float32)
    sigma2 = beta if variance == "beta" else beta_tilde
    return (mean + sigma2 ** 0.5 * z).astype(np.float32)


def learned_variance_step(X, x0, v, abar_t, abar_s, z):
    """One ancestral step from t to an earlier s with the model's learned variance (Nichol &
    Dhariwal, 2021, section 4 and eq. 15): the mean of :func:`respaced_ddpm_step` (the posterior
    mean on the subsequence's betas), and the variance interpolated, per pixel, between the
    subsequence's beta'_t and its posterior variance beta~'_t by the model's output v:

        beta'_t = 1 - abar_t / abar_s,    beta~'_t = (1 - abar_s) / (1 - abar_t) beta'_t
        Sigma = exp(v' log beta'_t + (1 - v') log beta~'_t),    v' = (v + 1) / 2
        x_s = mean + sqrt(Sigma) z            (z = None at the last step, s = 0: x_s = mean)
    """
    mean = respaced_ddpm_step(X, x0, abar_t, abar_s, None)
    if z is None:
        return mean
    beta, beta_tilde = respaced_betas(abar_t, abar_s)
    from .likelihood import learned_log_variance

    log_var = learned_log_variance(v, math.log(beta), math.log(beta_tilde))
    return (mean + np.exp(0.5 * log_var) * z).astype(np.float32)


def ddim_step(X, eps, abar_t, abar_prev, eta=0.0, clip=True, z=None):
    """One DDIM step (Song et al., 2021) from t to an earlier t':

        x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)         (clipped to [-1, 1], and
        eps = (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t)          eps recomputed from it)
        sigma = eta sqrt((1 - abar_t') / (1 - abar_t)) sqrt(1 - abar_t / abar_t')
        x_t' = sqrt(abar_t') x0_hat + sqrt(1 - abar_t' - sigma^2) eps + sigma z

    ``clip``: True clips x0_hat to [-1, 1] (pixels); a number b clips it to [-b, b] (latents);
    False does not clip. With eta = 0 this is an Euler step of the probability-flow ODE in
    x / sqrt(abar) and sigma = sqrt((1 - abar) / abar), and DPM-Solver-1.
    """
    x0 = (X - (1 - abar_t) ** 0.5 * eps) / abar_t ** 0.5
    if clip is not False and clip is not None:
        bound = 1.0 if clip is True else float(clip)
        x0 = np.clip(x0, -bound, bound)
        eps = (X - abar_t ** 0.5 * x0) / (1 - abar_t) ** 0.5
    sigma = eta * ((1 - abar_prev) / (1 - abar_t)) ** 0.5 * (1 - abar_t / abar_prev) ** 0.5
    X = abar_prev ** 0.5 * x0 + max(1 - abar_prev - sigma ** 2, 0.0) ** 0.5 * eps
    if sigma > 0 and z is not None:
        X = X + sigma * z
    return X.astype(np.float32)


def dpm_solver_2_step(X, t, s, predict, process):
    """DPM-Solver-2 (Lu et al., 2022a, Algorithm 4 with r = 1/2), noise prediction, from t to s:
    with lambda = log(alpha / sigma) and h = lambda_s - lambda_t, an intermediate step u at the
    time step whose lambda is nearest lambda_t + h / 2 (exact r = (lambda_u - lambda_t) / h):

        x_u = alpha_u / alpha_t x_t - sigma_u (e^(r h) - 1) eps(x_t, t)
        x_s = alpha_s / alpha_t x_t - sigma_s (e^h - 1) eps(x_t, t)
              - sigma_s / (2 r) (e^h - 1) (eps(x_u, u) - eps(x_t, t))

    Two model calls a step. The step to s = 0 (lambda = infinity) is the first-order one,
    x_0 = the x_0 estimate (as DDIM's), and so is a step from beyond sigma_t = sqrt((1 -
    abar_t) / abar_t) = 80 (where the trailing and linspace spacings start): e^h there is in
    the thousands and the correction amplifies the prediction's error.
    """
    eps_t, x0_t = predict(X, t)
    if s == 0:
        return x0_t
    p = process
    h = p.lam(s) - p.lam(t)
    u = _nearest_lambda(p, p.lam(t) + h / 2, s, t)
    if u is None or t > p.t_sigma_max:  # t and s adjacent, or a step from
        # beyond sigma = 80, where e^h multiplies the prediction error by thousands: first order
        return (p.alpha(s) / p.alpha(t) * X - p.sigma(s) * math.expm1(h) * eps_t)
    r = (p.lam(u) - p.lam(t)) / h
    x_u = p.alpha(u) / p.alpha(t) * X - p.sigma(u) * math.expm1(r * h) * eps_t
    eps_u, _ = predict(x_u.astype(np.float32), u)
    return (p.alpha(s) / p.alpha(t) * X - p.sigma(s) * math.expm1(h) * eps_t
            - p.sigma(s) / (2 * r) * math.expm1(h) * (eps_u - eps_t))


def _nearest_lambda(process, lam, low, high):
    """The time step strictly between ``low`` and ``high`` whose lambda is nearest ``lam``, or
    None when there is none."""
    if high - low < 2:
        return None
    ts = np.arange(low + 1, high)
    abar = process.abar[ts]
    lams = 0.5 * (np.log(abar) - np.log1p(-abar))
    return int(ts[np.abs(lams - lam).argmin()])


def dpmpp_2m_step(X, t, s, predict, process, memory):
    """DPM-Solver++(2M) (Lu et al., 2022b, Algorithm 2), data prediction, multistep, from t to s:
    with lambda = log(alpha / sigma), h = lambda_s - lambda_t and D_t the (clipped) x_0 estimate,

        first step:  x_s = sigma_s / sigma_t x_t - alpha_s (e^(-h) - 1) D_t
        then:        r = h_prev / h,   D = (1 + 1 / (2 r)) D_t - 1 / (2 r) D_prev,
                     x_s = sigma_s / sigma_t x_t - alpha_s (e^(-h) - 1) D

    One model call a step (D_prev is remembered from the step before). The step to s = 0 gives
    x_0 = D_t (first order at the end, as the paper's "lower order final").
    """
    _, x0 = predict(X, t)
    p = process
    previous = memory.get("previous")
    memory["previous"] = (x0, p.lam(t), t)
    if s == 0:
        return x0
    h = p.lam(s) - p.lam(t)
    D = x0
    if previous is not None:
        x0_prev, lam_prev, _ = previous
        r = (p.lam(t) - lam_prev) / h
        D = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * x0_prev
    return p.sigma(s) / p.sigma(t) * X - p.alpha(s) * math.expm1(-h) * D


def euler_step(X, t, s, predict, process):
    """Euler (Karras et al., 2022, Algorithm 1 without its second-order correction) on the
    probability-flow ODE dx~/dsigma = eps, x~ = x_t / sqrt(abar_t), sigma = sqrt((1 - abar) /
    abar), from t to s:

        x~_s = x~_t + (sigma_s - sigma_t) eps(x_t, t),   then x_s = sqrt(abar_s) x~_s

    (the same update as DDIM with eta = 0: with the same time steps the two give the same
    images, which the benchmark confirms). To s = 0: x_0 = the x_0 estimate.
    """
    eps, x0 = predict(X, t)
    if s == 0:
        return x0
    p = process
    x_tilde = X / p.alpha(t) + (p.karras_sigma(s) - p.karras_sigma(t)) * eps
    return p.alpha(s) * x_tilde


def heun_step(X, t, s, predict, process):
    """Heun (Karras et al., 2022, Algorithm 1, deterministic), from t to s: an Euler step to s,
    then the average of the slopes at both ends,

        x~'  = x~_t + (sigma_s - sigma_t) eps(x_t, t)
        x~_s = x~_t + (sigma_s - sigma_t) (eps(x_t, t) + eps(x'_s, s)) / 2

    Two model calls a step, except the last (to s = 0), which is Euler's: x_0 = the x_0
    estimate, and a step that starts above sigma = 80 (Karras et al.'s sigma_max; the trailing
    and linspace spacings start at sigma_T ~ 8e4), which is Euler's too: measured on the shipped
    model, the second-order correction over that span overshot to noise (FID ~100).
    """
    eps_t, x0 = predict(X, t)
    if s == 0:
        return x0
    p = process
    d_sigma = p.karras_sigma(s) - p.karras_sigma(t)
    x_tilde = X / p.alpha(t)
    euler = p.alpha(s) * (x_tilde + d_sigma * eps_t)
    if t > p.t_sigma_max:  # beyond EDM's range (sigma = 80) the slopes at both ends of
        return euler                          # the step disagree wildly: one Euler step there
    eps_s, _ = predict(euler.astype(np.float32), s)
    return p.alpha(s) * (x_tilde + d_sigma * (eps_t + eps_s) / 2)


# ------------------------------------------------------------------------------- the loop

class _Run:
    """What a sampler's step may use besides x, t and s: ``predict(x, t)`` -> (eps, x0) (the
    model, with guidance and clipping), the schedule (``process``; ``alpha``, ``abar``, ``beta``
    arrays), the random numbers (``noise()``), ``eta``, ``clip`` and ``memory`` (multistep)."""

    def __init__(self, **fields):
        self.__dict__.update(fields)
        self.memory = {}


def _ddpm(X, t, s, run):
    z = run.noise(X) if t > 1 else np.zeros_like(X)
    return ddpm_step(X, run.eps_only(X, t), t, run.alpha, run.abar, run.beta, z)


def _ddpm_respaced(X, t, s, run):
    _, x0 = run.predict(X, t)
    return respaced_ddpm_step(X, x0, float(run.abar[t]), float(run.abar[s]),
                              run.noise(X) if s > 0 else None, run.variance)


def _iddpm(X, t, s, run):
    _, x0, v = run.predict_v(X, t)
    return learned_variance_step(X, x0, v, float(run.abar[t]), float(run.abar[s]),
                                 run.noise(X) if s > 0 else None)


def _ddim(X, t, s, run):
    z = run.noise(X) if run.eta > 0 else None
    return ddim_step(X, run.eps_only(X, t), float(run.abar[t]), float(run.abar[s]), run.eta,
                     run.clip, z)


class Sampler:
    """A sampler: its name, its step ``step(x, t, s, run)``, its default spacing, and its model
    calls per step."""

    def __init__(self, name, step, spacing, calls_per_step=1):
        self.name, self.step, self.spacing, self.calls_per_step = name, step, spacing, \
            calls_per_step


SAMPLERS = {s.name: s for s in [
    Sampler("ddpm", _ddpm, None),
    Sampler("ddpm-respaced", _ddpm_respaced, "trailing"),
    Sampler("iddpm", _iddpm, "linspace"),   # ends at t = 1, as the paper's respacing
    Sampler("ddim", _ddim, "trailing"),
    Sampler("dpm-solver-2", lambda X, t, s, run: dpm_solver_2_step(X, t, s, run.predict,
                                                                    run.process), "karras", 2),
    Sampler("dpm++2m", lambda X, t, s, run: dpmpp_2m_step(X, t, s, run.predict, run.process,
                                                           run.memory), "karras"),
    Sampler("euler", lambda X, t, s, run: euler_step(X, t, s, run.predict, run.process),
            "trailing"),
    Sampler("heun", lambda X, t, s, run: heun_step(X, t, s, run.predict, run.process),
            "karras", 2),
]}
"""The samplers :func:`sample` knows, by name. ``spacing``: the default, by measurement
(``benchmarks/bench_samplers.py``)."""


DEFAULT_SAMPLER, DEFAULT_STEPS = "dpm++2m", 10
"""What :func:`sample` and ``python -m tinyddpm sample`` use unless told (by measurement:
``benchmarks/bench_samplers.py``)."""


def sample(model, n=64, sampler=DEFAULT_SAMPLER, steps=None, spacing=None, eta=0.0, clip=True,
           seed=None, label=None, guidance=None, progress=False, callback=None, T=None,
           schedule=None, variance=None):
    """Generate ``n`` images (float32 (n, 28, 28, 1) in [0, 1]; a latent model's decoded) with
    any sampler of :data:`SAMPLERS`, from pure noise x_T ~ N(0, I):

        for each (t, s) in the sampler's time steps, from the noisiest, then to s = 0:
            x = step(x, t, s)

    ``sampler``: "ddpm" (the slide's loop: all T - 1 steps, so no ``steps`` or ``spacing``),
    "ddpm-respaced", "iddpm" (ancestral with the model's learned variance: a model built with
    ``learn_sigma=True``), "ddim" (with ``eta``), "dpm-solver-2", "dpm++2m", "euler" or "heun".
    ``steps``: time steps visited (default :data:`DEFAULT_STEPS`); the model is called once a
    step (twice for "dpm-solver-2" and "heun", except at the last step). ``spacing``: see
    :func:`timesteps`; None takes the sampler's default. ``clip``: clip the x_0 estimate to
    [-1, 1] (a number b: [-b, b]; a latent model's own bound by default) and recompute the noise
    from it. ``variance``: with "ddpm-respaced", the step's fixed variance, "beta" (the
    default, the slide's) or "beta_tilde" (the posterior's; see :func:`respaced_ddpm_step`). ``label``/``guidance``: a class for a class-conditional model, and the
    classifier-free guidance weight (default 3).

    Reproducible for a ``seed``: the starting noise is drawn for the whole batch, so the same
    seed with another ``n`` gives other images; the deterministic samplers (ddim with eta = 0,
    dpm-solver-2, dpm++2m, euler, heun) then give each starting noise the same image whatever
    the batch, while ddpm, ddpm-respaced and ddim with eta > 0 draw each step's noise for the
    whole batch too. ``callback(t, x)`` is called after each step with the new x (at the
    model's scale, before clipping to [0, 1]).

    ``model``: a tinyddpm model, or any callable that maps ``{"X_noisy": x_t (n, 28, 28, 1)
    float32, "time": (n,) int64}`` to the predicted noise (a float array of x_t's shape), such
    as :class:`tinyddpm.export.OnnxModel` or a wrapped onnxruntime session, or the torch twin of
    a diffusion U-Net (``tinyddpm.export.to_torch(model)``, run through
    :class:`tinyddpm.export.TorchModel`: torch computes, with the schedule of its config; a
    latent model's twin is refused, sample ``from_torch(net)``). A model carries its
    schedule (``model.config``); a bare callable has none, so give ``T`` and ``schedule``
    ("cosine", the default, or "linear"; see :func:`~tinyddpm.schedule.schedule_spec`) as it
    was trained (default: T = 4000, cosine). Given for a model with a config, they must be its
    own.

    Raises
    ------
    ValueError, TypeError
        A bad argument, named, before any work (see also :func:`tinyddpm.model_schedule` for
        the schedule, which is the model's own).
    """
    from .diffusion import model_schedule

    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    chosen = SAMPLERS[sampler]
    _check_model(model)
    model = _as_model(model)
    _whole_number("n", n, 1, MAX_IMAGES)
    if seed is not None and not isinstance(seed, np.random.Generator):
        _whole_number("seed", seed, 0)
    if guidance is not None:
        if abs(_finite("guidance", guidance)) > 100:
            raise ValueError(f"guidance must lie in [-100, 100] (usual values: 0 to 10), got "
                             f"{guidance}")
        if label is None:
            raise ValueError("guidance applies to a class-conditional model with a label (the "
                             "class to draw): give label=..., or drop guidance")
    guidance = 3.0 if guidance is None else float(guidance)
    eta = _finite("eta", eta, low=0)
    if eta > 1:
        raise ValueError(f"eta must lie in [0, 1] (0: deterministic DDIM, 1: as much noise as "
                         f"DDPM), got {eta}")
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False, got {progress!r}")
    if eta and sampler != "ddim":
        raise ValueError(f"eta applies to the ddim sampler, not to {sampler!r}")
    if variance is not None and sampler != "ddpm-respaced":
        raise ValueError(f"variance applies to the ddpm-respaced sampler, not to {sampler!r} "
                         "(iddpm uses the model's learned variance)")
    if variance not in (None, "beta", "beta_tilde"):
        raise ValueError(f"variance must be 'beta' or 'beta_tilde', got {variance!r}")
    if not (isinstance(clip, bool) or clip is None) and not _finite("clip", clip, low=0) > 0:
        raise ValueError("clip must be a bound > 0 for the x_0 estimate, True ([-1, 1]) or "
                         "False (no clipping), got 0")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    if sampler == "iddpm" and not getattr(model, "learns_sigma", False):
        raise ValueError("the iddpm sampler uses the variance a model learned: build it with "
                         "build_improved_model(learn_sigma=True) (train it with HybridLoss); "
                         "for this model use ddpm-respaced")
    label = _labels(model, label, n)
    alpha, abar, beta = model_schedule(model, T, schedule)
    T = len(abar) - 1
    if sampler == "ddpm":
        if steps is not None or spacing is not None:
            raise ValueError("steps and spacing apply to the few-step samplers; ddpm takes "
                             "every step of the slide's loop: drop them")
        ts = np.arange(T - 1, 0, -1)
    else:
        steps = DEFAULT_STEPS if steps is None else steps
        if spacing is not None and spacing not in SPACINGS:
            raise ValueError(f"spacing must be one of {', '.join(SPACINGS)}, got {spacing!r}")
        ts = timesteps(T, steps, spacing or chosen.spacing, abar)
    if clip is True and hasattr(model, "x0_bound"):
        clip = model.x0_bound
    bound = None if clip is False or clip is None else (1.0 if clip is True else float(clip))
    process = Process(abar)

    def eps_only(X, t):
        return _predict_noise(model, X, t, label, guidance)

    def predict(X, t, eps=None):
        """(eps, x0) at t, the x_0 estimate clipped and eps recomputed from it."""
        eps = eps_only(X, t) if eps is None else eps
        x0 = process.x0(X, t, eps)
        if bound is not None:
            x0 = np.clip(x0, -bound, bound)
            eps = process.eps(X, t, x0)
        return eps, x0

    def predict_v(X, t):
        """(eps, x0, v) at t: predict's, and the learned variance's v."""
        eps, v = _predict_noise(model, X, t, label, guidance, with_v=True)
        return (*predict(X, t, eps), v)

    rng = np.random.default_rng(seed)
    X = rng.standard_normal(_sample_shape(model, n), dtype=np.float32)
    run = _Run(predict=predict, predict_v=predict_v, eps_only=eps_only, process=process, alpha=alpha, abar=abar,
               beta=beta, eta=eta, clip=clip, variance=variance or "beta",
               noise=lambda X: rng.standard_normal(X.shape, dtype=np.float32))
    pairs = list(zip(ts, [*ts[1:], 0]))
    if progress:
        from tqdm.auto import tqdm
        what = "the slide's loop" if sampler == "ddpm" else f"{len(ts)} steps"
        pairs = tqdm(pairs, desc=f"{sampler} sampling ({what})", unit="step")
    for t, s in pairs:
        t, s = int(t), int(s)
        X = chosen.step(X, t, s, run).astype(np.float32, copy=False)
        if not np.isfinite(X.sum()) and not np.isfinite(X).all():
            raise FloatingPointError(f"sampling produced NaN or infinite values at t = {t}: the "
                                     "model's predictions are not finite (damaged weights, or a "
                                     "run that diverged)")
        if callback is not None:
            callback(t, X)
    return _finish(model, X)


def generate(model, batch_size=32, seed=None, T=None, progress=True, callback=None, label=None,
             guidance=None):
    """The slide's ``generate``: start from pure noise and apply every reverse step.

        X = N(0, I);  for t = T-1 .. 1:  X = ddpm_step(X, model(X, t), t, z)

    exactly as on the slide (the loop starts at t = T - 1, and z = 0 when t = 1). ``callback(t,
    X)`` is called after each step (e.g. to record frames). Returns images in [0, 1],
    (batch_size, 28, 28, 1) float32. Deterministic for a given ``seed``. A latent model
    (:mod:`tinyddpm.latent`) runs the same loop on its latents, then decodes them. For a
    class-conditional model, ``label`` (a class, or one per image) and ``guidance`` (w) steer
    the noise prediction (see :func:`_predict_noise`). ``T``, if given, must be the model's
    (a callable without a config: the T it was trained with; see :func:`sample`).
    Same as ``sample(model, batch_size, sampler="ddpm", ...)``.
    """
    _whole_number("batch_size", batch_size, 1, MAX_IMAGES)  # (sample() calls it n)
    return sample(model, batch_size, "ddpm", seed=seed, progress=progress, callback=callback,
                  label=label, guidance=guidance, T=T)


def generate_ddim(model, batch_size=32, steps=50, eta=0.0, clip=True, seed=None, T=None,
                  progress=False, callback=None, label=None, guidance=None, spacing="leading"):
    """Fast sampling with DDIM over ``steps`` time steps (see :func:`ddim_step`).

    ``eta=0`` is deterministic given the starting noise; ``eta=1`` is DDPM-like. ``clip`` keeps
    the predicted x_0 in [-1, 1] and recomputes the noise from it: essential where a step starts
    at t = T (``spacing="trailing"``), whose estimate divides by sqrt(abar_T) ~ 1.2e-5; with the
    default "leading" spacing at 100 steps it changes the images little (lesson 6 measures it).
    A latent model clips to its own bound (``model.x0_bound``). ``spacing``: "leading" (this
    function's first behaviour, kept so its figures stay reproducible) or another of
    :func:`timesteps`; ``sample(model, n, "ddim")`` takes the measured best.
    Returns images in [0, 1], (batch_size, 28, 28, 1) float32; deterministic for a ``seed``.
    ``label`` and ``guidance``: as in :func:`generate`, for a class-conditional model.
    """
    _whole_number("batch_size", batch_size, 1, MAX_IMAGES)
    return sample(model, batch_size, "ddim", steps=steps, spacing=spacing, eta=eta, clip=clip,
                  seed=seed, label=label, guidance=guidance, progress=progress,
                  callback=callback, T=T)
