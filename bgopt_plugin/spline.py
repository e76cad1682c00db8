"""Polyharmonic spline with a linear term, solved and applied with TensorFlow ops.

Coordinates are normalised: a full-resolution pixel ``(row, col)`` sits at
``((row + 0.5) / L, (col + 0.5) / L)`` with ``L`` the long side of the image, so the
same spline evaluates at any resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._tf import tf

__all__ = ["SplineParams", "kernel", "solve", "apply", "evaluate_grid", "evaluate_image"]

_EPS = 1e-10


def kernel(d2, order: int):
    """Polyharmonic radial basis as a function of the squared distance ``d2``.

    order 1: r, 2: r^2 log r, 3: r^3, 4: r^4 log r.
    """
    t = tf()
    d2 = t.maximum(d2, _EPS)
    if order == 1:
        return t.sqrt(d2)
    if order == 2:
        return 0.5 * d2 * t.math.log(d2)
    if order == 3:
        return d2 * t.sqrt(d2)
    if order == 4:
        return 0.5 * d2 * d2 * t.math.log(d2)
    raise ValueError(f"order must be 1, 2, 3 or 4, got {order!r}")


def _sqdist(a, b):
    """Exact pairwise squared distances (used by the float64 solves)."""
    t = tf()
    diff = a[:, None, :] - b[None, :, :]
    return t.reduce_sum(diff * diff, axis=-1)


def _sqdist_fast(a, b):
    """Pairwise squared distances as |a|^2 + |b|^2 - 2 a.b: one matmul, cheap gradients."""
    t = tf()
    d2 = (t.reduce_sum(a * a, axis=1)[:, None] + t.reduce_sum(b * b, axis=1)[None, :]
          - 2.0 * t.matmul(a, b, transpose_b=True))
    return t.maximum(d2, 0.0)


def apply(query, centers, w, v, order: int, fast: bool = False):
    """Evaluate the spline at ``query`` points.

    Parameters
    ----------
    query : tensor (P, 2)
    centers : tensor (N, 2)
    w : tensor (N, C)
        Radial weights.
    v : tensor (3, C)
        Linear term: constant, y and x coefficients.
    order : int
    fast : bool
        Use the one-matmul distance form (training); the default exact form is
        better conditioned for evaluation.

    Returns
    -------
    tensor (P, C)
    """
    t = tf()
    phi = kernel((_sqdist_fast if fast else _sqdist)(query, centers), order)
    return t.matmul(phi, w) + v[0] + query[:, 0:1] * v[1] + query[:, 1:2] * v[2]


def solve(centers: np.ndarray, values: np.ndarray, order: int, regularization: float = 0.0):
    """Weights of the spline through ``values`` at ``centers``.

    Solves ``[[A + reg I, B], [B^T, 0]] [w; v] = [f; 0]`` with ``A`` the kernel matrix and
    ``B = [1, y, x]``, in float64.

    Returns
    -------
    w : ndarray (N, C), v : ndarray (3, C), both float32
    """
    t = tf()
    c = t.constant(centers, dtype=t.float64)
    f = t.constant(values, dtype=t.float64)
    n = c.shape[0]
    a = kernel(_sqdist(c, c), order) + regularization * t.eye(n, dtype=t.float64)
    b = t.concat([t.ones((n, 1), dtype=t.float64), c], axis=1)
    top = t.concat([a, b], axis=1)
    bottom = t.concat([t.transpose(b), t.zeros((3, 3), dtype=t.float64)], axis=1)
    lhs = t.concat([top, bottom], axis=0)
    rhs = t.concat([f, t.zeros((3, f.shape[1]), dtype=t.float64)], axis=0)
    sol = t.linalg.solve(lhs, rhs).numpy()
    if not np.all(np.isfinite(sol)):
        raise ValueError("the spline system is singular (control points coincide?)")
    return sol[:n].astype(np.float32), sol[n:].astype(np.float32)


@dataclass(frozen=True)
class SplineParams:
    """A fitted spline: centres (N, 2) in normalised (y, x), weights (N, C), linear term (3, C)."""

    centers: np.ndarray
    w: np.ndarray
    v: np.ndarray
    order: int

    def __call__(self, query: np.ndarray) -> np.ndarray:
        """Evaluate at normalised (P, 2) query points; returns (P, C) float32."""
        t = tf()
        out = apply(t.constant(query, t.float32), t.constant(self.centers), t.constant(self.w),
                    t.constant(self.v), self.order)
        return out.numpy()


def _chunk_rows(width: int, n_centers: int, budget_bytes: int) -> int:
    # Each evaluated pixel holds about 4 float32 temporaries per centre.
    per_row = max(1, width * n_centers * 16)
    return max(1, budget_bytes // per_row)


def evaluate_grid(
    params: SplineParams,
    rows: np.ndarray,
    cols: np.ndarray,
    unit: float,
    budget_bytes: int = 64 << 20,
    on_chunk=None,
) -> np.ndarray:
    """Exact spline values on the grid ``rows x cols`` of full-resolution pixel indices.

    Evaluated in row chunks so memory stays under about ``budget_bytes``.

    Returns
    -------
    ndarray, shape (len(rows), len(cols), C), float32
    """
    t = tf()
    rows = np.asarray(rows, dtype=np.float64)
    cols = np.asarray(cols, dtype=np.float64)
    n_chan = params.w.shape[1]
    out = np.empty((len(rows), len(cols), n_chan), dtype=np.float32)
    step = _chunk_rows(len(cols), len(params.centers), budget_bytes)
    centers, w, v = t.constant(params.centers), t.constant(params.w), t.constant(params.v)
    qx = ((cols + 0.5) / unit).astype(np.float32)
    n_chunks = -(-len(rows) // step)
    for k, start in enumerate(range(0, len(rows), step)):
        rr = ((rows[start:start + step] + 0.5) / unit).astype(np.float32)
        q = np.stack(np.meshgrid(rr, qx, indexing="ij"), axis=-1).reshape(-1, 2)
        vals = apply(t.constant(q), centers, w, v, params.order).numpy()
        out[start:start + len(rr)] = vals.reshape(len(rr), len(cols), n_chan)
        if on_chunk is not None:
            on_chunk(k + 1, n_chunks)
    return out


def evaluate_image(
    params: SplineParams,
    shape: tuple[int, int],
    step: int = 1,
    budget_bytes: int = 64 << 20,
    on_chunk=None,
) -> np.ndarray:
    """Spline values at every pixel of a full-resolution image of ``shape`` (H, W).

    With ``step > 1`` the spline is evaluated exactly on every ``step``-th row and
    column (plus a margin) and brought to full resolution by separable cubic-spline
    interpolation (two small matrix products per channel), which is much faster for a
    smooth background and agrees with the exact values far below the noise (see the
    benchmarks' "upsample err" column).

    Returns
    -------
    ndarray, shape (H, W, C), float32
    """
    h, w = shape
    unit = float(max(h, w))
    if step <= 1 or min(h, w) < 4 * step:
        return evaluate_grid(params, np.arange(h), np.arange(w), unit, budget_bytes, on_chunk)
    ry = np.arange(-step, h + 2 * step, step, dtype=np.float64)
    rx = np.arange(-step, w + 2 * step, step, dtype=np.float64)
    coarse = evaluate_grid(params, ry, rx, unit, budget_bytes)
    mat_y = _interp_matrix(ry, np.arange(h, dtype=np.float64))
    mat_x = _interp_matrix(rx, np.arange(w, dtype=np.float64))
    n_chan = coarse.shape[-1]
    out = np.empty((h, w, n_chan), dtype=np.float32)
    block = max(1, budget_bytes // (4 * w))
    for c in range(n_chan):
        cols_done = coarse[..., c] @ mat_x.T          # (len(ry), w)
        for start in range(0, h, block):
            out[start:start + block, :, c] = mat_y[start:start + block] @ cols_done
        if on_chunk is not None:
            on_chunk(c + 1, n_chan)
    return out


def _interp_matrix(coarse: np.ndarray, fine: np.ndarray) -> np.ndarray:
    """Matrix taking values at ``coarse`` to their cubic-spline interpolant at ``fine``."""
    from scipy.interpolate import make_interp_spline

    basis = make_interp_spline(coarse, np.eye(len(coarse)), k=3)
    mat = basis(fine)
    # The weights decay fast away from each point; zero the tiny ones so float32 does not
    # turn them into denormals, which slow matrix products tenfold.
    mat[np.abs(mat) < 1e-9] = 0.0
    return np.ascontiguousarray(mat, dtype=np.float32)


def solve_lstsq(
    centers: np.ndarray,
    query: np.ndarray,
    values: np.ndarray,
    weights: np.ndarray,
    order: int,
    ridge: float = 1e-6,
):
    """Weighted least-squares weights of a spline with fixed ``centers``.

    Minimises ``sum weights * (values - spline(query))**2 + ridge * |w|^2`` over the
    radial weights ``w`` and the linear term ``v`` (float64 normal equations).

    Parameters
    ----------
    centers : ndarray (N, 2)
    query : ndarray (P, 2)
    values, weights : ndarray (P, C)
    order : int
    ridge : float
        Tikhonov damping of the radial weights, relative to the mean diagonal.

    Returns
    -------
    w : ndarray (N, C), v : ndarray (3, C), both float32
    """
    t = tf()
    c = t.constant(centers, t.float64)
    q = t.constant(query, t.float64)
    phi = kernel(_sqdist(q, c), order)
    design = t.concat([phi, t.ones((q.shape[0], 1), t.float64), q], axis=1)
    n = centers.shape[0]
    n_chan = values.shape[1]
    w_out = np.empty((n, n_chan), np.float32)
    v_out = np.empty((3, n_chan), np.float32)
    for k in range(n_chan):
        wk = t.constant(weights[:, k:k + 1], t.float64)
        gram = t.matmul(design * wk, design, transpose_a=True)
        scale = t.reduce_mean(t.linalg.diag_part(gram)[:n])
        damp = t.concat([t.fill([n], ridge * scale), t.zeros([3], t.float64)], axis=0)
        rhs = t.matmul(design * wk, t.constant(values[:, k:k + 1], t.float64), transpose_a=True)
        sol = t.linalg.solve(gram + t.linalg.diag(damp), rhs).numpy()[:, 0]
        if not np.all(np.isfinite(sol)):
            raise ValueError("the least-squares spline system is singular")
        w_out[:, k], v_out[:, k] = sol[:n], sol[n:]
    return w_out, v_out
