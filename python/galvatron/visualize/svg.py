"""Inline SVG charts drawn from the report data (see :mod:`galvatron.visualize.data`).

Every text that comes from a plan, a model or a file goes through :func:`esc`; every drawn
quantity carries its exact value in a ``data-value`` attribute so tests can read back what is
shown. Charts use CSS classes (``.axis``, ``.grid``, ...) styled by the page.
"""

from __future__ import annotations

import html
import math
from typing import Any

from galvatron.visualize.data import MEM_COMPONENTS, TIME_COMPONENTS

GiB = 2**30
MEM_COLORS = {"param_bytes": "#4e79a7", "grad_bytes": "#f28e2b", "optimizer_bytes": "#e15759",
              "activation_bytes": "#76b7b2", "transient_bytes": "#59a14f", "buffer_bytes": "#edc948",
              "overhead_bytes": "#bab0ac"}
MEM_NAMES = {"param_bytes": "parameters", "grad_bytes": "gradients", "optimizer_bytes": "optimizer states",
             "activation_bytes": "activations", "transient_bytes": "transient", "buffer_bytes": "buffers",
             "overhead_bytes": "overhead"}
TIME_COLORS = {"compute_ms": "#4e79a7", "tp_comm_ms": "#f28e2b", "sp_comm_ms": "#ff9da7",
               "dp_comm_ms": "#e15759", "p2p_ms": "#76b7b2", "bubble_ms": "#bab0ac",
               "redistribution_ms": "#b07aa1", "optimizer_ms": "#59a14f"}
TIME_NAMES = {"compute_ms": "compute", "tp_comm_ms": "tensor-parallel comm", "sp_comm_ms": "sequence-parallel comm",
              "dp_comm_ms": "gradient sync (dp)", "p2p_ms": "pipeline p2p", "bubble_ms": "pipeline bubble",
              "redistribution_ms": "redistribution", "optimizer_ms": "optimizer step"}
STRATEGY_ROWS = ("tp", "sp", "dp", "dp_type", "ckpt")
ROW_NAMES = {"tp": "tensor par.", "sp": "sequence par.", "dp": "data par.", "dp_type": "dp sharding",
             "ckpt": "checkpointing"}
FIXED_COLORS = {
    "tp1": "#eef2f7", "tp2": "#a9c4e4", "tp4": "#5b8fc9", "tp8": "#2c5f9e", "tp16": "#173a66",
    "none": "#eeeeee", "megatron": "#f6c28b", "ulysses2": "#c6e5b3", "ulysses4": "#86c77a",
    "ulysses8": "#3f9a3a", "ulysses16": "#1e6b1e", "ddp": "#eeeeee", "zero1": "#dccbee", "zero2": "#b08fd8",
    "zero3": "#7a4fb5", "no ckpt": "#eeeeee", "ckpt": "#e8a23a", "dp1": "#f3f3f3", "dp2": "#f9dcc4",
    "dp4": "#f4b183", "dp8": "#e07b39", "dp16": "#b5531b", "dp32": "#7f3510",
}
FALLBACK = ("#9c755f", "#ff9da7", "#bab0ac", "#76b7b2", "#edc948")


def esc(text: Any) -> str:
    """Escape text for HTML/SVG element content and quoted attributes."""
    return html.escape(str(text), quote=True)


def num(x: float) -> str:
    """Exact value for a data attribute (repr round-trips a float)."""
    return repr(float(x)) if isinstance(x, float) else str(x)


def color_of(label: str) -> str:
    base = label.split(" ")[0] if label.endswith(" strided") else label
    return FIXED_COLORS.get(base, FALLBACK[sum(map(ord, base)) % len(FALLBACK)])


def text_color(fill: str) -> str:
    r, g, b = (int(fill[i:i + 2], 16) for i in (1, 3, 5))
    return "#ffffff" if 0.299 * r + 0.587 * g + 0.114 * b < 140 else "#1f2328"


def nice_ticks(vmax: float, n: int = 5) -> list[float]:
    if vmax <= 0:
        return [0.0]
    raw = vmax / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return [i * step for i in range(int(vmax / step + 1e-9) + 1)]


def short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def text_width(text: str, font_px: float) -> float:
    """A generous estimate of a text's width in a sans-serif font (0.62 em per character; digits
    and most letters are narrower), for laying out labels without a browser."""
    return len(text) * 0.62 * font_px


