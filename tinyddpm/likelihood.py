r"""Likelihood: the posterior q(x_{t-1} | x_t, x_0), the variational bound's terms, bits per dim.

A DDPM is a latent-variable model, so it has a variational bound on the negative log-likelihood
of the data (Ho et al., 2020, eq. 5; Nichol & Dhariwal, 2021, eq. 4-7):

.. math::

    -\log p_\theta(x_0) \le L_\text{vlb} = L_T + \sum_{t=2}^{T} L_{t-1} + L_0

    L_T     = KL(q(x_T | x_0)  ||  N(0, I))                            -> prior_bpd
    L_{t-1} = KL(q(x_{t-1} | x_t, x_0)  ||  p_theta(x_{t-1} | x_t))    -> vlb_terms (t > 1)
    L_0     = -log p_theta(x_0 | x_1), a discretised Gaussian decoder  -> vlb_terms (t = 1)

Both sides of every KL are Gaussians: q(x_{t-1} | x_t, x_0) is :func:`q_posterior` (Bayes' rule on
the forward process), p_theta(x_{t-1} | x_t) is :func:`p_mean_variance` (the model's mean from its
noise prediction, and a variance: fixed to beta_t or beta_tilde_t here; a learned one can be
passed in as ``log_variance``). :func:`bits_per_dim` adds every term, t = T .. 1, over a set of
images: the number the papers report, in bits per dimension (nats / ln 2, averaged over pixels).

Time steps are numbered as in the rest of tinyddpm: t = 1..T, schedule arrays indexed by t = 0..T
(:func:`tinyddpm.schedule.variance_schedule`). The papers' code numbers them 0..T-1: its t = 0
(the decoder term) is t = 1 here. Everything is computed in float64 from the model's float32
schedule, in NumPy (evaluation needs no gradients). For training with L_vlb in the loss, the
last section has the KL and the decoder's log-likelihood on Tensors (:func:`normal_kl_tensor`,
:class:`DiscretizedGaussianLogLikelihood`), gradient-checked in tests/test_likelihood.py.
"""
from __future__ import annotations

import math

import numpy as np

from .tensor import Function

__all__ = ["posterior_mean_coefficients", "posterior_variance", "q_posterior", "normal_kl",
           "discretized_gaussian_log_likelihood", "p_mean_variance", "vlb_terms", "prior_bpd",
           "bits_per_dim", "respaced_schedule", "format_bpd", "VARIANCES", "learned_log_variance", "normal_kl_tensor",
           "DiscretizedGaussianLogLikelihood", "discretized_gaussian_log_likelihood_tensor"]

VARIANCES = ("beta", "beta_tilde")
"""The fixed reverse-process variances: "beta" (sigma_t^2 = beta_t) and "beta_tilde" (the
posterior's variance), Ho et al., 2020, section 3.2."""

LN2 = math.log(2.0)


# ------------------------------------------------------------------------- the schedule

def _schedule(alpha, alpha_cumprod, beta):
    """The triple as float64 arrays of one shape (T + 1,), T >= 1, checked."""
    arrays = [np.asarray(a, dtype=np.float64) for a in (alpha, alpha_cumprod, beta)]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or arrays[0].ndim != 1 or len(arrays[0]) < 2:
        raise ValueError("alpha, alpha_cumprod and beta must be 1-d arrays of one length T + 1 "
                         "(t = 0..T, T >= 1), as variance_schedule returns, got shapes "
                         f"{[a.shape for a in arrays]}")
    alpha, abar, beta = arrays
    if not all(np.isfinite(a).all() for a in arrays) or abar[0] != 1 or \
            np.any(abar[1:] <= 0) or np.any(abar[1:] >= 1) or np.any(beta[1:] <= 0):
        raise ValueError("not a variance schedule: need alpha_cumprod[0] = 1, 0 < alpha_cumprod"
                         "[t] < 1 and beta[t] > 0 for t = 1..T, all finite")
    return alpha, abar, beta


def _schedule_for(model, schedule):
    """The schedule given, or the model's own (a callable's); a bare noise array needs one."""
    if schedule is None and callable(model):
        from .diffusion import model_schedule

        schedule = model_schedule(model)
    if schedule is None or len(schedule) != 3:
        raise TypeError("schedule must be the (alpha, alpha_cumprod, beta) triple of the model "
                        "(tinyddpm.model_schedule(model)); it is needed when the noise "
                        "prediction is given instead of a model")
    return _schedule(*schedule)


