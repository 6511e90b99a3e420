"""Suite-wide setup: the tests never read or write the user's caches.

``GALVATRON_CACHE_DIR`` is pointed at a fresh temporary directory before any test runs; the
environment variable is inherited by every process the tests spawn (training jobs, profilers,
torchrun), so a hardware profile measured under test load can never be reused by a real run.
"""

from __future__ import annotations

import os
import shutil
import tempfile

_CACHE = tempfile.mkdtemp(prefix="galvatron-test-cache-")
os.environ["GALVATRON_CACHE_DIR"] = _CACHE


def pytest_unconfigure(config):  # noqa: ARG001 - pytest hook signature
    shutil.rmtree(_CACHE, ignore_errors=True)
