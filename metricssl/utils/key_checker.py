"""PML's dictionary-key checks for trainers (``pytorch_metric_learning.utils.key_checker``).

A trainer's dictionaries (``models``, ``loss_funcs``, ``optimizers``, ...) are checked against
a schema: every key must match one of the allowed patterns (regular expressions), essential
keys must be present (else :class:`~metricssl.core.validation.ArgumentError`, a ``ValueError`` that is also
the ``AssertionError`` PML raises), and missing important keys or an empty
dictionary are logged as warnings on :data:`metricssl.utils.common_functions.LOGGER`.
"""

from __future__ import annotations

from collections.abc import Callable

from ..core.validation import ArgumentError
from . import common_functions as c_f


def default_important(checker: KeyChecker, children: dict) -> list[str]:
    """PML's default: every allowed key that is not essential is important. (Callable keys
    are resolved first; PML's fails on them with a TypeError.)"""

    def resolve(value):
        return value(checker, children) if callable(value) else value

    return c_f.exclude(resolve(checker.keys), resolve(checker.essential))


class KeyChecker:
    """The allowed, important and essential keys of one dictionary.

    Each of ``keys``, ``important`` and ``essential`` is a list of regular expressions, or a
    function ``f(checker, children) -> list`` evaluated when the dictionary is verified (so a
    schema entry can depend on another entry's keys).

    Args:
        keys: patterns every key must match.
        warn_empty: log a warning when the dictionary is ``None`` or empty.
        important: patterns whose absence is logged as a warning (default: the allowed keys
            that are not essential).
        essential: patterns that must be present.

    Example:
        >>> from metricssl.utils.key_checker import KeyChecker, KeyCheckerDict
        >>> class Trainer:
        ...     models = {"trunk": None}
        >>> schema = KeyCheckerDict({"models": KeyChecker(["trunk", "embedder"], essential=["trunk"])})
        >>> schema.verify(Trainer())  # logs 'models is missing "embedder"'
    """

    def __init__(
        self,
        keys: list[str] | Callable,
        warn_empty: bool = True,
        important: list[str] | Callable = default_important,
        essential: list[str] | Callable | None = None,
    ):
        self.keys = keys
        self.warn_empty = warn_empty
        self.important = important
        self.essential = [] if essential is None else essential


class KeyCheckerDict:
    """A schema: ``{attribute name: KeyChecker}``, verified against an object's attributes.

    Args:
        children: the checkers, by the name of the attribute they check.
    """

    def __init__(self, children: dict[str, KeyChecker]):
        self.children = children

    def __getitem__(self, key: str) -> KeyChecker:
        return self.children[key]

    def __setitem__(self, key: str, value: KeyChecker) -> None:
        self.children[key] = value

    def verify(self, obj) -> None:
        """Check each attribute of ``obj`` named in the schema (a missing attribute is None)."""
        for name, checker in self.children.items():
            self._verify_prop(getattr(obj, name, None), name, checker)

    def _resolve(self, value, checker: KeyChecker):
        return value(checker, self.children) if callable(value) else value

    def _verify_prop(self, obj, obj_name: str, checker: KeyChecker) -> None:
        if checker.warn_empty and (obj is None or obj == {}):
            c_f.LOGGER.warning(f"{obj_name} is empty")
        if obj is None:
            return
        allowed = self._resolve(checker.keys, checker)
        patterns = c_f.regex_wrapper(list(allowed))
        for key in obj.keys():
            if not any(p.match(key) for p in patterns):
                raise ArgumentError(
                    f"{obj_name} keys must be one of {', '.join(allowed)} (got {key!r})"
                )
        for wanted in self._resolve(checker.important, checker):
            if not any(c_f.regex_wrapper(wanted).match(k) for k in obj):
                c_f.LOGGER.warning(f'{obj_name} is missing "{wanted}"')
        for needed in self._resolve(checker.essential, checker):
            if not any(c_f.regex_wrapper(needed).match(k) for k in obj):
                raise ArgumentError(f'{obj_name} must contain "{needed}"')