def posterior_mean_coefficients(alpha, alpha_cumprod, beta):
    r"""The two coefficients of the posterior mean (Ho et al., 2020, eq. 7):

    .. math::

        \tilde\mu_t(x_t, x_0) = \underbrace{\frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}
        {1 - \bar\alpha_t}}_{\text{coef1}} x_0 + \underbrace{\frac{\sqrt{\alpha_t}\,
        (1 - \bar\alpha_{t-1})}{1 - \bar\alpha_t}}_{\text{coef2}} x_t

    Parameters
    ----------
    alpha, alpha_cumprod, beta : array_like, shape (T + 1,)
        The schedule, indexed by t = 0..T (:func:`tinyddpm.schedule.variance_schedule`).

    Returns
    -------
    coef1, coef2 : numpy.ndarray, float64, shape (T + 1,)
        Entry t for t = 1..T; entry 0 is NaN (there is no x_{-1}). At t = 1, coef1 = 1 and
        coef2 = 0: the posterior of x_0 given x_0 is x_0 itself.

    Raises
    ------
    ValueError
        Arrays that are not one schedule (shapes, alpha_cumprod[0] != 1, values outside (0, 1)).
    """
    alpha, abar, beta = _schedule(alpha, alpha_cumprod, beta)
    abar_prev = np.append(np.nan, abar[:-1])
    coef1 = np.sqrt(abar_prev) * beta / (1 - abar)
    coef2 = np.sqrt(alpha) * (1 - abar_prev) / (1 - abar)
    coef1[0] = coef2[0] = np.nan
    return coef1, coef2


def posterior_variance(alpha, alpha_cumprod, beta):
    r"""The posterior's variance and its clipped log (Ho et al., 2020, eq. 7):

    .. math::

        \tilde\beta_t = \frac{1 - \bar\alpha_{t-1}}{1 - \bar\alpha_t}\,\beta_t

    :math:`\tilde\beta_1 = 0` (x_0 is known given x_0), so its log is "clipped" as in the papers'
    code (``posterior_log_variance_clipped``): log_variance[1] = log(beta_tilde_2) (with T = 1,
    where there is no beta_tilde_2: log(beta_1)).

    Parameters
    ----------
    alpha, alpha_cumprod, beta : array_like, shape (T + 1,)
        The schedule, indexed by t = 0..T (alpha is not used; it is taken so that
        ``posterior_variance(*schedule)`` reads like its neighbours).

    Returns
    -------
    variance, log_variance : numpy.ndarray, float64, shape (T + 1,)
        Entry t for t = 1..T (variance[1] = 0, log_variance[1] clipped as above); entry 0 NaN.
    """
    _, abar, beta = _schedule(alpha, alpha_cumprod, beta)
    abar_prev = np.append(np.nan, abar[:-1])
    variance = (1 - abar_prev) / (1 - abar) * beta
    variance[0] = np.nan
    with np.errstate(divide="ignore"):
        log_variance = np.log(variance)
    log_variance[1] = log_variance[2] if len(abar) > 2 else np.log(beta[1])
    return variance, log_variance


def _at(coef, t, x):
    """coef[t] shaped to broadcast against x (N, ...): t an int or an int array (N,) in 1..T."""
    from .diffusion import _per_sample

    return _per_sample(coef, t, x, low=1)


def _x(x, name):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 1:
        raise ValueError(f"{name} must be an array (N, ...), got a scalar")
    return x


def q_posterior(x0, x_t, t, alpha, alpha_cumprod, beta):
    r"""The forward process's posterior (Ho et al., 2020, eq. 6-7):

    .. math::

        q(x_{t-1} \mid x_t, x_0) = \mathcal N\left(x_{t-1};\ \tilde\mu_t(x_t, x_0),\
        \tilde\beta_t I\right)

    with :math:`\tilde\mu_t` from :func:`posterior_mean_coefficients` and
    :math:`\tilde\beta_t` from :func:`posterior_variance` (clipped log at t = 1).

    Parameters
    ----------
    x0, x_t : array_like, shape (N, ...)
        Clean images and their noisy version at step t (e.g. NHWC in [-1, 1]).
    t : int or int array of shape (N,)
        Time step(s), 1..T.
    alpha, alpha_cumprod, beta : array_like, shape (T + 1,)
        The schedule.

    Returns
    -------
    mean : numpy.ndarray, float64, shape (N, ...)
    variance, log_variance : numpy.ndarray, float64, shape (N, 1, ...) (or () for an int t)
        Broadcastable against ``mean``.

    Raises
    ------
    ValueError, TypeError
        Shapes that differ, t outside 1..T or not an int, a bad schedule.
    """
    x0, x_t = _x(x0, "x0"), _x(x_t, "x_t")
    if x0.shape != x_t.shape:
        raise ValueError(f"x0 has shape {x0.shape}, x_t has shape {x_t.shape}")
    coef1, coef2 = posterior_mean_coefficients(alpha, alpha_cumprod, beta)
    variance, log_variance = posterior_variance(alpha, alpha_cumprod, beta)
    mean = _at(coef1, t, x0) * x0 + _at(coef2, t, x0) * x_t
    return mean, _at(variance, t, x0), _at(log_variance, t, x0)


# ------------------------------------------------------------------------- Gaussians

