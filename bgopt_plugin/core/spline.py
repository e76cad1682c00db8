"""Polyharmonic spline with a linear term: kernels, solves and evaluation in numpy.

Coordinates are normalised: a full-resolution pixel ``(row, col)`` sits at
``((row + 0.5) / L, (col + 0.5) / L)`` with ``L`` the long side of the image, so the
same spline evaluates at any resolution. Nothing here needs gradients; the optimizer
has its own TensorFlow copy of :func:`kernel` for training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .robust import robust_sigma

__all__ = ["SplineParams", "kernel", "sqdist", "solve", "solve_lstsq", "robust_fit", "evaluate_grid",
           "evaluate_image", "bending_energy"]

#: Squared distances are floored here so log(0) never occurs (the kernels vanish at 0).
D2_FLOOR = 1e-10


def kernel(d2: np.ndarray, order: int) -> np.ndarray:
    """Polyharmonic radial basis as a function of the squared distance ``d2``.

    order 1: r, 2: r^2 log r (thin plate), 3: r^3, 4: r^4 log r.

    Examples
    --------
    >>> float(kernel(np.array(4.0), 1)), float(kernel(np.array(4.0), 3))
    (2.0, 8.0)
    """
    if order not in (1, 2, 3, 4):
        raise ValueError(f"order must be 1, 2, 3 or 4, got {order!r}")
    d2 = np.array(d2, dtype=np.result_type(d2, D2_FLOOR))    # a copy, used as scratch
    values = _kernel_into(d2, np.empty_like(d2), order)
    if order in (2, 4):
        values *= 0.5
    return values[()]   # a 0-d input gives a scalar, as numpy's ufuncs do


def bending_sign(order: int) -> int:
    """Sign that makes ``w^T K w`` (K the kernel between the centres) a bending energy.

    Under the side conditions, the polyharmonic kernels are conditionally positive
    definite up to a sign: ``r^3`` and ``r^2 log r`` as they are, ``r`` and ``r^4 log r``
    negated. With the wrong sign the smoothing term rewards large weights: the robust
    initial fit of the dome scene missed by 43 % (order 1) and 12 % (order 4).

    Examples
    --------
    >>> [bending_sign(k) for k in (1, 2, 3, 4)]
    [-1, 1, 1, -1]
    """
    return -1 if order in (1, 4) else 1


def sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact pairwise squared distances between (P, 2) and (N, 2) points, float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    dy = a[:, None, 0] - b[None, :, 0]
    dx = a[:, None, 1] - b[None, :, 1]
    return dy * dy + dx * dx


def _linear(points: np.ndarray) -> np.ndarray:
    """The linear-term basis [1, y, x] at (P, 2) points."""
    return np.concatenate([np.ones((len(points), 1)), np.asarray(points, np.float64)], axis=1)


@dataclass(frozen=True)
class SplineParams:
    """A spline: centres (N, 2) in normalised (y, x), weights (N, C), linear term (3, C).

    Examples
    --------
    >>> import numpy as np
    >>> c = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    >>> s = SplineParams(c, np.zeros((4, 1)), np.array([[1.0], [2.0], [0.0]]), 2)
    >>> float(s(np.array([[0.5, 0.5]]))[0, 0])
    2.0
    """

    centers: np.ndarray
    w: np.ndarray
    v: np.ndarray
    order: int

    @property
    def n_channels(self) -> int:
        return int(self.w.shape[1])

    def __call__(self, query: np.ndarray) -> np.ndarray:
        """Evaluate at normalised (P, 2) query points; returns (P, C) float64."""
        return _values(_design(np.asarray(self.centers, np.float64), query, self.order),
                       np.asarray(self.w, np.float64), np.asarray(self.v, np.float64))


def bending_energy(params: SplineParams) -> np.ndarray:
    """Per-channel ``w^T K w`` (K the kernel matrix of the centres).

    For the thin-plate spline with the side conditions ``P^T w = 0`` this is, up to a
    constant factor, the integral of the squared second derivatives: zero for a plane.
    """
    k = kernel(sqdist(params.centers, params.centers), params.order)
    w = np.asarray(params.w, np.float64)
    return np.einsum("nc,nm,mc->c", w, k, w)


def solve(centers: np.ndarray, values: np.ndarray, order: int,
          regularization: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Weights of the spline through ``values`` at ``centers``.

    Solves ``[[A + reg I, P], [P^T, 0]] [w; v] = [f; 0]`` in float64, with ``A`` the
    kernel matrix and ``P = [1, y, x]``: the same system as
    ``scipy.interpolate.RBFInterpolator(..., degree=1, smoothing=reg)``.

    Returns
    -------
    w : ndarray (N, C), v : ndarray (3, C), float64
    """
    c = np.asarray(centers, np.float64)
    f = np.asarray(values, np.float64)
    n = len(c)
    a = kernel(sqdist(c, c), order) + regularization * np.eye(n)
    p = _linear(c)
    lhs = np.block([[a, p], [p.T, np.zeros((3, 3))]])
    rhs = np.concatenate([f, np.zeros((3, f.shape[1]))])
    try:
        sol = np.linalg.solve(lhs, rhs)
    except np.linalg.LinAlgError:
        sol = np.full_like(rhs, np.nan)
    if not np.all(np.isfinite(sol)):
        raise ValueError("the spline system is singular (control points coincide?)")
    return sol[:n], sol[n:]


