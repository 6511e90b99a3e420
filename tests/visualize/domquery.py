"""Read the drawn elements (tag, attributes, ancestors) back from an HTML/DOM dump."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

VOID = {"meta", "link", "br", "img", "input", "hr", "col", "source", "wbr", "area", "base", "embed", "param",
        "track"}


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, dict[str, str]]] = []
        self.elements: list[tuple[str, dict[str, str], list[tuple[str, dict[str, str]]]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.elements.append((tag, a, list(self.stack)))
        if tag not in VOID:
            self.stack.append((tag, a))

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, {k: v or "" for k, v in attrs}, list(self.stack)))

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break

    def handle_data(self, data):
        self.text.append(data)


def parse(dom: str) -> _Collector:
    c = _Collector()
    c.feed(dom)
    return c


def has_class(attrs: dict[str, str], cls: str) -> bool:
    return cls in attrs.get("class", "").split()


def find(c: _Collector, tag: str, cls: str, within: tuple[str, str, str] | None = None) -> list[dict[str, str]]:
    """Elements ``tag.cls``; ``within=(tag, attr, value)`` keeps those inside such an ancestor."""
    out = []
    for t, a, anc in c.elements:
        if t != tag or not has_class(a, cls):
            continue
        if within and not any(at == within[0] and aa.get(within[1]) == within[2] for at, aa in anc):
            continue
        out.append(a)
    return out


def ancestor_attr(c: _Collector, tag: str, cls: str, within: tuple[str, str, str], anc_cls: str,
                  attr: str) -> list[tuple[str, dict[str, str]]]:
    """(value of ``attr`` on the nearest ancestor with class ``anc_cls``, element attrs) pairs."""
    out = []
    for t, a, anc in c.elements:
        if t != tag or not has_class(a, cls):
            continue
        if not any(at == within[0] and aa.get(within[1]) == within[2] for at, aa in anc):
            continue
        owner = next(aa for _, aa in reversed(anc) if has_class(aa, anc_cls))
        out.append((owner.get(attr, ""), a))
    return out


def embedded_data(text: str) -> dict:
    m = re.search(r'<script type="application/json" id="galvatron-data">(.*?)</script>', text, re.S)
    assert m, "no galvatron-data blob"
    return json.loads(m.group(1))
