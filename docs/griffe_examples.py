"""Griffe extension for the API reference: read ``Example:`` as an ``Examples:`` section.

metricssl's docstrings are Google style with a singular ``Example:`` heading; griffe only
knows ``Examples:`` and would render the doctest lines as prose (``>>>`` as quotes). Loaded
by mkdocs.yml (mkdocstrings ``extensions``); not a documentation page.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE_HEADING = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE_HEADING.sub(r"\1Examples:", obj.docstring.value)
