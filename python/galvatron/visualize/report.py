"""The self-contained HTML report: inline CSS, inline SVG, a few lines of inline JS, no URLs.

``render_report(data)`` returns the whole page; ``render_sections(data)`` the chart sections
alone (the ``--serve`` page swaps them in after each search). The numbers come only from
``data`` (:func:`galvatron.visualize.data.report_data`), which is embedded verbatim as
``<script type="application/json" id="galvatron-data">`` with ``<``, ``>`` and ``&`` escaped
as ``\\u003c`` etc., so no string inside it can close the script element.

A Content-Security-Policy meta tag forbids every network fetch (``default-src 'none'``); an
error hook, installed before anything else runs, records uncaught errors, ``console.error``
calls and CSP violations in ``<html data-js-errors>`` so headless tests can read them.
"""

from __future__ import annotations

import json
from typing import Any

from galvatron.visualize import svg
from galvatron.visualize.data import MEM_COMPONENTS, TIME_COMPONENTS
from galvatron.visualize.svg import esc, fmt_gib, fmt_ms

GiB = 2**30

CSS = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#ffffff;--panel:#f6f8fa;--accent:#0969da}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:1240px;margin:0 auto;padding:20px 28px 40px}
h1{font-size:22px;margin:0 0 2px}h2{font-size:17px;margin:26px 0 8px;padding-bottom:4px;border-bottom:1px solid var(--line)}
h3{font-size:14px;margin:6px 0 6px;color:var(--muted);font-weight:600}
.sub{color:var(--muted);margin:0 0 14px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0 4px}
.card{background:var(--panel);border:1px solid var(--line);border-radius:8px;padding:8px 14px;min-width:150px}
.card .k{color:var(--muted);font-size:12px}.card .v{font-size:19px;font-weight:600}
.card .v small{font-size:12px;font-weight:400;color:var(--muted)}
.card.good .v{color:#1a7f37}.card.bad .v{color:#cf222e}
.cols{display:flex;flex-wrap:wrap;gap:28px;align-items:flex-start}
.legend{display:flex;flex-wrap:wrap;gap:6px 14px;margin:6px 0 2px;font-size:12px;color:var(--muted)}
.legend span{display:inline-flex;align-items:center;gap:5px}
.legend b{color:var(--fg);font-weight:600}.legend .grp{gap:8px;margin-right:14px;white-space:nowrap}
.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;border:1px solid rgba(0,0,0,.15)}
.note{color:var(--muted);font-size:12px;margin:4px 0}
.warn{color:#9a6700;background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:6px 10px;margin:8px 0}
.error{color:#cf222e;background:#ffebe9;border:1px solid #ff8182;border-radius:6px;padding:8px 12px;margin:8px 0;white-space:pre-wrap}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}
th,td{padding:3px 10px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{color:var(--muted);font-weight:600}
pre{background:var(--panel);border:1px solid var(--line);border-radius:6px;padding:8px 12px;font-size:12px;overflow:auto}
details summary{cursor:pointer;color:var(--accent);font-size:13px;margin:4px 0}
svg.chart{display:block;max-width:100%;height:auto;font-size:11px}
svg .axis{fill:var(--muted);font-size:11px}svg .grid{stroke:#eaeef2;stroke-width:1}
svg .val{fill:var(--fg);font-size:11px;font-weight:600}svg .rowname{fill:var(--fg);font-size:12px}
svg .budget{stroke:#cf222e;stroke-width:1.6;stroke-dasharray:6 4}svg .budget-label{fill:#cf222e;font-size:11px}
svg .mem-stage.over .seg{stroke:#cf222e;stroke-width:1.5}
svg .stage-bg0{fill:#f6f8fa}svg .stage-bg1{fill:#eef1f5}svg .stage-label{fill:var(--muted);font-size:11px;font-weight:600}
svg .stage-boundary{stroke:#1f2328;stroke-width:2}svg .layer-time{fill:#8c9bab}
svg .cell{font-size:10.5px;pointer-events:none}
svg .series{fill:none;stroke:var(--accent);stroke-width:1.6}svg .pt{fill:var(--accent)}
svg .ref{stroke:#cf222e;stroke-width:1.4;stroke-dasharray:5 4}svg .ref-label{fill:#cf222e;font-size:11px}
form.controls{display:flex;flex-wrap:wrap;gap:10px 16px;align-items:flex-end;background:var(--panel);
  border:1px solid var(--line);border-radius:8px;padding:10px 14px}
form.controls label{display:flex;flex-direction:column;font-size:12px;color:var(--muted);gap:2px}
form.controls input,form.controls select{font:inherit;padding:3px 6px;width:130px}
form.controls button{font:inherit;padding:5px 16px;cursor:pointer}
.result{margin-top:18px}
footer{margin-top:30px;color:var(--muted);font-size:12px}
"""

ERROR_HOOK = """(function(){var errs=[];function rec(m){errs.push(String(m));
document.documentElement.setAttribute('data-js-errors',JSON.stringify(errs));}
window.addEventListener('error',function(e){rec(e.message||('failed to load '+((e.target&&(e.target.src||e.target.href))||'?')));},true);
window.addEventListener('unhandledrejection',function(e){rec('unhandled rejection: '+e.reason);});
document.addEventListener('securitypolicyviolation',function(e){rec('CSP: '+e.violatedDirective+' '+e.blockedURI);});
var ce=console.error;console.error=function(){rec(Array.prototype.join.call(arguments,' '));return ce.apply(console,arguments);};
})();"""

READY = """(function(){var d=JSON.parse(document.getElementById('galvatron-data').textContent);
var n=document.querySelectorAll('svg.mem-chart[data-plan="plan"] g.mem-stage').length;
if(n!==d.plan.prediction.stage_memory.length){console.error('memory chart shows '+n+' stages');}
document.documentElement.setAttribute('data-ready','1');})();"""

CSP_REPORT = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


def json_for_script(obj: Any) -> str:
    """JSON safe inside a <script> element: no '<', '>' or '&' appear literally."""
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _legend(items: list[tuple[str, str]]) -> str:
    return '<div class="legend">' + "".join(f'<span><i style="background:{c}"></i>{esc(n)}</span>'
                                             for n, c in items) + "</div>"


def _card(key: str, value: str, cls: str = "") -> str:
    return f'<div class="card {cls}"><div class="k">{esc(key)}</div><div class="v">{value}</div></div>'


def _views(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in (data["plan"], data.get("baseline")) if v]


def header(data: dict[str, Any]) -> str:
    p = data["plan"]["prediction"]
    m, hw = data["model"], data["hardware"]
    budget = data["memory_budget_bytes"]
    peak = p["max_peak_memory_bytes"]
    cards = [
        _card("predicted step time", esc(fmt_ms(p["step_time_s"] * 1e3))),
        _card("throughput", f'{p["samples_per_s"]:,.2f} <small>samples/s</small>'),
        _card("tokens/s", f'{p["tokens_per_s"]:,.0f}'),
        _card("peak memory / device", f'{peak / GiB:.2f} <small>of {budget / GiB:.1f} GiB</small>',
              "bad" if peak > budget else ""),
    ]
    if data.get("speedup") is not None:
        s = data["speedup"]
        cards.append(_card("speed-up vs best uniform" if data["baseline"]["label"] == "best uniform plan"
                           else "speed-up vs baseline", f"{s:.3f}×", "good" if s > 1.0005 else ("bad" if s < 0.9995 else "")))
    sub = (f'{esc(m["name"])} · seq {m["seq_len"]} · {esc(m["precision"])} · {m["num_layers"]} layers · '
           f'{hw["num_nodes"]}×{hw["gpus_per_node"]} {esc(hw["name"])} · budget {budget / GiB:.2f} GiB/device')
    warn = ""
    if peak > budget:
        warn = f'<div class="warn">The plan needs {peak / GiB:.2f} GiB on some device: over the budget.</div>'
    return (f'<header><h1>{esc(data["title"])}</h1><p class="sub">{sub}</p>'
            f'<div class="cards">{"".join(cards)}</div>{warn}</header>')


def memory_section(data: dict[str, Any]) -> str:
    budget = data["memory_budget_bytes"]
    cols = []
    for v in _views(data):
        rows = "".join(f'<tr><td>stage {s}</td>' + "".join(f"<td>{m[c] / GiB:.3f}</td>" for c in MEM_COMPONENTS)
                       + f'<td><b>{m["total_bytes"] / GiB:.3f}</b></td></tr>'
                       for s, m in enumerate(v["prediction"]["stage_memory"]))
        head = "".join(f"<th>{svg.MEM_NAMES[c]}</th>" for c in MEM_COMPONENTS)
        cols.append(f'<div class="col"><h3>{esc(v["label"])}</h3>{svg.memory_chart(v, budget, v["id"])}'
                    f'<details><summary>numbers (GiB)</summary><table class="mem-table"><tr><th></th>{head}'
                    f'<th>total</th></tr>{rows}</table></details></div>')
    legend = _legend([(svg.MEM_NAMES[c], svg.MEM_COLORS[c]) for c in MEM_COMPONENTS]
                     + [("memory budget", "#cf222e")])
    return (f'<section id="memory"><h2>Predicted peak memory per pipeline stage</h2>{legend}'
            f'<div class="cols">{"".join(cols)}</div></section>')


def strategy_section(data: dict[str, Any]) -> str:
    parts = []
    for v in _views(data):
        parts.append(f'<h3>{esc(v["label"])} — {len(v["layer_labels"])} layers, '
                     f'pp={v["plan"]["pp"]}, {v["plan"]["num_microbatches"]} micro-batches of '
                     f'{v["plan"]["global_batch_size"] // v["plan"]["num_microbatches"]}</h3>'
                     + svg.strategy_map(v, data["model"], v["id"]))
    legend = '<div class="legend">' + "".join(
        f'<span class="grp"><b>{esc(row)}:</b>' + "".join(f'<span><i style="background:{c}"></i>{esc(n)}</span>'
                                                    for n, c in items) + "</span>"
        for row, items in svg.strategy_legend(_views(data))) + "</div>"
    return (f'<section id="strategy"><h2>Per-layer strategy</h2>{legend}'
            '<p class="note">Rows: tensor-parallel degree, sequence parallelism (Megatron-SP or Ulysses degree), '
            'data-parallel degree, data-parallel sharding, activation checkpointing. Thick lines mark pipeline '
            'stage boundaries; the grey bars are each layer\'s predicted forward+backward time per micro-batch. '
            'Hover for details.</p>' + "".join(parts) + "</section>")


def time_section(data: dict[str, Any]) -> str:
    views = _views(data)
    head = "".join(f"<th>{esc(v['label'])}</th>" for v in views)
    rows = "".join(f"<tr><td>{svg.TIME_NAMES[c]}</td>"
                   + "".join(f"<td>{esc(fmt_ms(v['prediction']['breakdown_ms'][c]))}</td>" for v in views)
                   + "</tr>" for c in TIME_COMPONENTS)
    rows += ("<tr><td><b>step time</b></td>" + "".join(
        f"<td><b>{esc(fmt_ms(v['prediction']['step_time_s'] * 1e3))}</b></td>" for v in views) + "</tr>")
    rows += ("<tr><td>critical stage</td>" + "".join(
        f"<td>{v['prediction']['critical_stage']}</td>" for v in views) + "</tr>")
    legend = _legend([(svg.TIME_NAMES[c], svg.TIME_COLORS[c]) for c in TIME_COMPONENTS])
    note = f'<p class="note">{esc(data["baseline_note"])}</p>' if data.get("baseline_note") else ""
    return (f'<section id="time"><h2>Step time breakdown (critical pipeline stage)</h2>{legend}'
            f'{svg.time_chart(views)}{note}<table class="time-table"><tr><th></th>{head}</tr>{rows}</table></section>')


def measured_section(data: dict[str, Any]) -> str:
    m = data.get("measured")
    if not m:
        return ""
    st, pk = m["step_time_s"], m["peak_memory_bytes"]

    def err(e: float | None) -> str:
        return "–" if e is None else f"{e * 100:+.1f}%"

    def val(x: float | None, f: Any) -> str:
        return "–" if x is None else esc(f(x))

    rows = [("step time", val(st["predicted"], lambda x: fmt_ms(x * 1e3)), val(st["measured"], lambda x: fmt_ms(x * 1e3)),
             err(st["error"])),
            ("peak memory (max over devices)", val(pk["predicted"], fmt_gib), val(pk["measured"], fmt_gib), err(pk["error"]))]
    rows += [(f"peak memory, stage {s['stage']}", esc(fmt_gib(s["predicted"])), esc(fmt_gib(s["measured"])), err(s["error"]))
             for s in m["stage_peak_memory_bytes"]]
    rows += [(f"peak live tensors, rank {r['rank']}", esc(fmt_gib(r["predicted"])), val(r["measured"], fmt_gib),
              err(r["error"])) for r in m.get("rank_peak_memory_bytes", [])]
    table = ('<table class="measured-table"><tr><th></th><th>predicted</th><th>measured</th>'
             '<th>prediction error</th></tr>' + "".join(f"<tr><td>{a}</td><td>{b}</td><td>{c}</td><td>{d}</td></tr>"
                                                         for a, b, c, d in rows) + "</table>")
    times = [(s["step"], s["step_time_s"] * 1e3) for s in m["series"] if s["step_time_s"] is not None]
    losses = [(s["step"], s["loss"]) for s in m["series"] if s["loss"] is not None]
    charts = svg.line_chart(times, "step time (ms)", "measured-time", st["predicted"] * 1e3,
                            f"predicted {fmt_ms(st['predicted'] * 1e3)}")
    charts += svg.line_chart(losses, "loss", "measured-loss")
    return (f'<section id="measured"><h2>Predicted vs measured</h2>{table}'
            f'<p class="note">Measured step time: median over steps after the first {m["warmup_steps"]}.</p>'
            f'<div class="cols">{charts}</div></section>')


def plans_section(data: dict[str, Any]) -> str:
    return ('<section id="plans"><h2>Plans</h2>' + "".join(
        f'<h3>{esc(v["label"])}</h3><pre>{esc(v["summary"])}</pre>' for v in _views(data)) + "</section>")


def render_sections(data: dict[str, Any]) -> str:
    return (header(data) + memory_section(data) + strategy_section(data) + time_section(data)
            + measured_section(data) + plans_section(data))


def page(title: str, body: str, csp: str, scripts: str = "") -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{esc(title)}</title><script>{ERROR_HOOK}</script><style>{CSS}</style></head>'
            f'<body><main>{body}</main>{scripts}</body></html>\n')


def render_report(data: dict[str, Any]) -> str:
    """The whole self-contained report page."""
    body = (render_sections(data)
            + f'<footer>Generated by {esc(data["generator"])}. Predictions are galvatron.estimate of each plan; '
            'the numbers drawn are embedded in this file as JSON (id="galvatron-data").</footer>')
    scripts = (f'<script type="application/json" id="galvatron-data">{json_for_script(data)}</script>'
               f"<script>{READY}</script>")
    return page(f"Galvatron plan report: {data['title']}", body, CSP_REPORT, scripts)
