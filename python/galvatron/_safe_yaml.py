"""YAML reading for configuration files, bounded against hostile input.

``yaml.safe_load`` constructs no Python objects beyond plain data, but it expands aliases:
nine nested levels of ``&a [*b, *b, ...]`` (a "billion laughs" file of a few hundred bytes) build
a structure of billions of nodes. Our configuration files never need aliases, so this loader
refuses them (and merge keys ``<<: *x``, which are aliases) with the line of the first one,
and bounds the number of nodes and the nesting depth of what it builds.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_YAML_NODES = 100_000
MAX_YAML_DEPTH = 32


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that composes no alias and at most MAX_YAML_NODES nodes."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._nodes = 0
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: D401 - PyYAML hook
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not accepted in configuration files; write the value out",
                mark)
        self._nodes += 1
        if self._nodes > MAX_YAML_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"more than {MAX_YAML_NODES} values; not a configuration file", self.peek_event().start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(text: str, where: str) -> Any:
    """Parse one YAML document of plain data; any problem is a ``ValueError`` naming ``where``
    (and the line and column)."""
    loader = None
    try:
        loader = _BoundedLoader(text)
        return loader.get_single_data()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or getattr(e, "reason", None) or str(e)
        raise ValueError(f"{where}: cannot parse YAML{at}: {str(problem).splitlines()[0][:200]}") from None
    except RecursionError:
        raise ValueError(f"{where}: YAML nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()
