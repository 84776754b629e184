"""Scaled dot-product attention (ops.attention): against a plain loop, against PyTorch when it is
installed, its gradient against central differences (float64), and its stability."""
import math

import numpy as np
import pytest

from tinyddpm import ops
from tinyddpm.tensor import Tensor
from tinyddpm.testing import gradcheck

rng = np.random.default_rng(0)


def attention_loop(q, k, v):
    """Vaswani et al. 2017, eq. 1, one query row at a time with math.exp (independent of ops)."""
    out = np.zeros(q.shape[:-1] + (v.shape[-1],))
    for index in np.ndindex(q.shape[:-1]):
        lead, row = index[:-1], q[index]
        scores = [float(row @ k[lead + (j,)]) / math.sqrt(q.shape[-1]) for j in range(k.shape[-2])]
        top = max(scores)
        weights = [math.exp(s - top) for s in scores]
        total = sum(weights)
        out[index] = sum(w / total * v[lead + (j,)] for j, w in enumerate(weights))
    return out


def test_attention_matches_the_equation_written_as_a_loop():
    q, k, v = rng.standard_normal((2, 3, 5, 4)), rng.standard_normal((2, 3, 6, 4)), \
        rng.standard_normal((2, 3, 6, 2))
    np.testing.assert_allclose(ops.attention(Tensor(q), Tensor(k), Tensor(v)).data,
                               attention_loop(q, k, v), rtol=1e-12, atol=1e-12)


def test_attention_matches_torch():
    torch = pytest.importorskip("torch")
    q, k, v = (rng.standard_normal((2, 4, 7, 8)).astype(np.float32) for _ in range(3))
    expected = torch.nn.functional.scaled_dot_product_attention(
        *(torch.from_numpy(a) for a in (q, k, v))).numpy()
    np.testing.assert_allclose(ops.attention(Tensor(q), Tensor(k), Tensor(v)).data, expected,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shapes", [((5, 3), (4, 3), (4, 2)), ((2, 3, 5, 4), (2, 3, 6, 4),
                                                               (2, 3, 6, 3))])
def test_attention_gradient(shapes):
    inputs = [rng.standard_normal(s) for s in shapes]
    assert gradcheck(ops.attention, *inputs)


def test_attention_is_stable_for_large_scores_and_its_gradient_too():
    q = np.full((1, 2, 4), 1000.0)
    k = rng.standard_normal((1, 3, 4)) * 100
    v = rng.standard_normal((1, 3, 2))
    qt, kt, vt = (Tensor(a, requires_grad=True) for a in (q, k, v))
    z = ops.attention(qt, kt, vt)
    z.sum().backward()
    assert np.isfinite(z.data).all()
    assert all(np.isfinite(t.grad).all() for t in (qt, kt, vt))


def test_attention_refuses_shapes_that_do_not_fit():
    with pytest.raises(ValueError, match="do not fit"):
        ops.attention(Tensor(np.zeros((2, 3))), Tensor(np.zeros((4, 5))), Tensor(np.zeros((4, 1))))
    with pytest.raises(ValueError, match="do not fit"):
        ops.attention(Tensor(np.zeros((2, 2, 3))), Tensor(np.zeros((1, 4, 3))),
                      Tensor(np.zeros((1, 4, 1))))
