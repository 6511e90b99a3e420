"""Small file helpers shared by plans and profiles: JSON reading with clear errors, atomic writes."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


MAX_JSON_BYTES = 64 * 2**20  # no profile, plan or state file of ours comes near this
MAX_JSON_DEPTH = 64  # our formats nest at most ~6 levels


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file; errors name the file (and line/column for syntax errors).

    Bounded for hostile input: files over ``MAX_JSON_BYTES``, nesting deeper than
    ``MAX_JSON_DEPTH`` and repeated keys in one object (which JSON readers resolve differently)
    are refused with a ``ValueError``; nothing is executed.
    """
    p = os.fspath(path)
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_JSON_BYTES + 1)
    except FileNotFoundError:
        raise ValueError(f"{p}: file not found") from None
    except IsADirectoryError:
        raise ValueError(f"{p}: is a directory, not a JSON file") from None
    except OSError as e:
        raise ValueError(f"{p}: cannot read: {e.strerror or e}") from None
    if len(raw) > MAX_JSON_BYTES:
        raise ValueError(f"{p}: larger than {MAX_JSON_BYTES >> 20} MiB; not a file this project writes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{p}: not a UTF-8 text file") from None
    return parse_json_text(text, p)


def parse_json_text(text: str, where: str) -> Any:
    """``json.loads`` with the bounds of :func:`read_json`; errors start with ``where``."""
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise ValueError(f"{where}: JSON nested too deeply (accepted: at most {MAX_JSON_DEPTH} levels)") from None
    except ValueError as e:  # a repeated key; an integer of more than 4300 digits
        raise ValueError(f"{where}: {e}") from None
    _check_depth(data, where)
    return data


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"key {k[:80]!r} appears twice in one object")
        out[k] = v
    return out


def _check_depth(data: Any, where: str) -> None:
    stack = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"{where}: JSON nested too deeply (accepted: at most {MAX_JSON_DEPTH} levels)")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def load_json(path: str | os.PathLike[str], parse: Callable[[Any], T], what: str) -> T:
    """`parse(read_json(path))`; its ValueError gets the file name and `what` in front."""
    p = os.fspath(path)
    data = read_json(p)  # errors already name the file
    try:
        return parse(data)
    except ValueError as e:
        raise ValueError(f"{p}: invalid {what}: {e}") from None


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    p = os.fspath(path)
    tmp = f"{p}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ValueError(f"{p}: cannot write: {e.strerror or e}") from None

