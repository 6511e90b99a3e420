"""The report in headless Chromium: no console errors, the charts are there with the right
number of stages and layers, hostile names stay text, and a screenshot is written.
Skipped where Chromium cannot be found."""

from __future__ import annotations

import dataclasses

import galvatron
from galvatron.visualize import render_report, report_data
from galvatron.visualize.data import MEM_COMPONENTS
from tests.visualize import browser
from tests.visualize.domquery import ancestor_attr, embedded_data, find, parse


def test_report_loads_cleanly_with_all_charts(llama, llama_report):
    browser.require_chromium()
    plan, mp, hw = llama
    path, _ = llama_report
    page = browser.load(path.as_uri())
    page.assert_clean()
    assert page.attr_of_html("data-ready") == "1"  # the page's own script ran to the end
    doc = parse(page.dom)
    for view, shown in (("plan", plan), ("baseline", None)):
        stages = find(doc, "g", "mem-stage", ("svg", "data-plan", view))
        layers = find(doc, "rect", "layer-time", ("svg", "data-plan", view))
        if shown is not None:
            assert len(stages) == plan.pp == 2
            assert len(layers) == plan.num_layers == 32
            assert len(find(doc, "g", "stage-span", ("svg", "data-plan", view))) == len(plan.stage_layers)
        else:
            assert len(stages) >= 1 and len(layers) == 32
    assert len(find(doc, "g", "time-bar")) == 2
    assert find(doc, "table", "measured-table") and find(doc, "svg", "measured-time")
    # what the browser shows is what estimate predicts
    pred = galvatron.estimate(plan, mp, hw)
    segs = ancestor_attr(doc, "rect", "seg", ("svg", "data-plan", "plan"), "mem-stage", "data-stage")
    assert {(int(s), a["data-component"]): int(a["data-value"]) for s, a in segs} == {
        (s, c): m[c] for s, m in enumerate(pred.stage_memory) for c in MEM_COMPONENTS if m[c] > 0}
    assert embedded_data(page.dom)["plan"]["prediction"]["stage_memory"] == [dict(m) for m in pred.stage_memory]


def test_report_screenshot_is_written(llama_report, artifacts):
    browser.require_chromium()
    shot = artifacts / "report.png"
    console = browser.screenshot(llama_report[0].as_uri(), str(shot))
    assert not console, console
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    print(f"visualize report screenshot: {shot}")


def test_hostile_model_and_layer_names_do_not_execute(llama, tmp_path):
    browser.require_chromium()
    plan, mp, hw = llama
    evil = "<script>document.documentElement.setAttribute('data-pwned','1')</script>"
    second = dataclasses.replace(mp.layer_types[0], name=evil)
    # two layer types so the map draws a "layer type" row with the hostile name in it
    bad = dataclasses.replace(mp, model=evil, layer_types=[mp.layer_types[0], second],
                              layer_type_of=[i % 2 for i in range(mp.num_layers)])
    path = tmp_path / "hostile.html"
    path.write_text(render_report(report_data(plan, bad, hw, baseline=None)))
    page = browser.load(path.as_uri())
    page.assert_clean()
    assert page.attr_of_html("data-pwned") is None
    doc = parse(page.dom)
    assert evil in "".join(doc.text)  # shown as text
    assert any(g.get("data-row") == "type" for g in find(doc, "g", "run"))


def test_console_error_detection_can_fail(llama_report, tmp_path):
    """The two detectors catch a script error and a blocked network fetch."""
    browser.require_chromium()
    text = llama_report[0].read_text()
    broken = tmp_path / "broken.html"
    broken.write_text(text.replace("</main>", "</main><script>undefinedFunction()</script>"
                                   '<img src="http://127.0.0.1:9/x.png">'))
    page = browser.load(broken.as_uri())
    assert any("undefinedFunction" in c for c in page.console)
    errs = page.js_errors
    assert any("undefinedFunction" in e for e in errs)
    assert any("img-src" in e or "127.0.0.1:9" in e for e in errs)
