"""A griffe extension that reads kiln's docstrings the way the doctests are written.

kiln's docstrings are Google style with one difference griffe does not follow: the examples
section is titled `Example:` (singular), which griffe would render as an admonition of
Markdown, so the doctest lines would lose their code formatting. Three rewrites, made to the
docstring text before griffe parses it, and only for the documentation site:

- `Example:` becomes `Examples:`, so the doctests render as code;
- an argument line that documents several names at once (`task, num_classes: As for ...`)
  becomes one line per name, so each is matched with the signature;
- a paragraph ending in reStructuredText's `::` ends in `:` (the indented block after it is a
  Markdown code block already).

This file is loaded by `mkdocs.yml` (mkdocstrings' `extensions` option) and is not part of the
site (`exclude_docs`).
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$")
_SEVERAL = re.compile(r"^(\s+)(\w+(?:,\s*\w+)+):\s+(.*)$")
_LITERAL = re.compile(r"(\S)::\s*$")


def rewrite(text: str) -> str:
    """Return a docstring with the three rewrites above applied."""
    lines: list[str] = []
    section = ""
    for line in text.splitlines():
        heading = re.match(r"^\s*(\w[\w ]*):\s*$", line)
        if heading:
            section = heading.group(1).lower()
        line = _EXAMPLE.sub(r"\1Examples:", line)
        several = _SEVERAL.match(line) if section in ("args", "arguments") else None
        if several:
            indent, names, description = several.groups()
            lines += [f"{indent}{name.strip()}: {description}" for name in names.split(",")]
            continue
        lines.append(_LITERAL.sub(r"\1:", line))
    return "\n".join(lines)


class KilnDocstrings(Extension):
    """Apply `rewrite` to every docstring griffe loads."""

    def on_instance(self, *, obj: Object, **kwargs: Any) -> None:
        """Rewrite the object's docstring before anything parses it."""
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
