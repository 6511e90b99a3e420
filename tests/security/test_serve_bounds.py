"""Issue 12, items 7 and 9 for ``galvatron visualize --serve``: a stalled client does not block
other clients; each search runs in a bounded worker process (timeout, memory limit) while the
server stays responsive; form fields are never truncated (7.9 or true is not 7 or 1); the
in-range request that grew the old server to 23 GB is refused at once."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from galvatron.visualize.server import ServeConfig
from tests.visualize.test_server import running as _running

CFG = ServeConfig(model="gpt2-debug", nodes=1, gpus_per_node=2, memory_gb=8.0, global_batch_size=4)


def running(cfg: ServeConfig = CFG):
    """The visualizer tests' in-process server (tests/visualize/test_server.py), with this file's config."""
    return _running(cfg)


def post(url: str, params: dict, timeout: float = 120) -> tuple[int, dict]:
    req = urllib.request.Request(url + "/api/search", data=json.dumps(params).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_stalled_client_does_not_block_the_others():
    with running() as url:
        port = int(url.rsplit(":", 1)[1])
        stalled = socket.create_connection(("127.0.0.1", port))
        try:  # headers promise a body that never comes; the old server waited 30 s on it
            stalled.sendall(b"POST /api/search HTTP/1.0\r\nContent-Length: 100\r\n\r\n{")
            time.sleep(0.2)
            with urllib.request.urlopen(url + "/", timeout=15) as r:
                assert r.status == 200 and b"Galvatron plan explorer" in r.read()
        finally:
            stalled.close()


@pytest.mark.parametrize("value", [7.9, True, "7.9", "8abc", [8], float("nan")])
def test_integer_fields_are_never_truncated(value):
    with running() as url:
        status, r = post(url, {"global_batch_size": value})
    assert status == 400 and r["error"].startswith("global_batch_size: expected an integer"), r


@pytest.mark.parametrize("value", ["inf", "nan", True, "-3"])
def test_number_fields_refuse_non_finite_values(value):
    with running() as url:
        status, r = post(url, {"memory_gb": value})
    assert status == 400 and r["error"].startswith("memory_gb:"), r


def test_the_23_gb_request_is_refused_at_once():
    """llama2-70b on 512 nodes, batch 1048576, seq 2097152: in range for the form, but its
    memory terms exceed what the cost model accepts (the old server grew to 23 GB on it)."""
    with running() as url:
        status, r = post(url, {"model": "llama2-70b", "nodes": 512, "gpus_per_node": 8,
                               "global_batch_size": 1048576, "seq_len": 2097152})
    assert status == 400 and "beyond the 2^60 bytes the cost model accepts" in r["error"], r


def test_a_slow_search_times_out_in_its_worker_and_the_server_keeps_serving():
    cfg = ServeConfig(**{**CFG.__dict__, "search_timeout_s": 1.0})
    with running(cfg) as url:
        status, r = post(url, {"model": "llama2-70b", "nodes": 512, "gpus_per_node": 8,
                               "global_batch_size": 1048576, "seq_len": 2048})
        assert status == 503 and "did not finish within the 1 s limit" in r["error"], r
        with urllib.request.urlopen(url + "/", timeout=15) as page:
            assert page.status == 200


def test_a_search_past_the_memory_limit_is_stopped_in_its_worker():
    # A limit below what the worker already holds: its next allocation from the system fails.
    # The search must need fresh memory (llama2-7b on 32 devices: profiles, tasks, frontiers);
    # a tiny one can finish in the heap the worker already has.
    cfg = ServeConfig(**{**CFG.__dict__, "worker_memory_bytes": 32 * 2**20, "search_timeout_s": 120.0})
    with running(cfg) as url:
        status, r = post(url, {"model": "llama2-7b", "nodes": 4, "gpus_per_node": 8, "global_batch_size": 64})
    assert status == 503 and "memory limit of --serve" in r["error"], r


def test_a_normal_search_in_a_worker_answers():
    with running() as url:
        status, r = post(url, {"global_batch_size": 4})
    assert status == 200 and r["ok"], r
    assert r["data"]["plan"]["plan"]["global_batch_size"] == 4
