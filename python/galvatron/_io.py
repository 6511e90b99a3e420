"""Small file helpers shared by plans and profiles: JSON reading with clear errors, atomic writes."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file; errors name the file (and line/column for syntax errors)."""
    p = os.fspath(path)
    try:
        with open(p, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ValueError(f"{p}: file not found") from None
    except OSError as e:
        raise ValueError(f"{p}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{p}: not a UTF-8 text file") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


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

