"""Fits used by the profilers: alpha-beta for collectives, fixed + per-sample for compute.

Both are small weighted least-squares problems solved in closed form (no numpy needed), made
robust by dropping points whose relative residual is far above the median one and refitting.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def median(xs: Sequence[float]) -> float:
    if not xs:
        raise ValueError("median of no values")
    return float(statistics.median(xs))


def summarize_ms(samples: Sequence[float], cuda: bool) -> float:
    """One time from repeated runs: the median on GPU; the mean on CPU.

    On CPU the time of one operation varies from run to run by a factor of two or more even on
    an otherwise idle machine (gloo's transport threads and the ranks are scheduled on the same
    cores; a 4 MB gloo all-reduce between 2 processes on 2 cores measured 3-7 ms at best and
    10-12 ms median). A training step is a sum of many such operations, so its time is close
    to the sum of their *means*: the mean is the estimate the cost model needs. (Until
    2026-12-03 the minimum was used; it predicted tensor-parallel communication 2.7x too fast
    on a 2-process GPT, see docs/cost_model.md, "Corrections from measurement".)"""
    if not samples:
        raise ValueError("summarize_ms: no samples")
    return median(samples) if cuda else float(statistics.fmean(samples))


def _wls_line(xs: Sequence[float], ys: Sequence[float], ws: Sequence[float]) -> tuple[float, float]:
    """Weighted least squares ``y = a + b*x``; returns (a, b)."""
    sw = sum(ws)
    mx = sum(w * x for w, x in zip(ws, xs, strict=True)) / sw
    my = sum(w * y for w, y in zip(ws, ys, strict=True)) / sw
    sxx = sum(w * (x - mx) ** 2 for w, x in zip(ws, xs, strict=True))
    sxy = sum(w * (x - mx) * (y - my) for w, x, y in zip(ws, xs, ys, strict=True))
    b = sxy / sxx if sxx > 0 else 0.0
    return my - b * mx, b


def _wls_through(xs: Sequence[float], ys: Sequence[float], ws: Sequence[float], a: float) -> float:
    """Slope of ``y = a + b*x`` with the intercept ``a`` fixed."""
    num = sum(w * x * (y - a) for w, x, y in zip(ws, xs, ys, strict=True))
    den = sum(w * x * x for w, x in zip(ws, xs, strict=True))
    return num / den if den > 0 else 0.0


def robust_line(xs: Sequence[float], ys: Sequence[float], rounds: int = 2,
                cutoff: float = 4.0, protect: Sequence[int] = (), relative: bool = True,
                ) -> tuple[float, float, list[int]]:
    """Fit ``y = a + b*x`` with relative-error weights (``1/y^2``; plain least squares with
    ``relative=False``), ``a >= 0``, ``b > 0``.

    Relative weights keep small values from being drowned by large ones. Points whose
    relative residual exceeds ``cutoff`` times the median relative residual (and 10%) are
    dropped and the line refitted, ``rounds`` times at most; indices in ``protect`` are never
    dropped. Returns ``(a, b, kept indices)``. With a non-positive slope (pure noise) the slope
    falls back to the largest point's ``(y - a) / x`` so a bandwidth is always positive.
    """
    if len(xs) != len(ys) or not xs:
        raise ValueError("robust_line: need as many y as x values, at least one")
    keep = list(range(len(xs)))
    a = b = 0.0
    for r in range(rounds + 1):
        kx, ky = [xs[i] for i in keep], [ys[i] for i in keep]
        ws = [1.0 / max(y, 1e-12) ** 2 if relative else 1.0 for y in ky]
        a, b = _wls_line(kx, ky, ws) if len(set(kx)) >= 2 else (0.0, 0.0)
        if a < 0:
            a = 0.0
        if b <= 0 or len(set(kx)) < 2:
            b = _wls_through(kx, ky, ws, a)
        if b <= 0:  # y does not grow with x at all
            i = max(keep, key=lambda j: xs[j])
            a = min(a, ys[i] / 2)
            b = max((ys[i] - a) / max(xs[i], 1e-12), 1e-15)
        if r == rounds or len(keep) <= 3:
            break
        rel = {i: abs(ys[i] - (a + b * xs[i])) / max(ys[i], 1e-12) for i in keep}
        limit = max(cutoff * statistics.median(rel.values()), 0.10)
        new_keep = [i for i in keep if rel[i] <= limit or i in protect]
        if len(new_keep) == len(keep) or len(new_keep) < 3:
            break
        keep = new_keep
    return a, b, keep


def fit_alpha_beta(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """``[(bytes, ms), ...]`` -> ``(alpha_ms, bandwidth_gbps)`` for ``ms = alpha + bytes / (bw * 1e6)``.

    Real curves are not straight lines (caches, protocol switches), so the two parameters come
    from the regime each describes: the bandwidth from a least-squares fit (absolute errors:
    the time of large messages is what matters) of the larger half of the sizes, after
    dropping outliers found by a relative-error fit (the largest size is never dropped: it is
    the regime gradient all-reduces live in); the latency as the median over the smaller half of
    ``ms - bytes / bandwidth`` (clamped at 0). With fewer than 4 points, one fit of all of them.
    """
    pts = sorted((float(b), float(t)) for b, t in points)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    if len(pts) < 4:
        a, b, _ = robust_line(xs, ys)
        return a, 1.0 / (b * 1e6)
    half = len(pts) // 2
    ux, uy = xs[half - 1:], ys[half - 1:]  # the larger half, sharing the middle point
    _, _, kept = robust_line(ux, uy, protect=(len(ux) - 1,))  # outliers: by relative residual
    _, b, _ = robust_line([ux[i] for i in kept], [uy[i] for i in kept], rounds=0, relative=False)
    alpha = max(0.0, median([y - b * x for x, y in zip(xs[:half], ys[:half], strict=True)]))
    return alpha, 1.0 / (b * 1e6)


def fit_fixed_per_sample(by_degree: dict[int, Sequence[tuple[int, float]]]) -> tuple[float, dict[int, float]]:
    """Compute times ``{degree: [(batch, ms), ...]}`` -> ``(fixed_ms, {degree: ms_per_sample})``.

    The cost model has one fixed (per micro-batch) time per layer type and a per-sample time
    per degree. The fixed part is the smallest intercept over the degrees (launch overheads do
    not shrink with the shard; the smallest intercept is the one least inflated by noise),
    then each degree's per-sample slope is refitted through it.
    """
    intercepts = []
    for pts in by_degree.values():
        xs, ys = [float(b) for b, _ in pts], [float(t) for _, t in pts]
        a, _, _ = robust_line(xs, ys, rounds=0)
        intercepts.append(a)
    fixed = max(0.0, min(intercepts))
    per_sample = {}
    for d, pts in by_degree.items():
        xs, ys = [float(b) for b, _ in pts], [float(t) for _, t in pts]
        ws = [1.0 / max(y, 1e-12) ** 2 for y in ys]
        slope = _wls_through(xs, ys, ws, fixed)
        if slope <= 0:
            slope = max(ys) / max(xs)
        per_sample[d] = slope
    return fixed, per_sample