def fit_chars(room_px: float, font_px: float) -> int:
    """How many characters fit in ``room_px`` by :func:`text_width`."""
    return max(4, int(room_px / (0.62 * font_px)))


def fmt_gib(b: float) -> str:
    return f"{b / GiB:.2f} GiB"


def fmt_ms(ms: float) -> str:
    if abs(ms) < 5e-4:
        return "0 ms"
    return f"{ms:,.1f} ms" if ms >= 1 else f"{ms:.3f} ms"


# ---------------------------------------------------------------------------------- memory
def memory_chart(view: dict[str, Any], budget: int, plan_id: str) -> str:
    """Stacked bars of predicted peak memory per pipeline stage against the budget line."""
    stages = view["prediction"]["stage_memory"]
    n = len(stages)
    slot = max(18, min(84, 400 // max(n, 1)))
    if n <= 16:  # room for every bar's total (11 px bold) without touching its neighbours
        widest = max(text_width(f"{m['total_bytes'] / GiB:.1f}", 11) for m in stages)
        slot = max(slot, math.ceil(widest) + 4)  # labels are centred one slot apart
    left, top, h = 58, 24, 260
    plot_right = left + slot * n + 8
    width = plot_right + 92
    vmax = max([budget] + [m["total_bytes"] for m in stages]) * 1.1
    y = lambda v: top + h - h * v / vmax  # noqa: E731
    out = [f'<svg class="chart mem-chart" data-plan="{esc(plan_id)}" width="{width}" height="{top + h + 40}" '
           f'viewBox="0 0 {width} {top + h + 40}" role="img" aria-label="peak memory per pipeline stage">']
    for t in nice_ticks(vmax / GiB):
        yy = y(t * GiB)
        out.append(f'<line class="grid" x1="{left}" x2="{plot_right}" y1="{yy:.1f}" y2="{yy:.1f}"/>'
                   f'<text class="axis" x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{t:g}</text>')
    out.append(f'<text class="axis" x="12" y="{top + h / 2:.0f}" transform="rotate(-90 12 {top + h / 2:.0f})" '
               f'text-anchor="middle">GiB per device</text>')
    bw = slot * 0.68
    for s, m in enumerate(stages):
        x = left + s * slot + (slot - bw) / 2
        over = m["total_bytes"] > budget
        out.append(f'<g class="mem-stage{" over" if over else ""}" data-stage="{s}" data-value="{m["total_bytes"]}">')
        acc = 0
        for c in MEM_COMPONENTS:
            v = m[c]
            if v > 0:
                y0, y1 = y(acc + v), y(acc)
                out.append(f'<rect class="seg" data-component="{c}" data-value="{v}" x="{x:.1f}" y="{y0:.2f}" '
                           f'width="{bw:.1f}" height="{max(y1 - y0, 0.5):.2f}" fill="{MEM_COLORS[c]}">'
                           f'<title>stage {s}: {MEM_NAMES[c]} {fmt_gib(v)}</title></rect>')
            acc += v
        label = f"{m['total_bytes'] / GiB:.1f}"
        if n <= 16:
            ly = y(acc) - 4
            if abs(ly - y(budget)) < 12:  # keep the total clear of the budget line
                ly = min(ly, y(budget) - 4)
            out.append(f'<text class="val" x="{x + bw / 2:.1f}" y="{ly:.1f}" text-anchor="middle">{label}</text>')
        out.append("</g>")
        if n <= 16 or s % math.ceil(n / 16) == 0:
            out.append(f'<text class="axis" x="{x + bw / 2:.1f}" y="{top + h + 16}" text-anchor="middle">{s}</text>')
    yb = y(budget)
    out.append(f'<line class="budget" data-value="{budget}" x1="{left}" x2="{plot_right + 6}" y1="{yb:.1f}" '
               f'y2="{yb:.1f}"/><text class="budget-label" x="{plot_right + 10}" y="{yb - 2:.1f}">budget</text>'
               f'<text class="budget-label" x="{plot_right + 10}" y="{yb + 11:.1f}">{budget / GiB:.1f} GiB</text>')
    out.append(f'<text class="axis" x="{left + slot * n / 2:.0f}" y="{top + h + 34}" text-anchor="middle">'
               'pipeline stage</text></svg>')
    return "".join(out)


# ---------------------------------------------------------------------------------- strategy
def _runs(values: list[str], chunks: list[int]) -> list[tuple[int, int, str]]:
    runs: list[tuple[int, int, str]] = []
    for i, v in enumerate(values):
        if runs and runs[-1][2] == v and chunks[i] == chunks[i - 1]:
            runs[-1] = (runs[-1][0], i, v)
        else:
            runs.append((i, i, v))
    return runs


def _row_values(view: dict[str, Any]) -> dict[str, list[str]]:
    labels = view["layer_labels"]
    rows = {k: [lab[k] for lab in labels] for k in ("tp", "sp", "dp_type", "ckpt")}
    rows["dp"] = [f"dp{d}" for d in view["dp_degree"]]
    return rows


def _cell(x: float, y: float, w: float, h: float, label: str, tip: str, cls: str, extra: str = "") -> str:
    fill = color_of(label)
    s = (f'<g class="{cls}"{extra}><rect x="{x:.2f}" y="{y}" width="{max(w - 1, 0.8):.2f}" height="{h}" '
         f'fill="{fill}" rx="2"><title>{esc(tip)}</title></rect>')
    if w >= 6.2 * len(label) + 6:
        s += (f'<text class="cell" x="{x + w / 2:.1f}" y="{y + h / 2 + 4}" text-anchor="middle" '
              f'fill="{text_color(fill)}">{esc(label)}</text>')
    return s + "</g>"


def _stage_spans(split: list[int], pp: int, x0: float, cw: float, height: int) -> list[str]:
    """Background, label and left boundary line of every pipeline chunk."""
    out, start = [], 0
    for c, n in enumerate(split):
        xs, xe = x0 + start * cw, x0 + (start + n) * cw
        name = f"stage {c % pp}" + (f" · v{c // pp}" if len(split) > pp else "")
        out.append(f'<g class="stage-span" data-chunk="{c}" data-stage="{c % pp}" data-first="{start}" '
                   f'data-count="{n}"><rect class="stage-bg{c % 2}" x="{xs:.2f}" y="2" width="{xe - xs:.2f}" '
                   f'height="{height - 22}"/>')
        if xe - xs >= 6.5 * len(name) + 4:
            out.append(f'<text class="stage-label" x="{(xs + xe) / 2:.1f}" y="15" text-anchor="middle">{name}</text>')
        out.append(f'<title>{name}: layers {start}-{start + n - 1}</title></g>')
        if c:
            out.append(f'<line class="stage-boundary" x1="{xs:.2f}" x2="{xs:.2f}" y1="2" y2="{height - 20}"/>')
        start += n
    return out


def _layer_time_bars(timing: list[dict[str, float]], type_of: list[str], x0: float, cw: float, top: float,
                     bar_h: float) -> list[str]:
    """One bar per layer: predicted forward+backward time per micro-batch."""
    tmax = max((t["fwd_ms"] + t["bwd_ms"] for t in timing), default=1.0) or 1.0
    out = []
    for i, t in enumerate(timing):
        hh = max(bar_h * (t["fwd_ms"] + t["bwd_ms"]) / tmax, 0.5)
        out.append(f'<rect class="layer-time" data-layer="{i}" data-fwd="{num(t["fwd_ms"])}" '
                   f'data-bwd="{num(t["bwd_ms"])}" x="{x0 + i * cw + 0.5:.2f}" y="{top + bar_h - hh:.2f}" '
                   f'width="{max(cw - 1, 0.8):.2f}" height="{hh:.2f}"><title>layer {i} ({esc(type_of[i])}): fwd '
                   f'{fmt_ms(t["fwd_ms"])}, bwd {fmt_ms(t["bwd_ms"])} per micro-batch</title></rect>')
    return out


def strategy_map(view: dict[str, Any], model: dict[str, Any], plan_id: str) -> str:
    """Per-layer strategy strip: one row per decision, runs merged, stage boundaries marked."""
    nl = len(view["layer_labels"])
    left, emb_w, width, rh, bar_h, bar_top = 104, 58, 880, 24, 34, 26
    x0 = left + emb_w + 10
    cw = (width - x0 - 8) / nl
    rows = _row_values(view)
    types = model["layer_types"]
    rows["type"] = [types[t] for t in model["layer_type_of"]]
    names = list(STRATEGY_ROWS) + (["type"] if len(types) > 1 else [])
    chunks = [c for c, n in enumerate(view["plan"]["stage_layers"]) for _ in range(n)]
    y = bar_top + bar_h + 8
    height = y + len(names) * (rh + 4) + 26
    out = [f'<svg class="chart strategy-map" data-plan="{esc(plan_id)}" data-layers="{nl}" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="per-layer strategy map">']
    out += _stage_spans(view["plan"]["stage_layers"], view["plan"]["pp"], x0, cw, height)
    out.append(f'<text class="rowname" x="{left - 8}" y="{bar_top + bar_h / 2 + 4}" text-anchor="end">'
               'layer time</text>')
    out += _layer_time_bars(view["prediction"]["layer_timing_ms"], rows["type"], x0, cw, bar_top, bar_h)
    emb_vals = _embedding_values(view)
    for r in names:
        out.append(f'<text class="rowname" x="{left - 8}" y="{y + rh / 2 + 4}" text-anchor="end">'
                   f'{esc(ROW_NAMES.get(r, "layer type"))}</text>')
        if r in emb_vals:
            out.append(_cell(left, y, emb_w, rh, emb_vals[r], f"embedding/head: {emb_vals[r]}", "emb-cell"))
        for a, b, v in _runs(rows[r], chunks):
            tip = f"layers {a}-{b}: {v}" if a != b else f"layer {a}: {v}"
            out.append(_cell(x0 + a * cw, y, (b - a + 1) * cw, rh, v, tip, "run",
                             f' data-row="{r}" data-first="{a}" data-last="{b}"'))
        y += rh + 4
    out.append(f'<text class="axis" x="{left + emb_w / 2}" y="{y + 12}" text-anchor="middle">embed/head</text>')
    for i in range(0, nl, max(1, math.ceil(nl / 16))):
        out.append(f'<text class="axis" x="{x0 + (i + 0.5) * cw:.1f}" y="{y + 12}" text-anchor="middle">{i}</text>')
    out.append("</svg>")
    return "".join(out)


def _embedding_values(view: dict[str, Any]) -> dict[str, str]:
    e = view["plan"]["embedding"]
    sp = "megatron" if e["sp_kind"] == "megatron" else (f"ulysses{e['sp']}" if e["sp_kind"] == "ulysses" else "none")
    return {"tp": f"tp{e['tp']}", "sp": sp, "dp": f"dp{view['embedding_dp_degree']}", "dp_type": e["dp_type"],
            "ckpt": "no ckpt"}


def strategy_legend(views: list[dict[str, Any]]) -> list[tuple[str, list[tuple[str, str]]]]:
    """Per strategy row, (label, colour) of every category the shown maps use."""
    out = []
    for r in STRATEGY_ROWS:
        labels: set[str] = set()
        for v in views:
            labels |= set(_row_values(v)[r]) | {_embedding_values(v)[r]}
        labels = {lab.split(" ")[0] if lab.endswith(" strided") else lab for lab in labels}
        out.append((ROW_NAMES[r], [(lab, color_of(lab)) for lab in sorted(labels, key=_natural)]))
    return out


def _natural(s: str) -> tuple[str, int]:
    head = s.rstrip("0123456789")
    tail = s[len(head):]
    return head, int(tail) if tail else 0


# ---------------------------------------------------------------------------------- time
def time_chart(views: list[dict[str, Any]]) -> str:
    """Horizontal stacked bars of the critical stage's step time, one per plan, common scale."""
    left, width, bh = 150, 880, 30
    tmax = max(v["prediction"]["step_time_s"] * 1e3 for v in views) or 1.0
    tmax = max(tmax, max(sum(v["prediction"]["breakdown_ms"].values()) for v in views))
    scale = (width - left - 110) / tmax
    height = 26 + len(views) * (bh + 16) + 24
    out = [f'<svg class="chart time-chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           'role="img" aria-label="step time breakdown">']
    for t in nice_ticks(tmax):
        x = left + t * scale
        out.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="16" y2="{height - 20}"/>'
                   f'<text class="axis" x="{x:.1f}" y="{height - 6}" text-anchor="middle">{t:g}</text>')
    out.append(f'<text class="axis" x="{width - 8}" y="{height - 6}" text-anchor="end">ms per step</text>')
    for i, v in enumerate(views):
        y = 20 + i * (bh + 16)
        bd = v["prediction"]["breakdown_ms"]
        out.append(f'<g class="time-bar" data-plan="{esc(v["id"])}" data-value="{num(v["prediction"]["step_time_s"])}">'
                   f'<text class="rowname" x="{left - 8}" y="{y + bh / 2 + 4}" text-anchor="end">'
                   f'{esc(short(v["label"], fit_chars(left - 8 - 4, 12)))}'
                   f'<title>{esc(v["label"])}</title></text>')
        x = left
        for c in TIME_COMPONENTS:
            w = bd[c] * scale
            if bd[c] > 0:
                out.append(f'<rect class="seg" data-component="{c}" data-value="{num(bd[c])}" x="{x:.2f}" y="{y}" '
                           f'width="{max(w, 0.6):.2f}" height="{bh}" fill="{TIME_COLORS[c]}">'
                           f'<title>{esc(v["label"])}: {TIME_NAMES[c]} {fmt_ms(bd[c])}</title></rect>')
            x += w
        out.append(f'<text class="val" x="{x + 6:.1f}" y="{y + bh / 2 + 4}">'
                   f'{fmt_ms(v["prediction"]["step_time_s"] * 1e3)}</text></g>')
    out.append("</svg>")
    return "".join(out)


# ---------------------------------------------------------------------------------- measured
def line_chart(points: list[tuple[float, float]], ylabel: str, cls: str, ref: float | None = None,
               ref_label: str = "") -> str:
    """A small line chart of a per-step series, with an optional dashed reference line."""
    width, height, left, top, h = 440, 226, 58, 30, 150
    if not points:
        return ""
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    ymax = max(ys + ([ref] if ref is not None else [])) * 1.1 or 1.0
    xmin, xmax = min(xs), max(xs)
    sx = lambda x: left + (width - left - 14) * ((x - xmin) / (xmax - xmin) if xmax > xmin else 0.5)  # noqa: E731
    sy = lambda v: top + h - h * v / ymax  # noqa: E731
    out = [f'<svg class="chart {cls}" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="{esc(ylabel)}">']
    for t in nice_ticks(ymax, 4):
        out.append(f'<line class="grid" x1="{left}" x2="{width - 10}" y1="{sy(t):.1f}" y2="{sy(t):.1f}"/>'
                   f'<text class="axis" x="{left - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    for t in nice_ticks(xmax - xmin, 5) if xmax > xmin else [0.0]:
        out.append(f'<text class="axis" x="{sx(xmin + t):.1f}" y="{top + h + 14}" text-anchor="middle">'
                   f'{xmin + t:g}</text>')
    pts = " ".join(f"{sx(x):.1f},{sy(v):.1f}" for x, v in points)
    out.append(f'<polyline class="series" points="{pts}"/>')
    for x, v in points:
        out.append(f'<circle class="pt" data-x="{num(x)}" data-value="{num(v)}" cx="{sx(x):.1f}" cy="{sy(v):.1f}" r="2.5">'
                   f'<title>step {x:g}: {v:.4g}</title></circle>')
    out.append(f'<circle class="pt" cx="{left + 6}" cy="12" r="3"/><text class="axis" x="{left + 14}" y="16">'
               'measured</text>')
    if ref is not None:
        out.append(f'<line class="ref" data-value="{num(ref)}" x1="{left}" x2="{width - 10}" y1="{sy(ref):.1f}" '
                   f'y2="{sy(ref):.1f}"/><line class="ref" x1="{left + 80}" x2="{left + 100}" y1="12" y2="12"/>'
                   f'<text class="axis" x="{left + 106}" y="16">{esc(ref_label)}</text>')
    out.append(f'<text class="axis" x="{left + (width - left) / 2:.0f}" y="{height - 8}" text-anchor="middle">step</text>'
               f'<text class="axis" x="12" y="{top + h / 2:.0f}" transform="rotate(-90 12 {top + h / 2:.0f})" '
               f'text-anchor="middle">{esc(ylabel)}</text></svg>')
    return "".join(out)