def normal_kl(mean1, logvar1, mean2, logvar2):
    r"""KL divergence between two diagonal Gaussians, elementwise, in nats:

    .. math::

        KL(\mathcal N(\mu_1, \sigma_1^2) \,\|\, \mathcal N(\mu_2, \sigma_2^2)) =
        \frac12\left(\log\frac{\sigma_2^2}{\sigma_1^2} + \frac{\sigma_1^2 + (\mu_1 - \mu_2)^2}
        {\sigma_2^2} - 1\right)

    (the ``normal_kl`` of Ho et al.'s and Nichol & Dhariwal's code; the KL terms of their
    eq. 5 and Nichol & Dhariwal eq. 6). Variances enter as logs, so that tiny ones keep their
    precision.

    Parameters
    ----------
    mean1, logvar1, mean2, logvar2 : array_like
        Means and log-variances; any shapes that broadcast together.

    Returns
    -------
    numpy.ndarray, float64
        The broadcast shape; >= 0, 0 where the two are the same Gaussian.
    """
    mean1, logvar1, mean2, logvar2 = (np.asarray(a, dtype=np.float64)
                                      for a in (mean1, logvar1, mean2, logvar2))
    return 0.5 * (-1.0 + logvar2 - logvar1 + np.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * np.exp(-logvar2))


_erfc = np.frompyfunc(math.erfc, 1, 1)
_SERIES_FROM = 25.0  # erfc(25) ~ 1e-273: beyond it, the asymptotic series (math.erfc underflows)


def _log_upper_tail(y):
    """log Q(y) = log P(Z > y) for Z ~ N(0, 1), elementwise, y may be +-inf: from math.erfc
    (double precision) for y / sqrt(2) < 25, and beyond from the asymptotic series
    erfc(z) = e^(-z^2) / (z sqrt(pi)) (1 - 1/(2 z^2) + 3/(4 z^4) - 15/(8 z^6) + 105/(16 z^8)
    - ...), whose first term left out is below 3e-13 there, in logs (no underflow)."""
    y = np.asarray(y, dtype=np.float64)
    z = np.abs(y) / math.sqrt(2)
    near = np.minimum(z, _SERIES_FROM)
    far = np.maximum(z, _SERIES_FROM)
    w = 1 / (2 * far * far)
    with np.errstate(divide="ignore", invalid="ignore"):
        series = (-far * far - np.log(far * math.sqrt(math.pi))
                  + np.log1p(w * (-1 + w * (3 + w * (-15 + w * 105)))))
        log_erfc = np.where(z < _SERIES_FROM, np.log(np.asarray(_erfc(near), np.float64)), series)
        log_tail_abs = np.where(np.isinf(z), -np.inf, math.log(0.5) + log_erfc)  # log Q(|y|)
        return np.where(y >= 0, log_tail_abs, np.log1p(-np.exp(log_tail_abs)))


