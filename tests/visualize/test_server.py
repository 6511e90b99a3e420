"""``--serve``: the local page answers search requests on 127.0.0.1, reports bad input as a
one-line error (never a traceback), renders in Chromium, and shuts down cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager

import pytest

import galvatron
from galvatron.profiles import hardware_preset, model_profile
from galvatron.visualize.server import ServeConfig, make_server
from tests.visualize import browser
from tests.visualize.domquery import embedded_data, find, parse

CFG = ServeConfig(model="gpt2-small", nodes=1, gpus_per_node=4, memory_gb=16.0, global_batch_size=8)


@contextmanager
def running(cfg: ServeConfig = CFG):
    httpd = make_server(cfg, port=0)
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(timeout=10)
        assert not t.is_alive()


def post(url: str, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url + "/api/search", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_search_request_returns_the_searched_plan_and_its_estimate():
    with running() as url:
        assert url.startswith("http://127.0.0.1:")
        status, r = post(url, json.dumps({"memory_gb": "12", "global_batch_size": 16, "seq_len": 512}).encode())
    assert status == 200 and r["ok"], r
    data = r["data"]
    hw = hardware_preset("a100-80g-sxm", num_nodes=1, gpus_per_node=4)
    mp = model_profile("gpt2-small", seq_len=512, hardware=hw)
    res = galvatron.search(mp, hw, memory_gb=12.0, global_batch_size=16)
    plan = galvatron.Plan.from_dict(data["plan"]["plan"])
    assert plan == res.plan.replace(predicted=None)
    assert data["plan"]["prediction"]["step_time_s"] == galvatron.estimate(plan, mp, hw).step_time_s
    assert data["memory_budget_bytes"] == 12 * 2**30 and data["model"]["seq_len"] == 512
    assert 'class="chart mem-chart"' in r["html"]


@pytest.mark.parametrize("body, message", [
    (b'{"memory_gb": "lots"}', "memory_gb: expected a number"),
    (b'{"nodes": 0}', "nodes: 0 is out of range"),
    (b'{"model": "<script>x</script>"}', "model: '<script>x</script>' is unknown"),
    (b'{"memory_gb": 0.02}', "no plan in the search space fits"),
    (b"[1, 2]", "must be a JSON object"),
    (b"{not json", "not JSON"),
])
def test_bad_input_is_a_one_line_error_not_a_traceback(body, message):
    with running() as url:
        status, r = post(url, body)
    assert status == 400 and r["ok"] is False
    assert message in r["error"] and "Traceback" not in r["error"]


def test_unknown_paths_and_oversized_bodies_are_refused():
    with running() as url:
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url + "/etc/passwd", timeout=10)
        assert e.value.code == 404
        status, r = post(url, b"{" + b" " * (64 * 1024) + b"}")
        assert status == 400 and "bytes of JSON" in r["error"]


def test_page_searches_on_load_in_chromium(artifacts):
    browser.require_chromium()
    with running() as url:
        page = browser.load(url + "/", virtual_time_ms=8000)
        shot = artifacts / "serve.png"
        browser.screenshot(url + "/", str(shot), height=1600)
    page.assert_clean()
    assert page.attr_of_html("data-searches") == "1"
    doc = parse(page.dom)
    assert find(doc, "svg", "mem-chart") and find(doc, "svg", "strategy-map")
    assert embedded_data(page.dom)["model"]["name"] == "gpt2-small"
    print(f"visualize --serve screenshot: {shot}")


def test_cli_serve_answers_then_stops_on_ctrl_c():
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "galvatron", "visualize", "--serve", "--port", "0",
                             "--model", "gpt2-debug", "--gpus-per-node", "2", "--memory-gb", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "serving on http://127.0.0.1:" in line, (line, proc.stderr.read() if proc.poll() else "")
        url = line.split("serving on ")[1].split("/ ")[0]
        status, r = post(url, b'{"global_batch_size": 4}')
        assert status == 200 and r["ok"], r
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert "stopped" in out and "Traceback" not in err
