"""Labels of the report's charts stay inside the chart and clear of each other (issue 13, 11):
the time chart's row names fit left of the bars, and the memory chart's per-stage totals do not
overlap at 16 stages. Widths are the generous estimate of ``svg.text_width``."""

from __future__ import annotations

import re

from galvatron.visualize.data import MEM_COMPONENTS, TIME_COMPONENTS
from galvatron.visualize.svg import memory_chart, text_width, time_chart

GiB = 2**30


def _texts(svg: str, cls: str) -> list[tuple[float, str, str]]:
    """(x, text-anchor, content) of every <text class=cls>."""
    out = []
    for attrs, body in re.findall(r'<text class="' + cls + r'"([^>]*)>([^<]*)', svg):
        x = float(re.search(r' x="([-\d.]+)"', attrs).group(1))
        anchor = re.search(r'text-anchor="(\w+)"', attrs)
        out.append((x, anchor.group(1) if anchor else "start", body))
    return out


def _view(stages: int, label: str = "plan") -> dict:
    mem = [{c: 0 for c in MEM_COMPONENTS} | {"param_bytes": int((10 + s % 3) * GiB),
                                              "activation_bytes": int(2.5 * GiB)} for s in range(stages)]
    for m in mem:
        m["total_bytes"] = sum(m[c] for c in MEM_COMPONENTS)
    return {"id": label, "label": label,
            "prediction": {"stage_memory": mem, "step_time_s": 0.5,
                           "breakdown_ms": {c: 0.0 for c in TIME_COMPONENTS} | {"compute_ms": 400.0,
                                                                                 "dp_comm_ms": 100.0}}}


def test_time_chart_row_names_stay_inside_the_left_edge():
    long = "galvatron_config_llama2-7b_1nodes_8gpus_per_node_36GB_bf16.json"
    svg = time_chart([_view(2, long), _view(2, "best uniform plan")])
    rows = _texts(svg, "rowname")
    assert len(rows) == 2
    for x, anchor, body in rows:
        assert anchor == "end" and x - text_width(body, 12) >= 0, (x, body)
    assert f"<title>{long}</title>" in svg  # the full name stays available


def test_memory_totals_do_not_collide_at_16_stages():
    for stages in (4, 8, 16):
        vals = _texts(memory_chart(_view(stages), budget=40 * GiB, plan_id="plan"), "val")
        assert len(vals) == stages
        for (x0, _, a), (x1, _, b) in zip(vals, vals[1:], strict=False):  # centred, one slot apart
            assert x1 - x0 >= (text_width(a, 11) + text_width(b, 11)) / 2 + 2, (stages, x0, x1, a, b)
