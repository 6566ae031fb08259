"""Checks and normalisation of a solve's inputs, done before any work starts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Problem:
    """A validated, normalised problem, in the solver's layout.

    ``y`` is ``(C, H, W)`` float32, ``(image - offset[c]) / scale`` with NaN
    and masked-out pixels set to 0; ``omega`` is the observed-pixel weight
    ``(C, H, W)`` (1 observed, 0 not) or None when every pixel is observed.
    """

    y: np.ndarray
    omega: np.ndarray | None
    offset: np.ndarray
    scale: float
    kernel_size: tuple[int, int]
    n_motifs: int
    lam: float | None
    channel_axis: int | None
    image_shape: tuple[int, ...]
    init_kernels: np.ndarray | None

    @property
    def n_channels(self) -> int:
        return self.y.shape[0]


def _kernel_pair(kernel_size: object) -> tuple[int, int]:
    if isinstance(kernel_size, bool):
        raise TypeError("kernel_size must be an int or a (height, width) pair, not a bool")
    if np.ndim(kernel_size) == 0:
        ks: tuple = (kernel_size, kernel_size)
    else:
        ks = tuple(np.ravel(kernel_size))
        if len(ks) != 2:
            raise ValueError(f"kernel_size must be an int or a (height, width) pair, got {ks}")
    out = []
    for k in ks:
        if not isinstance(k, int | np.integer) or isinstance(k, bool):
            raise TypeError(f"kernel_size must be whole numbers of pixels, got {kernel_size!r}")
        if k < 3:
            raise ValueError(f"kernel_size must be at least 3 pixels, got {int(k)}")
        out.append(int(k))
    return out[0], out[1]


#: Spread of the image values (their standard deviation) the solver accepts:
#: activations and reconstruction are float32 in image units, so a spread
#: far outside float32's range (about 1e-38 to 3e38) would underflow to
#: zero or overflow to inf; the margin leaves room for the activations'
#: dynamic range.
_SCALE_RANGE = (1e-30, 1e30)
#: Bytes of memory the solver needs per activation-map pixel at least (the
#: map, its extrapolated and previous iterates and the gradient, float32).
_BYTES_PER_MAP_PIXEL = 16


def _check_motif_count(n: int, shape: tuple[int, int], k: tuple[int, int]) -> None:
    # Refuse an impossible motif count before any allocation: more motifs than
    # motif-sized tiles fit in the image cannot each have copies, and a count
    # whose activation maps alone exceed the machine's memory would end in a
    # bare MemoryError after minutes.
    H, W = shape
    kh, kw = k
    tiles = (H * W) // (kh * kw)
    if n > tiles:
        raise ValueError(
            f"n_motifs={n} is more than the {tiles} motifs of {kh}x{kw} pixels that fit in the "
            f"{H}x{W} image; use fewer motifs (typically 1-8)"
        )
    need = _BYTES_PER_MAP_PIXEL * n * (H + kh - 1) * (W + kw - 1)
    total = _physical_memory()
    if total is not None and need > total:
        raise ValueError(
            f"n_motifs={n} on a {H}x{W} image needs at least {need / 2**30:.1f} GiB for the "
            f"activation maps, more than this machine's {total / 2**30:.1f} GiB; use fewer "
            "motifs or a smaller region"
        )


def _physical_memory() -> int | None:
    import os

    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):  # not on this platform
        return None


def _rescaled(
    data: np.ndarray, observed: np.ndarray, n_obs: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """Offset, normalised data ``(data - offset) / scale`` and scale, computed
    in units of the largest value, so that neither the differences nor their
    squares overflow or underflow."""
    top = float(np.max(np.abs(data[observed])))
    if top == 0 or not np.isfinite(top):
        raise ValueError("the image is constant over its observed pixels: there is nothing to fit")
    unit = data / top
    offset = np.array([np.median(unit[c][observed[c]]) for c in range(len(unit))])
    cent = np.where(observed, unit - offset[:, None, None], 0.0)
    s = float(np.sqrt(np.sum(cent**2) / n_obs))
    if s == 0:
        raise ValueError("the image is constant over its observed pixels: there is nothing to fit")
    with np.errstate(over="ignore"):
        # In image units; may overflow to inf, which the range check refuses.
        return offset * top, cent * (1.0 / s), s * top


def prepare(
    image: object,
    kernel_size: object,
    n_motifs: object,
    lam: object,
    channel_axis: int | None,
    mask: object,
    init_kernels: object,
) -> Problem:
    """Validate the inputs of :func:`napari_sasd.solve` and normalise the image.

    Raises
    ------
    TypeError, ValueError
        With a message that says what to change.
    """
    arr = np.asarray(image)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.integer)
        or np.issubdtype(arr.dtype, np.floating)
        or arr.dtype == bool
    ):
        raise TypeError(
            f"image must be a real numeric array (integers or floats), got dtype {arr.dtype}"
        )
    if arr.ndim == 2:
        if channel_axis is not None:
            raise ValueError(
                "channel_axis was given but the image is 2-D; leave channel_axis=None"
            )
        stack = arr[None]
    elif arr.ndim == 3:
        if channel_axis is None:
            if arr.shape[-1] in (3, 4):
                raise ValueError(
                    f"image of shape {arr.shape} looks like RGB(A); convert it to grayscale, "
                    "or pass channel_axis=-1 to treat the colours as channels"
                )
            raise ValueError(
                f"image is 3-D {arr.shape}; pass channel_axis to name the channel (energy) axis "
                "of a spectroscopy cube, or pass a single 2-D slice"
            )
        if not isinstance(channel_axis, int | np.integer) or not -3 <= channel_axis < 3:
            raise ValueError(f"channel_axis must be -3..2 for a 3-D image, got {channel_axis!r}")
        stack = np.moveaxis(arr, int(channel_axis), 0)
    else:
        raise ValueError(
            f"image must be 2-D, or 3-D with a channel_axis; got {arr.ndim}-D {arr.shape}"
        )
    C, H, W = stack.shape
    kh, kw = _kernel_pair(kernel_size)
    if kh > H or kw > W:
        raise ValueError(
            f"kernel_size ({kh}, {kw}) is larger than the image ({H}, {W}); "
            "choose a smaller motif size or a larger region"
        )
    if isinstance(n_motifs, bool) or not isinstance(n_motifs, int | np.integer):
        raise TypeError(f"n_motifs must be an int, got {n_motifs!r}")
    if n_motifs < 1:
        raise ValueError(f"n_motifs must be at least 1, got {n_motifs}")
    _check_motif_count(int(n_motifs), (H, W), (kh, kw))
    if lam is not None:
        if isinstance(lam, bool) or not isinstance(lam, int | float | np.number):
            raise TypeError(f"lam must be a positive number or None (automatic), got {lam!r}")
        if not np.isfinite(lam) or lam <= 0:
            raise ValueError(f"lam must be positive and finite, or None for automatic; got {lam}")
        lam = float(lam)
    observed = np.isfinite(stack)
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype != bool:
            raise TypeError(f"mask must be boolean (True = observed pixel), got dtype {m.dtype}")
        if m.shape == (H, W):
            observed &= m[None]
        elif m.shape == stack.shape or m.shape == arr.shape:
            m3 = m if m.shape == stack.shape else np.moveaxis(m, int(channel_axis or 0), 0)
            observed &= m3
        else:
            raise ValueError(
                f"mask has shape {m.shape}; it must match the image's spatial shape {(H, W)}"
            )
    n_obs = int(observed.sum())
    if n_obs == 0:
        raise ValueError("no observed pixel: the image is all NaN/inf or entirely masked out")
    if n_obs < 4 * kh * kw:
        raise ValueError(
            f"only {n_obs} observed pixels; need at least 4 motif areas ({4 * kh * kw}) to fit"
        )
    init = None
    if init_kernels is not None:
        init = np.asarray(init_kernels, dtype=np.float64)
        want = (n_motifs, C, kh, kw) if arr.ndim == 3 else (n_motifs, kh, kw)
        if init.shape != want:
            raise ValueError(f"init_kernels has shape {init.shape}, expected {want}")
        if not np.all(np.isfinite(init)):
            raise ValueError("init_kernels contains NaN or inf")
        zero = np.flatnonzero(~np.any(init.reshape(len(init), -1) != 0, axis=1))
        if zero.size:
            # A motif is defined up to its norm: an all-zero one has no direction.
            raise ValueError(
                f"init_kernels motif {int(zero[0]) + 1} is all zeros; give non-zero motifs "
                "(e.g. a previous result's kernels) or no init_kernels"
            )
        init = init.reshape(n_motifs, C, kh, kw)

    data = stack.astype(np.float64)
    # Robust offset (median per channel) and one global scale (std over all
    # channels, so the motifs' channel weights keep their physical ratio).
    offset = np.array([np.median(data[c][observed[c]]) for c in range(C)])
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        cent = np.where(observed, data - offset[:, None, None], 0.0)
        scale = float(np.sqrt(np.sum(cent**2) / n_obs))
    y = None
    if not np.isfinite(scale) or scale == 0:
        # Overflow or underflow (values near the float range's ends), or a
        # truly constant image: tell them apart in units of the largest value.
        offset, y, scale = _rescaled(data, observed, n_obs)
    if not _SCALE_RANGE[0] <= scale <= _SCALE_RANGE[1]:
        raise ValueError(
            f"the image's values vary by about {scale:.3g}, outside what the solver can "
            f"represent ({_SCALE_RANGE[0]:g} to {_SCALE_RANGE[1]:g}; results are float32): "
            "multiply the image by a constant first (e.g. express heights in nm, not m)"
        )
    y = (cent / scale if y is None else y).astype(np.float32)
    omega = None if observed.all() else observed.astype(np.float32)
    return Problem(
        y=y,
        omega=omega,
        offset=offset,
        scale=scale,
        kernel_size=(kh, kw),
        n_motifs=int(n_motifs),
        lam=lam,
        channel_axis=None if arr.ndim == 2 else int(channel_axis) % 3,
        image_shape=tuple(arr.shape),
        init_kernels=init,
    )