def _log_prob_between(a, b):
    """log P(a < Z < b) for Z ~ N(0, 1), a < b elementwise (a may be -inf, b +inf), computed
    from the tail on the side away from 0, so that neither end's probability cancels."""
    a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        def tails(lo, hi):  # log(Q(lo) - Q(hi)) for 0 <= lo < hi
            log_lo, log_hi = _log_upper_tail(lo), _log_upper_tail(hi)
            return log_lo + np.log1p(-np.exp(log_hi - log_lo))
        right = tails(np.maximum(a, 0), np.maximum(b, 0))           # a >= 0: both above 0
        left = tails(np.maximum(-b, 0), np.maximum(-a, 0))          # b <= 0: both below 0
        across = np.log1p(-np.exp(_log_upper_tail(-a)) - np.exp(_log_upper_tail(b)))
    return np.where(a >= 0, right, np.where(b <= 0, left, across))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    r"""The log-probability of 8-bit pixel values under a Gaussian, discretised to 256 bins
    (Ho et al., 2020, section 3.3, eq. 13): with pixel values x in {-1, -1 + 2/255, ..., 1},

    .. math::

        p(x \mid \mu, \sigma) = \int_{\delta_-(x)}^{\delta_+(x)} \mathcal N(y; \mu, \sigma^2)\,dy,
        \qquad
        \delta_+(x) = \begin{cases} +\infty & x = 1 \\ x + \frac{1}{255} & x < 1\end{cases},
        \quad
        \delta_-(x) = \begin{cases} -\infty & x = -1 \\ x - \frac{1}{255} & x > -1\end{cases}

    so the 256 probabilities of a pixel sum to 1 (the edge bins take the tails, as in the
    papers' code). The papers' code approximates the normal CDF with a tanh formula and clamps
    each probability at 1e-12; here each bin's probability is computed from the tail away from
    0, in logs, from ``math.erfc`` (and its asymptotic series far out), so no clamp is needed:
    the value is the log-probability of the bin to about double precision, also far in a tail.

    Parameters
    ----------
    x : array_like
        Pixel values in [-1, 1] on the 256-level grid (2 k / 255 - 1); values within 0.001 of
        -1 or 1 count as the edge bins.
    means, log_scales : array_like
        The Gaussian's mean and log standard deviation (log sigma, not log sigma^2); shapes
        that broadcast with x.

    Returns
    -------
    numpy.ndarray, float64
        log p(x), nats, elementwise (<= 0).

    Raises
    ------
    ValueError
        x outside [-1, 1] or not finite.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size and (not np.isfinite(x).all() or x.min() < -1.001 or x.max() > 1.001):
        raise ValueError("x must hold pixel values in [-1, 1] (2 * uint8 / 255 - 1), got values "
                         f"in [{np.nanmin(x):g}, {np.nanmax(x):g}]")
    centered = x - np.asarray(means, dtype=np.float64)
    inv_std = np.exp(-np.asarray(log_scales, dtype=np.float64))
    upper = np.where(x > 0.999, np.inf, inv_std * (centered + 1 / 255))
    lower = np.where(x < -0.999, -np.inf, inv_std * (centered - 1 / 255))
    return _log_prob_between(lower, upper)


# ------------------------------------------------------------------------- the model's side

def _predicted_eps(model, x_t, t, with_v=False):
    from .sampling import _predict_noise

    out = _predict_noise(model, x_t.astype(np.float32), t, with_v=with_v)
    eps, v = out if with_v else (out, None)
    eps = np.asarray(eps, dtype=np.float64)
    if not np.isfinite(eps).all() or (v is not None and not np.isfinite(v).all()):
        raise FloatingPointError(f"the model's noise prediction at t = {t} is not finite "
                                 "(damaged weights, or a run that diverged)")
    return (eps, np.asarray(v, dtype=np.float64)) if with_v else eps


def learned_log_variance(v, log_beta, log_beta_tilde):
    r"""The learned variance's log (Nichol & Dhariwal, 2021, eq. 15), per pixel:

    .. math::

        \log\Sigma_\theta = v' \log\beta_t + (1 - v') \log\tilde\beta_t, \qquad
        v' = (v + 1) / 2

    (the model's output v mapped from [-1, 1] to [0, 1], as in the paper's code). ``v``: an
    array or a Tensor (then differentiable); ``log_beta``, ``log_beta_tilde``: numbers or arrays
    that broadcast against it. Used by :func:`p_mean_variance`, the hybrid loss and the iddpm
    sampler."""
    frac = (v + 1.0) * 0.5
    return frac * log_beta + (1.0 - frac) * log_beta_tilde


def p_mean_variance(model, x_t, t, variance="beta", clip=True, schedule=None,
                    log_variance=None):
    r"""The reverse step p_theta(x_{t-1} | x_t) = N(mu_theta(x_t, t), Sigma) of a model that
    predicts the noise (Ho et al., 2020, eq. 11 and section 3.2):

    .. math::

        \hat x_0 = \frac{x_t - \sqrt{1 - \bar\alpha_t}\,\epsilon_\theta(x_t, t)}
        {\sqrt{\bar\alpha_t}}\ \ (\text{clipped to } [-1, 1]), \qquad
        \mu_\theta(x_t, t) = \tilde\mu_t(x_t, \hat x_0)

    (without the clip, :math:`\mu_\theta = \frac{1}{\sqrt{\alpha_t}}(x_t - \frac{\beta_t}
    {\sqrt{1 - \bar\alpha_t}}\epsilon_\theta)`, the slide's step). The variance is fixed, as in
    Nichol & Dhariwal's code: "beta": :math:`\sigma_t^2 = \beta_t` for t > 1 and
    :math:`\tilde\beta_2` at t = 1 (their ``FIXED_LARGE``: a decoder as wide as beta_1 would
    waste likelihood); "beta_tilde": :math:`\tilde\beta_t`, with the clipped log at t = 1
    (``FIXED_SMALL``). A learned variance (Nichol & Dhariwal, eq. 15) comes in as
    ``log_variance``, which then replaces the fixed one; a model that learns its variance
    (``model.learns_sigma``) gives it itself: exp(v' log beta_t + (1 - v') log beta~_t),
    v' = (v + 1) / 2, and ``variance`` is then not used.

    Parameters
    ----------
    model : callable or array_like
        A tinyddpm diffusion model (or any callable mapping ``{"X_noisy", "time"}`` to the
        predicted noise), or the predicted noise itself, an array of x_t's shape.
    x_t : array_like, shape (N, ...)
        Noisy images at step t.
    t : int or int array (N,)
        Time step(s), 1..T.
    variance : "beta" or "beta_tilde"
    clip : bool
        Clip the x_0 estimate to [-1, 1] (as the papers' evaluation does, ``clip_denoised``).
    schedule : (alpha, alpha_cumprod, beta), optional
        Default: the model's own (:func:`tinyddpm.model_schedule`); needed when ``model`` is
        the noise itself.
    log_variance : array_like, optional
        log Sigma, broadcastable to x_t (a learned variance); overrides ``variance``.

    Returns
    -------
    dict
        ``"mean"`` (N, ...), ``"variance"`` and ``"log_variance"`` (broadcastable), ``"x0"``
        (the x_0 estimate) and ``"eps"`` (the noise prediction), float64 arrays.
    """
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {', '.join(VARIANCES)}, got {variance!r}")
    x_t = _x(x_t, "x_t")
    alpha, abar, beta = _schedule_for(model, schedule)
    learned = None
    if callable(model):
        _at(abar, t, x_t)  # checks t before the model runs
        if getattr(model, "learns_sigma", False) and log_variance is None:
            eps, learned = _predicted_eps(model, x_t, t, with_v=True)
        else:
            eps = _predicted_eps(model, x_t, t)
    else:
        eps = _x(model, "eps")
    if eps.shape != x_t.shape:
        raise ValueError(f"the noise prediction has shape {eps.shape}, x_t has shape "
                         f"{x_t.shape}")
    a = _at(abar, t, x_t)
    x0 = (x_t - np.sqrt(1 - a) * eps) / np.sqrt(a)
    if clip:
        x0 = np.clip(x0, -1, 1)
    mean, _, post_log_var = q_posterior(x0, x_t, t, alpha, abar, beta)
    if learned is not None:  # Nichol & Dhariwal, eq. 15, v' = (v + 1) / 2 as in their code
        log_var = learned_log_variance(learned, np.log(_at(beta, t, x_t)), post_log_var)
    elif log_variance is not None:
        log_var = np.asarray(log_variance, dtype=np.float64)
    elif variance == "beta_tilde":
        log_var = post_log_var
    else:
        fixed = beta.copy()
        fixed[1] = posterior_variance(alpha, abar, beta)[0][2] if len(beta) > 2 else beta[1]
        log_var = np.log(_at(fixed, t, x_t))
    return {"mean": mean, "variance": np.exp(log_var), "log_variance": log_var, "x0": x0,
            "eps": eps}


def _mean_flat(x):
    """The mean over every axis but the first: per image, per dimension."""
    return x.reshape(len(x), -1).mean(axis=1)


def vlb_terms(model, x0, x_t, t, variance="beta", clip=True, schedule=None, log_variance=None):
    r"""One time step's term of the variational bound, per image, in nats per dimension
    (Nichol & Dhariwal, 2021, eq. 5-6; their ``_vb_terms_bpd``, there in bits):

    .. math::

        L_{t-1} = D_{KL}\left(q(x_{t-1} \mid x_t, x_0) \,\|\, p_\theta(x_{t-1} \mid x_t)\right)
        \quad (t > 1), \qquad
        L_0 = -\log p_\theta(x_0 \mid x_1) \quad (t = 1)

    the KL from :func:`q_posterior` and :func:`p_mean_variance` (:func:`normal_kl`), the decoder
    term from :func:`discretized_gaussian_log_likelihood` with the model's mean and standard
    deviation at t = 1. Divide by ln 2 for bits.

    Parameters
    ----------
    model : callable or array_like
        The model, or its noise prediction at (x_t, t) (see :func:`p_mean_variance`).
    x0 : array_like, shape (N, ...)
        The clean images, pixel values on the 256-level grid of [-1, 1].
    x_t : array_like, shape (N, ...)
        x0 noised to step t (:func:`tinyddpm.q_sample`).
    t : int or int array (N,)
        1..T; t = 1 gives the decoder term.
    variance, clip, schedule, log_variance
        As in :func:`p_mean_variance`.

    Returns
    -------
    numpy.ndarray, float64, shape (N,)
        Nats per dimension, each image's mean over its pixels.
    """
    x0, x_t = _x(x0, "x0"), _x(x_t, "x_t")
    if x0.shape != x_t.shape:
        raise ValueError(f"x0 has shape {x0.shape}, x_t has shape {x_t.shape}")
    schedule = _schedule_for(model, schedule)
    p = p_mean_variance(model, x_t, t, variance, clip, schedule, log_variance)
    q_mean, _, q_log_var = q_posterior(x0, x_t, t, *schedule)
    kl = _mean_flat(np.broadcast_to(normal_kl(q_mean, q_log_var, p["mean"], p["log_variance"]),
                                    x0.shape))
    first = np.broadcast_to(np.asarray(t) == 1, kl.shape)
    if not first.any():
        return kl
    decoder = -_mean_flat(np.broadcast_to(discretized_gaussian_log_likelihood(
        x0, p["mean"], 0.5 * p["log_variance"]), x0.shape))
    return np.where(first, decoder, kl)


def prior_bpd(x0, alpha_cumprod):
    r"""The prior term L_T in bits per dimension, per image (Nichol & Dhariwal's
    ``_prior_bpd``):

    .. math::

        L_T = D_{KL}\left(q(x_T \mid x_0) \,\|\, \mathcal N(0, I)\right), \qquad
        q(x_T \mid x_0) = \mathcal N(\sqrt{\bar\alpha_T} x_0, (1 - \bar\alpha_T) I)

    It has no parameters to learn; the cosine schedule makes it ~1e-10 (abar_T ~ 1.5e-10).

    Parameters
    ----------
    x0 : array_like, shape (N, ...)
        Clean images in [-1, 1].
    alpha_cumprod : array_like, shape (T + 1,)

    Returns
    -------
    numpy.ndarray, float64, shape (N,)
    """
    x0 = _x(x0, "x0")
    abar_T = float(np.asarray(alpha_cumprod, np.float64)[-1])
    if not 0 < abar_T < 1:
        raise ValueError(f"alpha_cumprod[T] must lie in (0, 1), got {abar_T}")
    kl = normal_kl(math.sqrt(abar_T) * x0, math.log1p(-abar_T), 0.0, 0.0)
    return _mean_flat(kl) / LN2


# ------------------------------------------------------------------------- the whole bound

def _pixels(X, image_shape):
    """X (N, H, W) or (N, H, W, C), uint8 or floats in [0, 1] that are 8-bit values, as
    float64 in [-1, 1] on the 256-level grid."""
    from .diffusion import _images_nhwc01

    if isinstance(X, np.ndarray) and X.ndim in (3, 4) and len(X) == 0:
        raise ValueError("X holds no images")
    x = _images_nhwc01(X).astype(np.float64)
    if x.shape[1:] != tuple(image_shape):
        raise ValueError(f"X has images of shape {x.shape[1:]}, the model denoises "
                         f"{tuple(image_shape)}")
    levels = x * 255
    if np.abs(levels - np.round(levels)).max() > 1e-3:
        raise ValueError("X must hold 8-bit images (uint8, or floats k / 255): the decoder's "
                         "likelihood is over the 256 pixel values")
    return np.round(levels) / 127.5 - 1


def respaced_schedule(alpha_cumprod, times):
    r"""The schedule of the chain that visits only ``times`` (Nichol & Dhariwal, 2021,
    section 4): for increasing time steps :math:`S_1 < \dots < S_K`,

    .. math::

        \bar\alpha'_i = \bar\alpha_{S_i}, \qquad
        \beta'_i = 1 - \frac{\bar\alpha_{S_i}}{\bar\alpha_{S_{i-1}}}
        \ (\bar\alpha_{S_0} = 1), \qquad \alpha'_i = 1 - \beta'_i

    a K-step diffusion process of its own, with the same marginals q(x_{S_i} | x_0) at the steps
    it keeps. ``alpha_cumprod``: (T + 1,), t = 0..T; ``times``: increasing ints in 1..T.
    Returns (alpha', alpha_cumprod', beta'), float64 arrays of shape (K + 1,), index 0 for t = 0.
    Raises ValueError for times that are not increasing or not in 1..T.
    """
    abar = np.asarray(alpha_cumprod, dtype=np.float64)
    times = np.asarray(times)
    if times.ndim != 1 or not len(times) or times.dtype.kind not in "iu" or \
            times.min() < 1 or times.max() > len(abar) - 1 or np.any(np.diff(times) <= 0):
        raise ValueError(f"times must be increasing whole numbers in 1..{len(abar) - 1}")
    from .sampling import respaced_betas  # the samplers' jump from S_(i-1) to S_i

    abar_s = np.concatenate([[1.0], abar[times]])
    beta_s = np.concatenate([[0.0], respaced_betas(abar_s[1:], abar_s[:-1])[0]])
    return 1 - beta_s, abar_s, beta_s


class _OnTimes:
    """A model seen through a subsequence of its time steps: called at index i = 1..K, it runs
    at time step ``times[i - 1]`` (what :func:`bits_per_dim` with ``steps`` needs)."""

    def __init__(self, model, times):
        self.model, self.times = model, np.concatenate([[0], times])
        self.learns_sigma = getattr(model, "learns_sigma", False)
        self.num_classes = getattr(model, "num_classes", None)
        self.image_shape = getattr(model, "image_shape", (28, 28, 1))

    def __call__(self, inputs):
        from .nn import Module

        inputs = {**inputs, "time": self.times[np.asarray(inputs["time"])]}
        if isinstance(self.model, Module):
            return self.model(inputs, training=False)
        return self.model(inputs)


def bits_per_dim(model, X, variance=None, clip=True, batch_size=100, seed=0, progress=True,
                 steps=None):
    r"""The variational bound on -log2 p(x) per pixel, averaged over images (Ho et al., 2020,
    eq. 5; Nichol & Dhariwal, 2021, section 2.1 and their ``calc_bpd_loop``):

    .. math::

        \text{bits/dim} = \frac{1}{D \ln 2}\left(L_T + \sum_{t=2}^{T} L_{t-1} + L_0\right)

    every term at every t = T .. 1 (T model calls per batch of images), each with one draw of
    x_t ~ q(x_t | x_0) (:func:`tinyddpm.q_sample`): an unbiased estimate of the bound, whose
    spread over images is the ``"std"`` returned. The data are 8-bit images; the decoder makes
    the bound one on the discrete log-likelihood, so no dequantisation term enters.

    Parameters
    ----------
    model : tinyddpm diffusion model, or a callable mapping ``{"X_noisy", "time"}`` to the noise
        It carries its schedule (``model.config``); a class-conditional one is measured
        unconditionally ("no class"). A latent model has no pixel likelihood and is refused.
    X : numpy.ndarray, (N, H, W) or (N, H, W, C)
        Test images: uint8 0..255, or floats k / 255 in [0, 1]; (H, W, C) the model's image shape.
    variance : "beta" or "beta_tilde", optional
        The fixed reverse variance (see :func:`p_mean_variance`; default "beta"); a model that
        learns its variance (``model.learns_sigma``) uses its own, the report says "learned",
        and a variance given for it is refused.
    clip : bool
        Clip the x_0 estimate to [-1, 1].
    batch_size : int
        Images a model call (memory); results depend on it only through the noise drawn.
    steps : int, optional
        The bound of the model sampled in ``steps`` ancestral steps instead of T: the chain on
        the time steps ``timesteps(T, steps, "linspace")`` (T down to 1, as the iddpm sampler
        visits them) with its respaced betas (:func:`respaced_schedule`); a learned variance
        interpolates between the respaced beta' and beta~'. ``steps`` model calls a batch;
        ``steps=T`` (or None) is the full bound.
    seed : int
        Seed of the noise draws: the same seed and batch size give the same number.
    progress : bool
        A tqdm progress bar over all model calls.

    Returns
    -------
    dict
        ``"bpd"`` (the bound, bits/dim, mean over images), its parts ``"prior"`` (L_T), ``"kl"``
        (the sum of the KL terms t = 2..T) and ``"decoder"`` (L_0), all float bits/dim; ``"std"``
        (the standard deviation of the per-image bound) and ``"per_image"`` (N,); ``"terms"``
        (T,) the mean term at each t = 1..T in bits/dim; ``"n"``, ``"T"``, ``"variance"``,
        ``"clip"``, ``"seed"``, ``"batch_size"``, ``"steps"`` (the chain's steps, also in
        ``"T"``) and ``"model_T"`` (the model's T: the same for the full bound).

    Raises
    ------
    TypeError, ValueError
        A bad argument, named, before any model call. FloatingPointError: the model's
        predictions are not finite.
    """
    from .diffusion import model_schedule, q_sample
    from .sampling import _as_model, _check_model, _whole_number

    _check_model(model)
    model = _as_model(model)
    if hasattr(model, "decode_samples"):
        raise TypeError("bits_per_dim: a latent diffusion model denoises latents, not pixels; "
                        "its variational bound is not a likelihood of the images")
    if getattr(model, "learns_sigma", False) and variance is not None:
        raise ValueError(f"variance={variance!r}: this model learned its variance, which the "
                         "bound uses; drop variance")
    variance = "beta" if variance is None else variance
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {', '.join(VARIANCES)}, got {variance!r}")
    shown = "learned" if getattr(model, "learns_sigma", False) else variance
    for name, flag in (("clip", clip), ("progress", progress)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    batch_size = _whole_number("batch_size", batch_size, 1)
    seed = _whole_number("seed", seed, 0)
    x = _pixels(X, getattr(model, "image_shape", (28, 28, 1)))
    schedule = _schedule(*model_schedule(model))
    T = len(schedule[1]) - 1
    model_T = T
    if steps is not None and _whole_number("steps", steps, 1, T) < T:
        from .sampling import timesteps

        times = timesteps(T, steps, "linspace")[::-1]
        schedule = _schedule(*respaced_schedule(schedule[1], times))
        model, T = _OnTimes(model, times), len(times)
    rng = np.random.default_rng(seed)
    prior = prior_bpd(x, schedule[1])
    terms = np.zeros((T, len(x)))  # [t - 1, image], bits/dim
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=T * math.ceil(len(x) / batch_size), unit="step",
                   desc=f"bits/dim ({len(x)} images, "
                   + (f"{T} steps of T = {model_T}" if T != model_T else f"T = {T}")
                   + f", variance {shown})")
    try:
        for start in range(0, len(x), batch_size):
            x0 = x[start:start + batch_size]
            for t in range(T, 0, -1):
                noise = rng.standard_normal(x0.shape)
                x_t = q_sample(x0, t, schedule[1], noise=noise)
                terms[t - 1, start:start + len(x0)] = vlb_terms(
                    model, x0, x_t, t, variance, clip, schedule) / LN2
                if bar is not None:
                    bar.update()
    finally:
        if bar is not None:
            bar.close()
    per_image = prior + terms.sum(axis=0)
    return {"bpd": float(per_image.mean()), "prior": float(prior.mean()),
            "kl": float(terms[1:].sum(axis=0).mean()), "decoder": float(terms[0].mean()),
            "std": float(per_image.std()), "per_image": per_image, "terms": terms.mean(axis=1),
            "n": len(x), "T": T, "variance": shown, "clip": clip, "seed": seed,
            "batch_size": batch_size, "steps": T, "model_T": model_T}


def format_bpd(report, title=None):
    """A plain-text table of :func:`bits_per_dim`'s figures."""
    err = report["std"] / math.sqrt(report["n"])
    lines = [title] if title else []
    lines += [f"images                             {report['n']:>10,}",
              (f"time steps T                       {report['T']:>10,}"
               if report["model_T"] == report["T"] else
               f"chain's steps                      {report['T']:>10,}  (the model's T: "
               f"{report['model_T']:,})"),
              f"reverse variance                   {report['variance']:>10}",
              f"x_0 estimate clipped               {'yes' if report['clip'] else 'no':>10}",
              (f"bound, bits/dim                    {report['bpd']:>10.4f}  "
               f"(+- {err:.4f}, one standard error)"),
              f"  prior L_T                        {report['prior']:>10.4f}",
              f"  KL terms L_1 .. L_(T-1)          {report['kl']:>10.4f}",
              f"  decoder L_0                      {report['decoder']:>10.4f}"]
    return "\n".join(lines)


# ------------------------------------------------------------------------- for training
# The two terms of L_vlb as differentiable functions of Tensors, for the hybrid loss
# L_simple + lambda L_vlb (Nichol & Dhariwal, 2021, section 3.1): the KL is composed from the
# engine's ops; the decoder's log-likelihood is one op, forward and backward side by side.

def normal_kl_tensor(mean1, logvar1, mean2, logvar2):
    """:func:`normal_kl` on Tensors (composed from :mod:`tinyddpm.ops`, so differentiable in
    every argument): elementwise KL in nats. Arrays are constants."""
    from . import ops

    return 0.5 * (-1.0 + logvar2 - logvar1 + ops.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * ops.exp(-1.0 * logvar2))


def _log_normal_pdf(z):
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(np.isinf(z), -np.inf, -0.5 * z * z - 0.5 * math.log(2 * math.pi))


class DiscretizedGaussianLogLikelihood(Function):
    r""":func:`discretized_gaussian_log_likelihood` as an autograd op of ``means`` and
    ``log_scales`` (x, the data, is a constant). With sigma = e^{log_scale}, the bin's
    standardised edges a = (delta_- - mu) / sigma, b = (delta_+ - mu) / sigma and
    P = Phi(b) - Phi(a):

    .. math::

        \frac{\partial \log P}{\partial \mu} = \frac{\varphi(a) - \varphi(b)}{\sigma P},
        \qquad
        \frac{\partial \log P}{\partial \log\sigma} = \frac{a\,\varphi(a) - b\,\varphi(b)}{P}

    (phi(+-inf) = 0 at the edge bins), each ratio phi / P taken as exp(log phi - log P), so
    that a bin far in a tail keeps a finite, accurate gradient.
    """

    @staticmethod
    def forward(ctx, means, log_scales, x=None):
        log_p = discretized_gaussian_log_likelihood(x, means, log_scales)
        x = np.asarray(x, dtype=np.float64)
        inv_std = np.exp(-np.asarray(log_scales, dtype=np.float64))
        centered = x - means
        b = np.where(x > 0.999, np.inf, inv_std * (centered + 1 / 255))
        a = np.where(x < -0.999, -np.inf, inv_std * (centered - 1 / 255))
        ctx.save_for_backward(a, b, log_p, inv_std, np.shape(means), np.shape(log_scales))
        return log_p.astype(np.result_type(means, log_scales), copy=False)

    @staticmethod
    def backward(ctx, g):
        from .ops import unbroadcast

        a, b, log_p, inv_std, mean_shape, scale_shape = ctx.saved
        ratio_a = np.exp(_log_normal_pdf(a) - log_p)   # phi(a) / P
        ratio_b = np.exp(_log_normal_pdf(b) - log_p)   # phi(b) / P
        d_mean = (ratio_a - ratio_b) * inv_std
        with np.errstate(invalid="ignore"):  # inf * 0 at the edge bins, replaced by 0
            d_log_scale = np.where(np.isinf(a), 0, a * ratio_a) - np.where(np.isinf(b), 0,
                                                                               b * ratio_b)
        dtype = g.dtype
        return (unbroadcast(g * d_mean, mean_shape).astype(dtype, copy=False),
                unbroadcast(g * d_log_scale, scale_shape).astype(dtype, copy=False))



def discretized_gaussian_log_likelihood_tensor(x, means, log_scales):
    """:func:`discretized_gaussian_log_likelihood` on Tensors ``means`` and ``log_scales``
    (differentiable in both; ``x``, the pixels, a constant array): elementwise log p, nats."""
    return DiscretizedGaussianLogLikelihood.apply(means, log_scales, x=np.asarray(x))