#: Default Tikhonov damping of :func:`solve_lstsq` (relative to the normal matrix's scale).
RIDGE = 1e-6


def solve_lstsq(centers: np.ndarray, query: np.ndarray, values: np.ndarray, weights: np.ndarray,
                order: int, ridge: float = RIDGE, smoothing: float = 0.0,
                ) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares spline with fixed ``centers``.

    Minimises, per channel, ``sum weights * (values - spline(query))**2 +
    smoothing * S * w^T K w + ridge * S * |w|^2`` subject to ``P_c^T w = 0`` (the side
    conditions that make the spline linear far from its centres), where ``S`` is the
    mean diagonal of the weighted normal matrix, so ``smoothing`` and ``ridge`` do not
    depend on the number of pixels or their scale. Solved in float64 (KKT system).

    Parameters
    ----------
    centers : ndarray (N, 2)
    query : ndarray (P, 2)
    values, weights : ndarray (P, C)
    order : int
    ridge : float
        Tikhonov damping of the radial weights.
    smoothing : float
        Weight of the bending energy ``w^T K w``: 0 is a plain least-squares fit, large
        values tend to the best plane.

    Returns
    -------
    w : ndarray (N, C), v : ndarray (3, C), float64
    """
    return _solve_design(centers, _design(centers, query, order), values, weights, order,
                         ridge, smoothing)


def _design(centers: np.ndarray, query: np.ndarray, order: int) -> np.ndarray:
    """The (P, N + 3) matrix of a spline's values at ``query``: kernels, then [1, y, x]."""
    q = np.asarray(query, np.float64)
    return np.concatenate([kernel(sqdist(q, centers), order), _linear(q)], axis=1)


