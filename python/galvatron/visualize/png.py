"""``--png DIR``: static images of a report (matplotlib, the optional ``viz`` extra).

Draws the same data dict as the HTML report (:func:`galvatron.visualize.data.report_data`):
``memory.png``, ``strategy.png``, ``time.png`` and, with metrics, ``measured.png``.
"""

from __future__ import annotations

import os
from typing import Any

from galvatron.visualize import svg
from galvatron.visualize.data import MEM_COMPONENTS, TIME_COMPONENTS

GiB = 2**30


def require_matplotlib() -> Any:
    """Import matplotlib with the Agg backend, or raise ValueError saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise ValueError("--png needs matplotlib: pip install 'galvatron[viz]' (or pip install matplotlib)") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _views(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in (data["plan"], data.get("baseline")) if v]


def memory_png(data: dict[str, Any], path: str) -> None:
    plt = require_matplotlib()
    views = _views(data)
    budget = data["memory_budget_bytes"] / GiB
    fig, axes = plt.subplots(1, len(views), figsize=(3 + 2.2 * len(views), 4.2), squeeze=False, sharey=True)
    for ax, v in zip(axes[0], views, strict=True):
        stages = v["prediction"]["stage_memory"]
        bottom = [0.0] * len(stages)
        for c in MEM_COMPONENTS:
            vals = [m[c] / GiB for m in stages]
            ax.bar(range(len(stages)), vals, bottom=bottom, color=svg.MEM_COLORS[c], label=svg.MEM_NAMES[c],
                   width=0.65)
            bottom = [b + x for b, x in zip(bottom, vals, strict=True)]
        ax.axhline(budget, color="#cf222e", linestyle="--", linewidth=1.3, label="budget")
        ax.set_title(v["label"], fontsize=10)
        ax.set_xlabel("pipeline stage")
        ax.set_xticks(range(len(stages)))
        ax.set_xlim(-0.5 - 0.3 * max(1, 3 - len(stages)), len(stages) - 0.5 + 0.3 * max(1, 3 - len(stages)))
    axes[0][0].set_ylabel("predicted peak memory (GiB per device)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.85))
    fig.savefig(path, dpi=150)
    plt.close(fig)


def strategy_png(data: dict[str, Any], path: str) -> None:
    plt = require_matplotlib()
    views = _views(data)
    rows = list(svg.STRATEGY_ROWS)
    fig, axes = plt.subplots(len(views), 1, figsize=(10, 0.5 + 1.9 * len(views)), squeeze=False)
    for ax, v in zip(axes[:, 0], views, strict=True):
        values = svg._row_values(v)
        chunks = [c for c, n in enumerate(v["plan"]["stage_layers"]) for _ in range(n)]
        for r_i, r in enumerate(rows):
            for a, b, lab in svg._runs(values[r], chunks):
                fill = svg.color_of(lab)
                ax.barh(r_i, b - a + 1, left=a, color=fill, edgecolor="white", height=0.85)
                if (b - a + 1) / len(chunks) > 0.06:
                    ax.text((a + b + 1) / 2, r_i, lab, ha="center", va="center", fontsize=7,
                            color=svg.text_color(fill))
        start = 0
        for n in v["plan"]["stage_layers"][:-1]:
            start += n
            ax.axvline(start, color="#1f2328", linewidth=2)
        ax.set_yticks(range(len(rows)), [svg.ROW_NAMES[r] for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, len(chunks))
        ax.set_title(f"{v['label']}: per-layer strategy (pp={v['plan']['pp']})", fontsize=10)
        ax.set_xlabel("layer")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def time_png(data: dict[str, Any], path: str) -> None:
    plt = require_matplotlib()
    views = _views(data)
    fig, ax = plt.subplots(figsize=(9, 1.4 + 0.6 * len(views)))
    for i, v in enumerate(views):
        left = 0.0
        for c in TIME_COMPONENTS:
            ms = v["prediction"]["breakdown_ms"][c]
            ax.barh(i, ms, left=left, color=svg.TIME_COLORS[c], label=svg.TIME_NAMES[c] if i == 0 else None,
                    height=0.6)
            left += ms
        ax.text(left, i, f"  {v['prediction']['step_time_s'] * 1e3:,.1f} ms", va="center", fontsize=8)
    ax.set_xlim(0, max(v["prediction"]["step_time_s"] for v in views) * 1e3 * 1.18)
    ax.set_yticks(range(len(views)), [v["label"] for v in views])
    ax.invert_yaxis()
    ax.set_xlabel("predicted ms per step (critical stage)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35 - 0.1 / len(views)), ncol=4, fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def measured_png(data: dict[str, Any], path: str) -> None:
    plt = require_matplotlib()
    m = data["measured"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    pts = [(s["step"], s["step_time_s"] * 1e3) for s in m["series"] if s["step_time_s"] is not None]
    if pts:
        a1.plot(*zip(*pts, strict=True), marker="o", markersize=3, label="measured")
    a1.axhline(m["step_time_s"]["predicted"] * 1e3, color="#cf222e", linestyle="--", label="predicted")
    a1.set_xlabel("step")
    a1.set_ylabel("step time (ms)")
    a1.legend(fontsize=8)
    losses = [(s["step"], s["loss"]) for s in m["series"] if s["loss"] is not None]
    if losses:
        a2.plot(*zip(*losses, strict=True), marker="o", markersize=3)
    a2.set_xlabel("step")
    a2.set_ylabel("loss")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def write_pngs(data: dict[str, Any], out_dir: str | os.PathLike[str]) -> list[str]:
    """Write the report's images into ``out_dir``; returns their paths."""
    require_matplotlib()
    os.makedirs(out_dir, exist_ok=True)
    jobs = [("memory.png", memory_png), ("strategy.png", strategy_png), ("time.png", time_png)]
    if data.get("measured"):
        jobs.append(("measured.png", measured_png))
    paths = []
    for name, fn in jobs:
        path = os.path.join(os.fspath(out_dir), name)
        fn(data, path)
        paths.append(path)
    return paths
