"""``galvatron visualize --serve``: a local page that re-runs the search as settings change.

A stdlib threaded ``http.server`` bound to 127.0.0.1, HTTP/1.0 (one request per connection),
each connection in its own thread with a socket timeout (a stalled client holds only its own
thread; at most ``MAX_CONNECTIONS`` at once, more are closed at once), request bodies capped at
16 KiB. Every search runs in a separate worker process (:mod:`galvatron.visualize.worker`) with
a memory limit and a timeout, at most ``max_concurrent_searches`` at a time, and with a smaller
search space bound than the command line (``SERVE_SPACE``); the server never grows with a request.

- ``GET /`` -- the page: a form (model, memory budget, global batch size, sequence length,
  nodes, devices per node) and the report sections of the last search.
- ``POST /api/search`` -- JSON in (the form's fields), JSON out: ``{"ok": true, "html": ...,
  "data": ...}`` with the report sections and their numbers, or ``{"ok": false, "error": ...}``
  (HTTP 400) naming the bad field. Unexpected errors answer 500 with a one-line message; the
  traceback goes to the server's stderr only, never to the page.

Ctrl-C or SIGTERM stops the server and closes its socket.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import galvatron
from galvatron import models as _models
from galvatron._validate import short
from galvatron.profiles import HardwareProfile, hardware_preset, model_profile
from galvatron.visualize.data import report_data
from galvatron.visualize.report import json_for_script, page, render_sections
from galvatron.visualize.svg import esc
from galvatron.visualize.worker import WorkerError, search_in_worker

MAX_BODY_BYTES = 16 * 1024
LIMITS = {"memory_gb": (0.01, 1e5), "global_batch_size": (1, 1 << 20), "seq_len": (1, 1 << 21),
          "nodes": (1, 1024), "gpus_per_node": (1, 64)}
MAX_WORLD = 4096
MAX_CONNECTIONS = 32
SERVE_SPACE = {"max_tasks": 2000, "max_frontier_entries": 5_000_000}  # ~200 MiB of frontiers
CSP_SERVE = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'"


@dataclass
class ServeConfig:
    """What the page starts with; a ``hardware`` profile fixes the device count."""

    model: str = "gpt2-small"
    hardware_preset: str = "a100-80g-sxm"
    hardware: HardwareProfile | None = None
    nodes: int = 1
    gpus_per_node: int = 8
    memory_gb: float | None = None
    global_batch_size: int = 8
    seq_len: int | None = None
    precision: str = "bf16"
    space: dict[str, Any] = field(default_factory=dict)
    search_timeout_s: float = 60.0  # per request, in the worker process
    worker_memory_bytes: int = 4 * 2**30  # RLIMIT_DATA of the worker; 0: no limit
    max_concurrent_searches: int = 2


def _field(params: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    """A form field: an int field takes an integer or a string of digits (7.9, "7.9", true are
    refused, never truncated); a number field takes a finite number or its decimal string."""
    v = params.get(name, default)
    if v is None or v == "":
        return default
    what = "an integer" if kind is int else "a number"
    bad = ValueError(f"{name}: expected {what}, got {short(v)}")
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise bad
    if isinstance(v, str):
        text = v.strip()
        if kind is int:
            if not (text.isdigit() and len(text) <= 12):
                raise bad
            v = int(text)
        else:
            try:
                v = float(text) if len(text) <= 40 else None
            except ValueError:
                v = None
            if v is None:
                raise bad
    if kind is int and isinstance(v, float):
        if not (math.isfinite(v) and v.is_integer()):
            raise bad
        v = int(v)
    v = kind(v)
    lo, hi = LIMITS[name]
    if not lo <= v <= hi:  # NaN fails too
        raise ValueError(f"{name}: {v} is out of range; accepted: {lo:g} to {hi:g}")
    return v


def run_search(params: Any, cfg: ServeConfig) -> dict[str, Any]:
    """Validate the form's fields, search, and return the report data of the result."""
    if not isinstance(params, dict):
        raise ValueError("the request body must be a JSON object")
    model = str(params.get("model") or cfg.model)
    if model not in _models.list(aliases=True):
        raise ValueError(f"model: {model!r} is unknown; accepted: {', '.join(_models.list(aliases=True))}")
    nodes = _field(params, "nodes", int, cfg.nodes)
    gpn = _field(params, "gpus_per_node", int, cfg.gpus_per_node)
    if nodes * gpn > MAX_WORLD:
        raise ValueError(f"nodes x gpus_per_node = {nodes * gpn} devices; accepted: at most {MAX_WORLD}")
    if cfg.hardware is not None:
        if (nodes, gpn) != (cfg.hardware.num_nodes, cfg.hardware.gpus_per_node):
            raise ValueError(f"nodes/gpus_per_node: the hardware profile given to --serve is for "
                             f"{cfg.hardware.num_nodes}x{cfg.hardware.gpus_per_node} devices")
        hw = cfg.hardware
    else:
        hw = hardware_preset(cfg.hardware_preset, num_nodes=nodes, gpus_per_node=gpn)
    memory_gb = _field(params, "memory_gb", float, cfg.memory_gb or hw.device_memory_bytes / 2**30)
    batch = _field(params, "global_batch_size", int, cfg.global_batch_size)
    seq_len = _field(params, "seq_len", int, cfg.seq_len)
    mp = model_profile(model, seq_len=seq_len, hardware=hw, precision=cfg.precision)
    res = galvatron.search(mp, hw, memory_gb=memory_gb, global_batch_size=batch, **{**SERVE_SPACE, **cfg.space})
    baseline = res.best_uniform.plan if res.best_uniform is not None else None
    data = report_data(res.plan, mp, hw, memory_budget_bytes=int(memory_gb * 2**30), baseline=baseline,
                       plan_label="searched plan", baseline_label="best uniform plan")
    data["search"] = {"search_time_s": res.search_time_s, "stats": dict(res.stats)}
    return data


