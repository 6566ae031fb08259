"""The convolution operators against direct sums, and their adjoints."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sasd.convolution import ConvOperator, PeriodicConvOperator


def _circular(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``sum_t a[t] x[s - t]`` on the torus of ``x``, by direct sums."""
    out = np.zeros_like(x)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out += a[i, j] * np.roll(x, (i, j), axis=(0, 1))
    return out


@pytest.mark.parametrize("shape", [(20, 24), (21, 15)])
def test_periodic_model_is_circular_convolution(shape):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 1, 5, 4)).astype(np.float32)
    x = rng.standard_normal((2, *shape)).astype(np.float32)
    op = PeriodicConvOperator(shape, (5, 4))
    z = op.image(op.combine(op.fft_kernel(a), op.fft_x(x)))
    want = _circular(a[0, 0], x[0]) + _circular(a[1, 0], x[1])
    assert z.shape == (1, *shape)
    np.testing.assert_allclose(z[0], want, atol=1e-4)


@pytest.mark.parametrize("cls", [ConvOperator, PeriodicConvOperator])
def test_gradients_are_adjoints_of_the_model(cls):
    # <model(a, x), r> = <x, grad_x(a, r)> = <a, grad_kernel(x, r)>.
    rng = np.random.default_rng(1)
    op = cls((18, 22), (5, 6))
    a = rng.standard_normal((2, 1, 5, 6)).astype(np.float32)
    x = rng.standard_normal((2, *op.grid)).astype(np.float32)
    r = rng.standard_normal((1, 18, 22)).astype(np.float32)
    A, X, R = op.fft_kernel(a), op.fft_x(x), op.fft_residual(r)
    lhs = float(np.sum(op.image(op.combine(A, X)) * r))
    assert float(np.sum(x * op.grad_x(A, R))) == pytest.approx(lhs, rel=1e-4)
    assert float(np.sum(a * op.grad_kernel(X, R))) == pytest.approx(lhs, rel=1e-4)
    # Parseval on the half spectrum: inner products without a transform.
    assert float(op.inner(R, R).sum()) == pytest.approx(float(np.sum(r * r)), rel=1e-4)
