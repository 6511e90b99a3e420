"""``galvatron visualize``: a plan's predicted memory, per-layer strategy and step time.

- :func:`report_data` -- every number a report shows, as one JSON-compatible dict;
- :func:`render_report` -- that dict as one self-contained HTML page (inline SVG/CSS/JS);
- :func:`write_report` -- both, written atomically to a file;
- :mod:`galvatron.visualize.server` -- ``--serve``: a local page that re-runs the search;
- :mod:`galvatron.visualize.png` -- ``--png``: static matplotlib images (extra ``viz``).
"""

from __future__ import annotations

import os
from typing import Any

from galvatron._io import atomic_write_text
from galvatron.visualize.data import load_metrics, report_data
from galvatron.visualize.report import render_report


def write_report(path: str | os.PathLike[str], data: dict[str, Any]) -> None:
    atomic_write_text(path, render_report(data))


__all__ = ["load_metrics", "render_report", "report_data", "write_report"]