class _Handler(BaseHTTPRequestHandler):
    server_version = "galvatron-visualize"
    timeout = 30
    cfg: ServeConfig = ServeConfig()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        sys.stderr.write(f"galvatron visualize: {self.address_string()} {format % args}\n")

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: dict[str, Any]) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json; charset=utf-8")

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if self.path.split("?")[0] in ("/", "/index.html"):
            self._send(200, serve_page(self.cfg).encode(), "text/html; charset=utf-8")
        else:
            self._json(404, {"ok": False, "error": f"no such page: {self.path[:100]}"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        if self.path != "/api/search":
            self._json(404, {"ok": False, "error": f"no such endpoint: {self.path[:100]}"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY_BYTES:
            if MAX_BODY_BYTES < length <= 64 * MAX_BODY_BYTES:  # read it so the client sees the answer
                self.rfile.read(length)
            self._json(400, {"ok": False, "error": f"request body must be 1 to {MAX_BODY_BYTES} bytes of JSON"})
            return
        try:
            try:
                params = json.loads(self.rfile.read(length))
            except json.JSONDecodeError as e:
                raise ValueError(f"the request body is not JSON ({e.msg})") from None
            data = self._search(params)
        except (ValueError, UnicodeDecodeError) as e:  # json.JSONDecodeError is a ValueError
            self._json(400, {"ok": False, "error": str(e)})
            return
        except WorkerError as e:
            self._json(e.status, {"ok": False, "error": str(e)})
            return
        except Exception as e:  # the page gets one line; the console gets the traceback
            traceback.print_exc(file=sys.stderr)
            self._json(500, {"ok": False, "error": f"internal error ({type(e).__name__}); see the server console"})
            return
        self._json(200, {"ok": True, "html": render_sections(data), "data": data})


    def _search(self, params: Any) -> dict[str, Any]:
        cfg = self.cfg
        slots = self.server.search_slots  # type: ignore[attr-defined]
        if not slots.acquire(timeout=cfg.search_timeout_s):
            raise WorkerError(503, "the server is busy with other searches; try again")
        try:
            return search_in_worker(run_search, params, cfg, cfg.search_timeout_s, cfg.worker_memory_bytes)
        finally:
            slots.release()


class _Server(ThreadingHTTPServer):
    """One thread per connection, at most ``MAX_CONNECTIONS`` at once (more are closed)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type, cfg: ServeConfig) -> None:
        self.connections = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.search_slots = threading.BoundedSemaphore(max(1, cfg.max_concurrent_searches))
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.connections.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.connections.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release()


def make_server(cfg: ServeConfig, port: int = 8765) -> ThreadingHTTPServer:
    """An HTTP server on 127.0.0.1:``port`` (0: any free port) serving ``cfg``."""
    handler = type("Handler", (_Handler,), {"cfg": cfg})
    return _Server(("127.0.0.1", port), handler, cfg)


def serve(cfg: ServeConfig, port: int = 8765) -> int:
    """Serve until Ctrl-C; returns 0 after a clean shutdown."""
    try:
        httpd = make_server(cfg, port)
    except OSError as e:
        raise ValueError(f"--port {port}: cannot listen on 127.0.0.1: {e.strerror}") from None
    print(f"galvatron visualize: serving on http://127.0.0.1:{httpd.server_address[1]}/ (Ctrl-C to stop)",
          flush=True)
    previous = _stop_on_signals()
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        print("galvatron visualize: stopped", flush=True)
    finally:
        httpd.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _stop_on_signals() -> dict[int, Any]:
    """Ctrl-C (even where the shell ignored SIGINT for a background job) and SIGTERM stop the server."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}


SERVE_JS = """(function(){
var form=document.getElementById('controls'),out=document.getElementById('result'),
err=document.getElementById('error'),st=document.getElementById('status'),
blob=document.getElementById('galvatron-data');
function run(){var p={};new FormData(form).forEach(function(v,k){p[k]=v;});
st.textContent='searching…';err.hidden=true;
fetch('/api/search',{method:'POST',headers:{'Content-Type':'application/json'},body:JSON.stringify(p)})
.then(function(r){return r.json();}).then(function(r){
if(!r.ok){err.textContent=r.error;err.hidden=false;st.textContent='';return;}
out.innerHTML=r.html;blob.textContent=JSON.stringify(r.data);
st.textContent='searched in '+(r.data.search.search_time_s*1000).toFixed(0)+' ms';
document.documentElement.setAttribute('data-searches',String(+(document.documentElement.getAttribute('data-searches')||0)+1));
}).catch(function(e){err.textContent='the server did not answer: '+e;err.hidden=false;st.textContent='';});}
form.addEventListener('submit',function(e){e.preventDefault();run();});run();})();"""


def serve_page(cfg: ServeConfig) -> str:
    models = "".join(f'<option{" selected" if m == cfg.model else ""}>{esc(m)}</option>'
                     for m in _models.list())
    fixed = " disabled" if cfg.hardware is not None else ""

    def box(name: str, label: str, value: Any, extra: str = "") -> str:
        v = "" if value is None else esc(value)
        return (f'<label>{esc(label)}<input name="{name}" value="{v}" placeholder="default" '
                f'inputmode="decimal"{extra}></label>')

    hw_name = cfg.hardware.name if cfg.hardware is not None else cfg.hardware_preset
    form = (f'<form id="controls" class="controls"><label>model<select name="model">{models}</select></label>'
            + box("memory_gb", "memory budget (GiB)", cfg.memory_gb)
            + box("global_batch_size", "global batch size", cfg.global_batch_size)
            + box("seq_len", "sequence length", cfg.seq_len)
            + box("nodes", "nodes", cfg.nodes, fixed)
            + box("gpus_per_node", "devices per node", cfg.gpus_per_node, fixed)
            + '<button type="submit">search</button><span id="status" class="note"></span></form>')
    body = (f'<h1>Galvatron plan explorer</h1><p class="sub">hardware: {esc(hw_name)}. Change a setting and '
            'press search: the best plan under the cost model is searched again. Empty fields use defaults.</p>'
            f'{form}<div id="error" class="error" hidden></div><div id="result" class="result"></div>')
    scripts = (f'<script type="application/json" id="galvatron-data">{json_for_script({})}</script>'
               f"<script>{SERVE_JS}</script>")
    return page("Galvatron plan explorer", body, CSP_SERVE, scripts)
