"""Headless Chromium for the visualizer tests: load a page, dump its DOM, take a screenshot.

Console errors are detected two ways, and a test fails on either:
1. Chromium runs with ``--enable-logging=stderr --v=0``, which prints every console message
   (errors, warnings, uncaught exceptions, CSP refusals) as an ``INFO:CONSOLE`` line on
   stderr; the pages under test log nothing, so any such line is a failure.
2. The pages install an error hook first thing (``report.ERROR_HOOK``) that records uncaught
   errors, ``console.error`` calls and CSP violations in ``<html data-js-errors=...>``, which
   ``--dump-dom`` returns with the rest of the DOM.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]


def find_chromium() -> str | None:
    env = os.environ.get("GALVATRON_CHROMIUM")
    if env:
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def require_chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("headless Chromium not found (apt-get install chromium, or set GALVATRON_CHROMIUM)")
    return path


@dataclass
class Page:
    dom: str
    console: list[str]  # INFO:CONSOLE lines from Chromium's stderr

    @property
    def js_errors(self) -> list[str]:
        m = re.search(r'<html[^>]*\sdata-js-errors="([^"]*)"', self.dom)
        return json.loads(html.unescape(m.group(1))) if m else []

    def attr_of_html(self, name: str) -> str | None:
        m = re.search(rf'<html[^>]*\s{name}="([^"]*)"', self.dom)
        return html.unescape(m.group(1)) if m else None

    def assert_clean(self) -> None:
        assert not self.console, f"console messages: {self.console}"
        assert not self.js_errors, f"errors recorded by the page's hook: {self.js_errors}"


def _run(url: str, extra: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    exe = require_chromium()
    with tempfile.TemporaryDirectory(prefix="galvatron-chromium-") as profile:
        return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *extra, url], capture_output=True,
                              text=True, timeout=timeout)


def load(url: str, virtual_time_ms: int = 0, timeout: float = 60) -> Page:
    """The DOM after load (and after ``virtual_time_ms`` of virtual time, for async pages)."""
    extra = ["--dump-dom"] + ([f"--virtual-time-budget={virtual_time_ms}"] if virtual_time_ms else [])
    r = _run(url, extra, timeout)
    console = [ln for ln in r.stderr.splitlines() if ":CONSOLE" in ln]
    assert r.stdout.strip(), f"chromium printed no DOM (rc {r.returncode}): {r.stderr[-2000:]}"
    return Page(r.stdout, console)


def screenshot(url: str, path: str, width: int = 1280, height: int = 2400, timeout: float = 60) -> list[str]:
    """Write a PNG of the page; returns the console lines seen while rendering it."""
    r = _run(url, [f"--window-size={width},{height}", f"--screenshot={path}"], timeout)
    assert os.path.exists(path), f"no screenshot written (rc {r.returncode}): {r.stderr[-2000:]}"
    return [ln for ln in r.stderr.splitlines() if ":CONSOLE" in ln]