def _solve_design(centers: np.ndarray, design: np.ndarray, values: np.ndarray,
                  weights: np.ndarray, order: int, ridge: float, smoothing: float,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`solve_lstsq` on its :func:`_design` matrix, made by the caller."""
    c = np.asarray(centers, np.float64)
    y = np.asarray(values, np.float64)
    wt = np.asarray(weights, np.float64)
    n, n_chan = len(c), y.shape[1]
    k = bending_sign(order) * kernel(sqdist(c, c), order) if smoothing > 0 else None
    pc = _linear(c)
    w_out, v_out = np.empty((n, n_chan)), np.empty((3, n_chan))
    for ch in range(n_chan):
        dw = design * wt[:, ch:ch + 1]
        gram = dw.T @ design
        scale = float(np.mean(np.diag(gram)[:n])) or 1.0
        gram[:n, :n] += ridge * scale * np.eye(n)
        if k is not None:
            gram[:n, :n] += smoothing * scale * k
        lhs = np.zeros((n + 6, n + 6))
        lhs[:n + 3, :n + 3] = gram
        lhs[:n, n + 3:] = pc
        lhs[n + 3:, :n] = pc.T
        rhs = np.zeros(n + 6)
        rhs[:n + 3] = dw.T @ y[:, ch]
        try:
            sol = np.linalg.solve(lhs, rhs)
        except np.linalg.LinAlgError:
            sol = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
        if not np.all(np.isfinite(sol)):
            raise ValueError("the least-squares spline system is singular")
        w_out[:, ch], v_out[:, ch] = sol[:n], sol[n:n + 3]
    return w_out, v_out


def robust_fit(centers: np.ndarray, query: np.ndarray, values: np.ndarray, weights: np.ndarray,
               order: int, *, smoothing: float = 0.0, rounds: int = 4, two_sided: bool = False,
               ceiling: tuple[np.ndarray, np.ndarray] | None = None) -> SplineParams:
    """Robust weighted least-squares spline (iteratively reweighted :func:`solve_lstsq`).

    After each solve, a residual ``r`` beyond the median gets the weight
    ``w / (1 + ((r - median) / (2 s))**2)`` with ``s`` its robust sigma: only positive
    residuals (stars, objects above the sky) by default, both signs with ``two_sided``.

    Parameters
    ----------
    centers : ndarray (N, 2)
    query : ndarray (P, 2)
    values, weights : ndarray (P, C)
    order : int
    smoothing : float
        Bending-energy weight (see :func:`solve_lstsq`).
    rounds : int
        Reweighting rounds after the first solve.
    two_sided : bool
        Down-weight negative outliers too.
    ceiling : (ndarray (Q, 2), ndarray (Q, C)), optional
        Points the spline must not rise above, and their bounds (for pixels left out of
        the fit, such as masked objects: the sky is never brighter than the image).
        Where the spline exceeds a bound, the bound joins the fit as a value, weight 1.

    Returns
    -------
    SplineParams
        float64 parameters.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> q = rng.uniform(0, 1, (2000, 2))
    >>> y = (0.2 + 0.1 * q[:, :1]) + rng.normal(0, 0.01, (2000, 1))
    >>> y[:200] += 5.0                                     # bright outliers
    >>> c = np.array([[0.25, 0.25], [0.25, 0.75], [0.75, 0.25], [0.75, 0.75]])
    >>> s = robust_fit(c, q, y, np.ones_like(y), 2)
    >>> bool(abs(s(np.array([[0.5, 0.5]]))[0, 0] - 0.25) < 0.01)
    True
    """
    y = np.asarray(values, np.float64)
    wt = np.asarray(weights, np.float64)
    cen = np.asarray(centers, np.float64)
    rw = wt.copy()
    # The kernels at the pixels (and at the ceiling's points) are made once, for every
    # solve and residual of the rounds.
    design = _design(cen, query, order)
    d_all, y_all, capped = design, y, None
    if ceiling is not None:
        cq, cv = ceiling
        d_ceiling = _design(cen, cq, order)
    for k in range(rounds + 1):
        w_all = rw if capped is None else np.concatenate([rw, capped])
        w, v = _solve_design(cen, d_all, y_all, w_all, order, RIDGE, smoothing)
        if ceiling is not None:
            over = (_values(d_ceiling, w, v) > cv).astype(np.float64)
            capped = over if capped is None else np.maximum(capped, over)
            d_all, y_all = np.concatenate([design, d_ceiling]), np.concatenate([y, cv])
            if k == rounds and capped.any():
                w, v = _solve_design(cen, d_all, y_all, np.concatenate([rw, capped]), order,
                                     RIDGE, smoothing)
        if k == rounds:
            break
        r = y - _values(design, w, v)
        for c in range(y.shape[1]):
            used = wt[:, c] > 0
            if not used.any():
                continue
            centre = np.median(r[used, c])
            scale = 2.0 * robust_sigma(r[used, c]) + 1e-12
            excess = (r[:, c] - centre) / scale
            excess = np.abs(excess) if two_sided else np.maximum(excess, 0.0)
            rw[:, c] = wt[:, c] / (1.0 + excess**2)
    return SplineParams(cen, w, v, order)


def _values(design: np.ndarray, w: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A spline's values from its :func:`_design` matrix (weights ``w``, linear term ``v``)."""
    n = len(w)
    return design[:, :n] @ w + design[:, n:] @ v


def _chunk_rows(width: int, n_centers: int, budget_bytes: int) -> int:
    # Each evaluated pixel holds two float64 temporaries per centre.
    per_row = max(1, width * n_centers * 16)
    return max(1, budget_bytes // per_row)


def _kernel_into(d2: np.ndarray, out: np.ndarray, order: int) -> np.ndarray:
    """:func:`kernel` without its factor 0.5 (orders 2 and 4), written into ``out``.

    ``d2`` is floored in place and used as scratch (order 4 leaves its log there).
    Returns ``out``.
    """
    np.maximum(d2, D2_FLOOR, out=d2)
    if order in (1, 3):
        np.sqrt(d2, out=out)
        if order == 3:
            out *= d2
    elif order == 2:
        np.log(d2, out=out)
        out *= d2
    else:
        np.multiply(d2, d2, out=out)
        out *= np.log(d2, out=d2)
    return out


def evaluate_grid(params: SplineParams, rows: np.ndarray, cols: np.ndarray, unit: float,
                  budget_bytes: int = 4 << 20, on_chunk=None) -> np.ndarray:
    """Exact spline values on the grid ``rows x cols`` of full-resolution pixel indices.

    On a grid the squared distances are separable, ``dy^2 + dx^2``, so each row chunk
    costs one addition before the kernel. Chunks are sized so their two temporaries
    (about ``budget_bytes``) stay in cache and are reused from chunk to chunk (three times
    faster than full pairwise distances in one large chunk: benchmarks/README.md).

    Returns
    -------
    ndarray, shape (len(rows), len(cols), C), float32
    """
    qy = (np.asarray(rows, dtype=np.float64) + 0.5) / unit
    qx = (np.asarray(cols, dtype=np.float64) + 0.5) / unit
    centers = np.asarray(params.centers, np.float64)
    dy2 = (qy[:, None] - centers[None, :, 0]) ** 2                 # (rows, N)
    dx2 = (qx[:, None] - centers[None, :, 1]) ** 2                 # (cols, N)
    weights = np.asarray(params.w, np.float64) * (0.5 if params.order in (2, 4) else 1.0)
    v = np.asarray(params.v, np.float64)
    along_x = qx[:, None] * v[2]                                    # (cols, C)
    n_rows, n_cols, n_centers = len(qy), len(qx), len(centers)
    out = np.empty((n_rows, n_cols, params.n_channels), dtype=np.float32)
    step = min(n_rows, _chunk_rows(n_cols, n_centers, budget_bytes)) or 1
    d2 = np.empty((step, n_cols, n_centers))
    phi = np.empty_like(d2)
    n_chunks = -(-n_rows // step)
    if on_chunk is not None:
        on_chunk(0, n_chunks)
    for k, start in enumerate(range(0, n_rows, step)):
        r = min(step, n_rows - start)
        np.add(dy2[start:start + r, None, :], dx2[None, :, :], out=d2[:r])
        values = (_kernel_into(d2[:r], phi[:r], params.order).reshape(r * n_cols, n_centers)
                  @ weights).reshape(r, n_cols, -1)
        values += along_x
        values += (v[0] + qy[start:start + r, None] * v[1])[:, None, :]
        out[start:start + r] = values
        if on_chunk is not None:
            on_chunk(k + 1, n_chunks)
    return out


def evaluate_image(params: SplineParams, shape: tuple[int, int], step: int = 1,
                   budget_bytes: int = 4 << 20, on_chunk=None, affine=None,
                   out: np.ndarray | None = None) -> np.ndarray:
    """Spline values at every pixel of a full-resolution image of ``shape`` (H, W).

    With ``step > 1`` the spline is evaluated exactly on every ``step``-th row and
    column (plus a margin) and brought to full resolution by separable cubic
    convolution (Catmull-Rom, 4 taps): a small pass along the rows, then down the
    columns one band of ``step`` output rows at a time, as a dense product of the band's
    weights (``step`` x 5 coarse rows) with those rows, written straight into the
    output. For a smooth background, with the default step (see
    :func:`~bgopt_plugin.core.evaluation_step`), this agrees with the exact values to
    about 5e-5 of the model's range (the benchmarks' "upsample err" column) at about the
    cost of a memory copy (benchmarks/README.md).

    ``affine = (scale, offset)``, per channel, maps the values to ``value * scale +
    offset``; on the coarse path it is applied to the coarse grid, which is exact because
    the interpolation weights sum to 1, so it costs no pass over the image. ``out``, a
    C-contiguous (H, W, C) float32 array, receives the values instead of a new array.

    Returns
    -------
    ndarray, shape (H, W, C), float32
    """
    h, w = shape
    unit = float(max(h, w))
    if step <= 1 or min(h, w) < 4 * step:
        values = evaluate_grid(params, np.arange(h), np.arange(w), unit, budget_bytes, on_chunk)
        if affine is not None:
            values *= np.float32(affine[0])
            values += np.float32(affine[1])
        if out is None:
            return values
        out[...] = values
        return out
    ry = np.arange(-step, h + 2 * step, step, dtype=np.float64)
    rx = np.arange(-step, w + 2 * step, step, dtype=np.float64)
    coarse = evaluate_grid(params, ry, rx, unit, budget_bytes)          # (ny, nx, C)
    if affine is not None:
        coarse = coarse * np.float32(affine[0]) + np.float32(affine[1])
    ny, nx, n_chan = coarse.shape
    # Each band of output pixels reads only the few coarse values its 4 taps reach
    # (``_taps``), so both passes are small dense products written in place. Along the
    # rows: (ny, w, C), for bands of 10 steps of columns (batched over the coarse rows).
    mat_x = _cubic_matrix(rx, w)
    taps = _taps(mat_x)
    along = np.empty((ny, w, n_chan), dtype=np.float32)
    for lo in range(0, w, 10 * step):
        hi = min(w, lo + 10 * step)
        np.matmul(mat_x[lo:hi, taps(lo, hi)], coarse[:, taps(lo, hi)], out=along[:, lo:hi])
    along = along.reshape(ny, w * n_chan)
    # Down the columns, one band of ``step`` output rows at a time (about 4 multiply-adds
    # per output value, written straight into it): a sparse product over the whole
    # height, which writes a temporary, was 2.3 times slower.
    mat_y = _cubic_matrix(ry, h)
    taps = _taps(mat_y)
    result = np.empty((h, w, n_chan), dtype=np.float32) if out is None else out
    flat = result.reshape(h, w * n_chan)     # a view: out must be C-contiguous
    bands = range(0, h, step)
    n_chunks = len(bands)
    if on_chunk is not None:
        on_chunk(0, n_chunks)
    for k, lo in enumerate(bands):
        hi = min(h, lo + step)
        np.matmul(mat_y[lo:hi, taps(lo, hi)], along[taps(lo, hi)], out=flat[lo:hi])
        if on_chunk is not None and ((k + 1) % 16 == 0 or k + 1 == n_chunks):
            on_chunk(k + 1, n_chunks)
    return result


def _taps(mat: np.ndarray):
    """``taps(lo, hi)``: a slice of the columns of the band matrix ``mat`` that holds
    every non-zero weight of its rows ``lo:hi``."""
    used = mat != 0
    # The first and last used columns of each row, made monotonic (a row whose pixel
    # falls on the grid uses one column, to the right of its neighbour's first).
    first = np.minimum.accumulate(used.argmax(axis=1)[::-1])[::-1]
    last = np.maximum.accumulate(mat.shape[1] - used[:, ::-1].argmax(axis=1))
    return lambda lo, hi: slice(int(first[lo]), int(last[hi - 1]))


def _cubic_matrix(coarse: np.ndarray, n: int) -> np.ndarray:
    """Dense (n, len(coarse)) Catmull-Rom weights from a regular ``coarse`` grid to the
    pixel indices 0..n-1 (which the grid covers with one step of margin each side); four
    per row, float32."""
    step = coarse[1] - coarse[0]
    pos = (np.arange(n, dtype=np.float64) - coarse[0]) / step
    base = np.floor(pos).astype(np.int64)
    t = pos - base
    weights = np.stack([((2 - t) * t - 1) * t / 2, ((3 * t - 5) * t * t + 2) / 2,
                        ((4 - 3 * t) * t + 1) * t / 2, (t - 1) * t * t / 2], axis=1)
    cols = np.clip(base[:, None] + np.arange(-1, 3), 0, len(coarse) - 1)
    mat = np.zeros((n, len(coarse)), dtype=np.float32)
    np.add.at(mat, (np.repeat(np.arange(n), 4), cols.ravel()), weights.ravel().astype(np.float32))
    return mat
