"""Variance schedules: how much noise the forward process adds at each time step.

Both functions return the triple the slides use, each a float32 array indexed by t = 0..T:

    alpha[t]          alpha_t     = 1 - beta_t                  (alpha_0 = 1, beta_0 = 0)
    alpha_cumprod[t]  alpha_bar_t = alpha_1 * alpha_2 * ... * alpha_t   (alpha_bar_0 = 1)
    beta[t]           beta_t, the variance of the noise added at step t

so that ``alpha, alpha_cumprod, beta = variance_schedule(T)`` reads as on the slide.
"""
import numbers

import numpy as np

__all__ = ["variance_schedule", "linear_schedule", "schedule_spec"]


def _check_T(T):
    if isinstance(T, bool) or not isinstance(T, numbers.Integral):
        raise TypeError(f"T must be a positive int, got {type(T).__name__} {T!r}")
    if T < 1:
        raise ValueError(f"T must be a positive int (the number of diffusion steps), got {T}")
    return int(T)


def _check_real(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise TypeError(f"{name} must be a finite real number, got {value!r}")
    return float(value)


def _from_alpha(alpha):
    """(alpha, alpha_cumprod, beta) for t = 0..T from alpha_1..alpha_T, as float32."""
    alpha = np.append(1, alpha).astype(np.float32)  # add alpha_0 = 1
    beta = 1 - alpha
    alpha_cumprod = np.cumprod(alpha)
    return alpha, alpha_cumprod, beta


def variance_schedule(T, s=0.008, max_beta=0.999):
    r"""The cosine variance schedule (Nichol & Dhariwal, 2021), as on the slide.

    The "cat signal" factor :math:`\bar\alpha_t` shrinks from 1 to 0 along a squared cosine:

    .. math::

        f(t) = \cos\left(\frac{t/T + s}{1 + s} \cdot \frac{\pi}{2}\right)^2, \qquad
        \bar\alpha_t = \frac{f(t)}{f(0)}, \qquad
        \beta_t = 1 - \frac{\bar\alpha_t}{\bar\alpha_{t-1}}, \qquad
        \alpha_t = 1 - \beta_t = \frac{f(t)}{f(t-1)}

    with :math:`\beta_t` clipped to at most ``max_beta`` (so :math:`\alpha_t \ge 1 - \text{max\_beta}`;
    without the clip :math:`\beta_T = 1` since :math:`f(T) = 0`), and
    :math:`\bar\alpha_t = \prod_{i=1}^{t} \alpha_i` recomputed from the clipped values.
    The small offset ``s`` keeps :math:`\beta_t` from being too small near t = 0.

    The slide's code, which this follows line by line::

        t = np.arange(T + 1)
        f = np.cos((t / T + s) / (1 + s) * np.pi / 2) ** 2
        alpha = np.clip(f[1:] / f[:-1], 1 - max_beta, 1)
        alpha = np.append(1, alpha).astype(np.float32)  # add alpha_0 = 1
        beta = 1 - alpha
        alpha_cumprod = np.cumprod(alpha)
        return alpha, alpha_cumprod, beta

    Parameters
    ----------
    T : int
        Number of diffusion steps (the book uses 4000), T >= 1.
    s : float
        Offset, s >= 0.
    max_beta : float
        Upper clip of :math:`\beta_t`, 0 < max_beta < 1.

    Returns
    -------
    alpha, alpha_cumprod, beta : numpy.ndarray
        float32 arrays of shape (T + 1,) for t = 0..T, with alpha[0] = alpha_cumprod[0] = 1
        and beta[0] = 0. alpha_cumprod is computed in float32, as on the slide.
    """
    T = _check_T(T)
    s = _check_real("s", s)
    max_beta = _check_real("max_beta", max_beta)
    if s < 0:
        raise ValueError(f"s must be >= 0, got {s}")
    if not 0 < max_beta < 1:
        raise ValueError(f"max_beta must be strictly between 0 and 1, got {max_beta}")
    t = np.arange(T + 1)
    f = np.cos((t / T + s) / (1 + s) * np.pi / 2) ** 2
    return _from_alpha(np.clip(f[1:] / f[:-1], 1 - max_beta, 1))


def linear_schedule(T, beta_start=1e-4, beta_end=0.02):
    r"""The linear variance schedule of Ho et al. (2020), for comparison with the cosine one.

    .. math::

        \beta_t = \beta_\text{start}' + \frac{t - 1}{T - 1}
                  \left(\beta_\text{end}' - \beta_\text{start}'\right), \quad t = 1..T,
        \qquad \beta_\text{start}' = \frac{1000}{T}\beta_\text{start}, \quad
        \beta_\text{end}' = \frac{1000}{T}\beta_\text{end}

    and :math:`\alpha_t = 1 - \beta_t`, :math:`\bar\alpha_t = \prod_{i=1}^t \alpha_i`.
    With T = 1000 this is exactly Ho et al.'s 1e-4 .. 0.02. For other T the endpoints are
    scaled by 1000/T, as in improved DDPM (Nichol & Dhariwal, 2021, ``get_named_beta_schedule``),
    so that the total amount of noise, and :math:`\bar\alpha_T`, stays about the same: with
    T = 4000 the betas run from 2.5e-5 to 5e-3.

    As in :func:`variance_schedule`, alpha is rounded to float32 first and beta = 1 - alpha,
    so alpha + beta = 1 holds in float32 (beta carries a relative rounding error ~1e-3 at
    its smallest values).

    Parameters
    ----------
    T : int
        Number of diffusion steps; the scaled beta_end must stay below 1 (T > 1000 * beta_end).
    beta_start, beta_end : float
        The endpoints for T = 1000, 0 < beta_start <= beta_end.

    Returns
    -------
    alpha, alpha_cumprod, beta : numpy.ndarray
        float32 arrays of shape (T + 1,) for t = 0..T, with alpha[0] = 1 and beta[0] = 0.
    """
    T = _check_T(T)
    beta_start = _check_real("beta_start", beta_start)
    beta_end = _check_real("beta_end", beta_end)
    if not 0 < beta_start <= beta_end:
        raise ValueError(f"need 0 < beta_start <= beta_end, got {beta_start} and {beta_end}")
    scale = 1000 / T
    if scale * beta_end >= 1:
        raise ValueError(f"T={T} is too small for the linear schedule: the scaled beta_end "
                         f"1000/T * {beta_end} = {scale * beta_end:g} must be below 1; "
                         f"use T > {1000 * beta_end:g} or a smaller beta_end")
    beta = np.linspace(scale * beta_start, scale * beta_end, T, dtype=np.float64)
    return _from_alpha(1 - beta)


_DEFAULTS = {"cosine": {"s": 0.008, "max_beta": 0.999},
             "linear": {"beta_start": 1e-4, "beta_end": 0.02}}
SCHEDULES = {"cosine": variance_schedule, "linear": linear_schedule}


def schedule_spec(spec=None):
    """A schedule's full description, as a model's config and checkpoint record it:
    ``{"kind": "cosine", "s": 0.008, "max_beta": 0.999}`` (the default, the slides') or
    ``{"kind": "linear", "beta_start": 1e-4, "beta_end": 0.02}``. ``spec`` may be None (the
    default), a kind's name, or a dict with some of the fields (the others take their defaults).
    The number of steps T is the model's own ``config["T"]``.

    Raises
    ------
    ValueError
        An unknown kind or field, or a value the schedule function refuses.
    """
    if spec is None:
        spec = {"kind": "cosine"}
    elif isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, dict):
        raise TypeError(f"schedule must be None, 'cosine', 'linear' or a dict, got {spec!r}")
    kind = spec.get("kind", "cosine")
    if kind not in _DEFAULTS:
        raise ValueError(f"schedule kind must be one of {sorted(_DEFAULTS)}, got {kind!r}")
    unknown = sorted(set(spec) - {"kind"} - set(_DEFAULTS[kind]))
    if unknown:
        raise ValueError(f"the {kind} schedule takes {sorted(_DEFAULTS[kind])}, got {unknown}")
    full = {"kind": kind, **{k: _check_real(k, spec.get(k, v)) for k, v in
                             _DEFAULTS[kind].items()}}
    SCHEDULES[kind](10_000, **{k: v for k, v in full.items() if k != "kind"})  # checks values
    return full
