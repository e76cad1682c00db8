"""Pixel layouts of the hosts <-> the core's channels-last float32.

FITS files and Siril's ``get_image_pixeldata`` give channels-first planes, (H, W) or
(C, H, W), as float32 or integers; the core takes (H, W, C) float32. Integer samples are
divided by their full scale (65535 for 16-bit, as Siril does), and that factor goes back
with the data so that it can be recorded and undone.
"""

from __future__ import annotations

import numpy as np

__all__ = ["integer_scale", "planes_to_channels_last", "channels_last_to_planes", "as_channels_last",
           "as_planes", "reusable"]


def integer_scale(dtype: np.dtype) -> float:
    """Full-scale value used to normalise integer samples to [0, 1] (as Siril does).

    Examples
    --------
    >>> integer_scale(np.dtype(np.uint16)), integer_scale(np.dtype(np.float32))
    (65535.0, 1.0)
    """
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        return float(np.iinfo(dtype).max)
    return 1.0


def as_channels_last(planes: np.ndarray) -> np.ndarray:
    """A view of (H, W) or (C, H, W) planes as channels-last (H, W, C), C in {1, 3}.

    Examples
    --------
    >>> as_channels_last(np.zeros((3, 4, 5))).shape, as_channels_last(np.zeros((4, 5))).shape
    ((4, 5, 3), (4, 5, 1))
    """
    planes = np.asarray(planes)
    if planes.ndim == 2:
        return planes[..., None]
    if planes.ndim == 3 and planes.shape[0] in (1, 3):
        return np.moveaxis(planes, 0, -1)
    raise ValueError(f"data must be (H, W) or (C, H, W) with C in (1, 3), got shape {planes.shape}")


def as_planes(data: np.ndarray, ndim: int) -> np.ndarray:
    """A view of channels-last (H, W, C) data as planes of rank ``ndim``: (H, W) or (C, H, W).

    Examples
    --------
    >>> as_planes(np.zeros((4, 5, 3)), 3).shape, as_planes(np.zeros((4, 5, 1)), 2).shape
    ((3, 4, 5), (4, 5))
    """
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[..., None]
    return data[..., 0] if ndim == 2 else np.moveaxis(data, -1, 0)


def reusable(out: np.ndarray | None, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """``out`` when it is a writeable C-contiguous array of ``shape`` and ``dtype``, else a
    new one.

    A batch reads every frame of a size into one array: memory already touched costs a
    fraction of new pages (see benchmarks/README.md).
    """
    if (out is not None and out.shape == tuple(shape) and out.dtype == np.dtype(dtype)
            and out.flags.c_contiguous and out.flags.writeable):
        return out
    return np.empty(shape, dtype=dtype)


def planes_to_channels_last(planes: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """(H, W) or (C, H, W) planes of any real dtype -> ((H, W, C) float32, scale).

    Integers are divided by :func:`integer_scale`. The pixels go
    into ``out`` when it fits (see :func:`reusable`).

    Raises
    ------
    ValueError
        For another rank, or a plane count other than 1 or 3.

    Examples
    --------
    >>> import numpy as np
    >>> data, scale = planes_to_channels_last(np.full((3, 2, 4), 65535, np.uint16))
    >>> data.shape, data.dtype, float(data.max()), scale
    ((2, 4, 3), dtype('float32'), 1.0, 65535.0)
    """
    raw = np.asarray(planes)
    if raw.ndim == 2:
        raw = raw[None]
    elif not (raw.ndim == 3 and raw.shape[0] in (1, 3)):
        raise ValueError(f"unsupported dimensionality {np.shape(planes)} "
                         "(need 2-D, or 3-D with 1 or 3 planes)")
    scale = integer_scale(raw.dtype)
    data = reusable(out, raw.shape[1:] + (raw.shape[0],))
    # One call per plane, not row blocks: the CLI reads its first file in a thread while
    # TensorFlow is imported, and there every numpy call waits for the GIL (hundreds of
    # row-block calls finished only after the import: benchmarks/README.md).
    for k in range(raw.shape[0]):
        data[..., k] = raw[k]
        if scale != 1.0:
            data[..., k] /= np.float32(scale)
    return data, scale


def channels_last_to_planes(data: np.ndarray, ndim: int, dtype: np.dtype = np.float32,
                            clip: bool = False, out: np.ndarray | None = None
                            ) -> tuple[np.ndarray, int]:
    """(H, W[, C]) float data -> planes of rank ``ndim`` and sample type ``dtype``.

    Parameters
    ----------
    data : ndarray (H, W) or (H, W, C)
    ndim : {2, 3}
        Rank of the planes wanted: (H, W) or (C, H, W).
    dtype : numpy dtype
        ``float32``, or an integer type: values are then multiplied by its full scale
        (:func:`integer_scale`), rounded, and clipped to its range.
    clip : bool
        Clip float output to [0, 1] (Siril's float range). Integer output is always
        clipped to the type's range.
    out : ndarray, optional
        Receives the planes when it fits (see :func:`reusable`), such as the host's
        array the data came from. It may be ``data``'s own memory in the same layout (a
        mono frame, converted in place), but not otherwise overlap it.

    Returns
    -------
    (ndarray, int)
        C-contiguous planes and the number of values that were clipped (NaN included,
        written as 0).

    Examples
    --------
    >>> import numpy as np
    >>> planes, n = channels_last_to_planes(np.array([[[0.5], [1.2]]]), 2, np.uint16)
    >>> planes.tolist(), n
    ([[32768, 65535]], 1)
    """
    arr = np.asarray(data, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[..., None]
    h, w = arr.shape[:2]
    n_planes = arr.shape[2] if ndim == 3 else 1
    dtype = np.dtype(dtype)
    integer = dtype.kind in "iu"
    # The normalised range a sample type holds: [0, 1], or for signed integers from
    # their minimum (int16: -32768 / 32767) to 1.
    low = np.float32(np.iinfo(dtype).min / integer_scale(dtype)) if dtype.kind == "i" else np.float32(0)
    target = reusable(out, (n_planes, h, w) if ndim == 3 else (h, w), dtype)
    planes = target.reshape(n_planes, h, w)
    # Row blocks of ~1 MB: each is gathered from the channels-last data, checked and
    # clipped while it is in cache, and written once into the planes (the whole-array
    # version made five full-size temporaries).
    rows = max(1, (1 << 20) // (4 * w))
    block = np.empty((rows, w), np.float32) if integer else None
    full_scale = np.float32(integer_scale(dtype))
    clipped = 0
    for k in range(n_planes):
        for top in range(0, h, rows):
            source = arr[top:top + rows, :, k]
            part = planes[k, top:top + rows] if block is None else block[:len(source)]
            part[...] = source
            if integer or clip:
                lowest, highest = part.min(), part.max()
                if not (lowest >= low and highest <= 1):    # NaN fails both: count, then fix
                    bad = ~np.isfinite(part)
                    clipped += int(np.count_nonzero(bad | (part < low) | (part > 1)))
                    part[bad] = 0
                    np.clip(part, low, 1.0, out=part)
            if integer:
                part *= full_scale
                np.rint(part, out=part)
                planes[k, top:top + rows] = part
    return target, clipped
