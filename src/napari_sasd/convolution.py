"""The linear-convolution operators of the model, batched over motifs and channels.

A motif ``a`` of ``Kh x Kw`` and an activation map ``x`` on the grid
``G = (H + Kh - 1, W + Kw - 1)`` give the image ``z = (a (*) x)[Kh-1 : Kh-1+H, ...]``:
the observed window of their full linear convolution. Every product is done
in the Fourier domain at one real-FFT size ``L >= G`` (a fast length), which is
large enough that the cyclic products never wrap into the observed window.

Transforms of zero-padded small kernels, and the kernel-sized gradient, only
transform the rows that are not zero (or are kept): half the cost of a full
2-D FFT, which is why these don't just call ``rfft2`` with ``s=``.

:class:`PeriodicConvOperator` is the circular variant: used on discovery crops,
for the whole image's settle, and for its polish on a padded grid whose pad the
solver fills with the model (which makes it exact).
"""

from __future__ import annotations

import numpy as np
from scipy import fft

#: Transforms of at least this many pixels use all cores.
THREADED_FFT_PIXELS = 800 * 800


class ConvOperator:
    """Forward model and adjoints for one image size and one kernel size.

    Parameters
    ----------
    image_shape : (H, W)
    kernel_shape : (Kh, Kw)
    workers : int, optional
        Threads for ``scipy.fft``; None picks by transform size.
    """

    def __init__(
        self,
        image_shape: tuple[int, int],
        kernel_shape: tuple[int, int],
        workers: int | None = None,
    ) -> None:
        H, W = image_shape
        Kh, Kw = kernel_shape
        self.H, self.W, self.Kh, self.Kw = H, W, Kh, Kw
        self.grid, self.L = self._grid_and_lengths()
        if workers is None:
            # Threads pay off only on large transforms: measured here (2 cores),
            # one thread was 30-40 % faster up to 512^2 images, two faster at 1024^2.
            workers = -1 if self.L[0] * self.L[1] >= THREADED_FFT_PIXELS else 1
        self.workers = workers
        self._buf: np.ndarray | None = None
        #: Weight of one term of the full spectrum in Parseval's sum.
        self.parseval = 1 / (self.L[0] * self.L[1])
        # Parseval on the half spectrum of a real FFT: the columns other than
        # the zero and Nyquist frequencies stand for two. Repeated for the
        # real and imaginary parts side by side in a float32 view.
        w = np.full(self.L[1] // 2 + 1, 2.0, np.float32)
        w[0] = 1
        if self.L[1] % 2 == 0:
            w[-1] = 1
        self._weight2 = np.repeat(w * np.float32(self.parseval), 2)

    def _grid_and_lengths(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """Activation grid and transform lengths (a fast length past the grid)."""
        grid = (self.H + self.Kh - 1, self.W + self.Kw - 1)
        return grid, (fft.next_fast_len(grid[0], real=True), fft.next_fast_len(grid[1], True))

    # -- transforms ---------------------------------------------------------
    def fft_x(self, x: np.ndarray) -> np.ndarray:
        """Spectrum of activation maps ``(..., Gh, Gw)``."""
        return fft.rfft2(x, s=self.L, workers=self.workers)

    def fft_kernel(self, a: np.ndarray) -> np.ndarray:
        """Spectrum of kernels ``(..., Kh, Kw)`` zero-padded to ``L``."""
        t = fft.rfft(a, n=self.L[1], axis=-1, workers=self.workers)
        return fft.fft(t, n=self.L[0], axis=-2, workers=self.workers)

    def image(self, Z: np.ndarray) -> np.ndarray:
        """Observed window ``(..., H, W)`` of the model from its spectrum."""
        z = fft.irfft2(Z, s=self.L, workers=self.workers)
        return z[..., self.Kh - 1 : self.Kh - 1 + self.H, self.Kw - 1 : self.Kw - 1 + self.W]

    def fft_residual(self, r: np.ndarray) -> np.ndarray:
        """Spectrum of a residual ``(C, H, W)`` placed at the observed window."""
        shape = (*r.shape[:-2], *self.L)
        if self._buf is None or self._buf.shape != shape or self._buf.dtype != r.dtype:
            self._buf = np.zeros(shape, r.dtype)
        self._buf[..., self.Kh - 1 : self.Kh - 1 + self.H, self.Kw - 1 : self.Kw - 1 + self.W] = r
        return fft.rfft2(self._buf, workers=self.workers)

    def inner(self, P: np.ndarray, Q: np.ndarray) -> np.ndarray:
        """Inner products of the real images whose spectra are ``P`` and ``Q``
        ``(..., L0, L1 // 2 + 1)``, over the last two axes (Parseval)."""
        # Re(conj(p) q) = p.re q.re + p.im q.im: products of the float32
        # views summed down the columns in one pass with no temporary
        # (einsum's fused multiply-add loop), then weighted per column.
        Pv = np.ascontiguousarray(P).view(np.float32)
        Qv = np.ascontiguousarray(Q).view(np.float32)
        cols = np.einsum("...ij,...ij->...j", Pv, Qv)
        return np.einsum("...j,j->...", cols, self._weight2).astype(np.float64)

    # -- model and gradients ------------------------------------------------
    @staticmethod
    def combine(A: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Spectrum (C, ...) of ``sum_n a_{n,c} (*) x_n`` from A (N, C, ...) and X (N, ...).

        Batched over channels; accumulated motif by motif, which was measured
        2x faster than a broadcast product summed over motifs, and einsum's
        generic loop 2-4x slower still on complex64.
        """
        out = A[0] * X[0]
        for n in range(1, A.shape[0]):
            out += A[n] * X[n]
        return out

    def grad_x(self, A: np.ndarray, R: np.ndarray) -> np.ndarray:
        """Adjoint on activations: ``(N, Gh, Gw)``, correlation of residual and kernels."""
        if A.shape[1] == 1:
            G = np.conj(A[:, 0])
            G *= R[0]
        else:
            G = (A.conj() * R[None]).sum(axis=1)
        g = fft.irfft2(G, s=self.L, workers=self.workers)
        return g[:, : self.grid[0], : self.grid[1]]

    def grad_kernel(self, X: np.ndarray, R: np.ndarray) -> np.ndarray:
        """Adjoint on kernels: ``(N, C, Kh, Kw)``, correlation of residual and activations."""
        # The correlation's spectrum is conj(X) R = conj(X conj(R)): one
        # conjugate of the residual instead of one per motif, and the inverse
        # transform over rows of a conjugate is the conjugate of the forward
        # one (over L0), taken on the Kh kept rows only.
        Q = X[:, None] * np.conj(R)[None]
        t = fft.fft(Q, axis=-2, workers=self.workers)[..., : self.Kh, :]
        t = np.conj(t, out=t)
        t *= np.float32(1 / self.L[0])
        return fft.irfft(t, n=self.L[1], axis=-1, workers=self.workers)[..., : self.Kw]


class PeriodicConvOperator(ConvOperator):
    """Circular convolution on the image's own ``(H, W)`` grid.

    The model is ``a (*) x`` wrapped around the torus of the image, and the
    activations live on the same grid. With no observed window to cut the model
    to, a residual stays a spectrum (``R = A X - Y``), so an iteration only
    transforms the activations and their gradient: about a third of the
    windowed operator's transforms. On its own it is not the model of an
    image, whose copies are cut at its border rather than wrapped: a discovery
    crop tolerates that seam, and the solver makes it exact on a grid past
    ``H + k - 1`` by filling the pixels outside the image with the model.
    ``H`` and ``W`` should be fast FFT lengths.
    """

    def _grid_and_lengths(self) -> tuple[tuple[int, int], tuple[int, int]]:
        return (self.H, self.W), (self.H, self.W)

    def image(self, Z: np.ndarray) -> np.ndarray:
        """The model ``(..., H, W)`` from its spectrum."""
        return fft.irfft2(Z, s=self.L, workers=self.workers)

    def fft_residual(self, r: np.ndarray) -> np.ndarray:
        """Spectrum of a residual (or image) ``(C, H, W)``."""
        return fft.rfft2(r, workers=self.workers)
