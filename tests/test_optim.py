"""Adam/AdamW, learning-rate schedules and clipping against plain formulas."""

import math

import numpy as np
import pytest

from sparsecode.sae.optim import Adam, clip_grad_norm, learning_rate, time_decay


def _adam_reference(p, grads, lr, b1, b2, eps, wd):
    """Adam (AdamW when wd > 0) one scalar at a time, as published."""
    p = p.astype(np.float64).copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        for i in range(p.size):
            m.flat[i] = b1 * m.flat[i] + (1 - b1) * g.flat[i]
            v.flat[i] = b2 * v.flat[i] + (1 - b2) * g.flat[i] ** 2
            mhat = m.flat[i] / (1 - b1**t)
            vhat = v.flat[i] / (1 - b2**t)
            p.flat[i] -= lr * wd * p.flat[i]
            p.flat[i] -= lr * mhat / (math.sqrt(vhat) + eps)
    return p


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_adam_equals_the_published_update(wd, rng):
    p0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(5)]
    opt = Adam([p0.shape], betas=(0.5, 0.9375), eps=1e-8, weight_decay=wd, dtype=np.float64)
    p = p0.copy()
    for g in grads:
        opt.step([p], [g], 0.03)
    np.testing.assert_allclose(p, _adam_reference(p0, grads, 0.03, 0.5, 0.9375, 1e-8, wd),
                               rtol=1e-12)


def test_adam_state_round_trip_and_row_reset(rng):
    opt = Adam([(4, 2), (2,)], dtype=np.float64)
    p = [rng.standard_normal((4, 2)), rng.standard_normal(2)]
    opt.step(p, [rng.standard_normal((4, 2)), rng.standard_normal(2)], 0.1)
    state = opt.state_dict()
    other = Adam([(4, 2), (2,)], dtype=np.float64)
    other.load_state_dict(state)
    g = [rng.standard_normal((4, 2)), rng.standard_normal(2)]
    a = [x.copy() for x in p]
    b = [x.copy() for x in p]
    opt.step(a, g, 0.1)
    other.step(b, g, 0.1)
    np.testing.assert_array_equal(a[0], b[0])
    opt.reset_rows(0, np.array([False, True, False, True]))
    assert not opt.m[0][[1, 3]].any() and opt.m[0][[0, 2]].all()


def test_schedules():
    kw = dict(lr=1.0, total_steps=100, warmup_steps=10, final_ratio=0.1)
    assert learning_rate(0, schedule="cosine", **kw) == pytest.approx(0.1)
    assert learning_rate(9, schedule="cosine", **kw) == pytest.approx(1.0)
    assert learning_rate(10, schedule="cosine", **kw) == pytest.approx(1.0)
    assert learning_rate(55, schedule="cosine", **kw) == pytest.approx(0.55)
    assert learning_rate(100, schedule="cosine", **kw) == pytest.approx(0.1)
    cos = [learning_rate(s, schedule="cosine", **kw) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(cos[:-1], cos[1:], strict=True))
    # warmup-stable-decay: flat until the last 20%, then linear to 0.1
    assert learning_rate(79, schedule="wsd", cooldown=0.2, **kw) == 1.0
    assert learning_rate(90, schedule="wsd", cooldown=0.2, **kw) == pytest.approx(0.55)
    assert learning_rate(50, schedule="constant", **kw) == 1.0
    # unknown length: hold the peak after warmup
    assert learning_rate(10**6, lr=2.0, schedule="cosine", warmup_steps=10) == 2.0



def test_time_decay():
    # flat for the first 80% of the time, then linear to 0.1 at the cap, and held there
    kw = dict(cooldown=0.2, final_ratio=0.1)
    assert time_decay(0.0, 10.0, **kw) == 1.0
    assert time_decay(8.0, 10.0, **kw) == 1.0
    assert time_decay(9.0, 10.0, **kw) == pytest.approx(0.55)
    assert time_decay(10.0, 10.0, **kw) == pytest.approx(0.1)
    assert time_decay(25.0, 10.0, **kw) == pytest.approx(0.1)
    assert time_decay(9.99, 10.0, cooldown=0.0, final_ratio=0.1) == 1.0
    ramp = [time_decay(t, 10.0, **kw) for t in np.linspace(7.0, 11.0, 41)]
    assert all(a >= b for a, b in zip(ramp[:-1], ramp[1:], strict=True))

def test_clip_grad_norm(rng):
    g = [rng.standard_normal(5), rng.standard_normal((2, 3))]
    norm = math.sqrt(sum((x**2).sum() for x in g))
    before = [x.copy() for x in g]
    assert clip_grad_norm(g, 10 * norm) == pytest.approx(norm)
    np.testing.assert_array_equal(g[0], before[0])
    clip_grad_norm(g, 0.5)
    assert math.sqrt(sum((x**2).sum() for x in g)) == pytest.approx(0.5)
    np.testing.assert_allclose(g[1] / before[1], 0.5 / norm)
