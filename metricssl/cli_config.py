"""The settings of ``metricssl train``: the Trainer's own arguments, from a config file and
the command line, resolved once and saved in the run folder.

The keys are the parameters of :class:`metricssl.ssl.Trainer` read from its signature, so a
parameter added to the Trainer is reachable from a file at once. Precedence, lowest first:
the Trainer's defaults, the ``--config`` file, ``--set KEY=VALUE``, the named flags.

Example:
    >>> from metricssl.cli_config import resolve_settings
    >>> settings, given = resolve_settings(None, [], {"method": "simclr", "epochs": 2})
    >>> settings["epochs"], settings["seed"], sorted(given)
    (2, 0, ['epochs', 'method'])
"""

from __future__ import annotations

import difflib
import inspect
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

# The Trainer's Mapping-valued parameters: ``--set hparams.temperature=0.2`` sets one key.
NESTED = ("hparams", "backbone_kwargs")
CONFIG_SUFFIXES = (".yaml", ".yml", ".toml", ".json")
RESOLVED_NAME = "resolved.json"


def trainer_parameters() -> dict[str, inspect.Parameter]:
    """The Trainer's keyword parameters, from its signature (no hand-kept list)."""
    from .ssl import Trainer

    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    parameters = inspect.signature(Trainer.__init__).parameters
    return {name: p for name, p in parameters.items() if name != "self" and p.kind not in skip}


def read_config(path: str | os.PathLike) -> dict:
    """The mapping in a ``.yaml``/``.yml`` (PyYAML), ``.toml`` (tomllib) or ``.json`` file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in CONFIG_SUFFIXES:
        raise ValueError(f"--config must be a {', '.join(CONFIG_SUFFIXES)} file, got {str(path)!r}")
    if not path.is_file():
        raise FileNotFoundError(f"--config: no file at {str(path)!r}")
    if suffix == ".json":
        parse = json.loads
    elif suffix == ".toml":
        parse = _toml().loads
    else:
        parse = _yaml().safe_load
    try:
        data = parse(path.read_text(encoding="utf-8"))
    except Exception as err:  # each parser has its own error class (yaml.YAMLError, ...)
        message = " ".join(str(err).split())
        raise ValueError(f"--config {path}: not a readable {suffix[1:]} file ({message})") from None
    if data is None:
        data = {}  # an empty YAML file
    if not isinstance(data, Mapping):
        raise ValueError(
            f"--config {path}: expected a mapping of Trainer arguments at the top level, got "
            f"{type(data).__name__}"
        )
    return dict(data)


def _yaml():
    try:
        import yaml
    except ImportError:
        # A usage error (exit 2 with one line), not a crash.
        raise ValueError(
            "--config .yaml needs PyYAML: pip install 'metricssl[config]' (or use .toml/.json)"
        ) from None
    return yaml


def _toml():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ValueError(
                "--config .toml needs Python 3.11 or the tomli package on 3.10"
            ) from None
    return tomllib


def parse_set(items: list[str]) -> dict:
    """``KEY=VALUE`` strings as settings. VALUE is read as JSON (numbers, true/false, null,
    lists, objects) and is a plain string otherwise; ``hparams.temperature=0.2`` sets one key
    of a mapping argument."""
    settings: dict = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        outer, dot, inner = key.partition(".")
        if dot:
            if outer not in NESTED:
                raise ValueError(
                    f"--set {key}: only {', '.join(NESTED)} take dotted keys (KEY.NAME=VALUE)"
                )
            nested = settings.setdefault(outer, {})
            if not isinstance(nested, dict):
                raise ValueError(f"--set {outer} is given both whole and by key")
            nested[inner] = value
        else:
            if key in NESTED and isinstance(settings.get(key), dict) and isinstance(value, dict):
                value = {**settings[key], **value}
            settings[key] = value
    return settings


def check_keys(settings: Mapping, parameters: Mapping, where: str) -> None:
    """Refuse keys that are not Trainer parameters, naming each (and a near spelling)."""
    unknown = [key for key in settings if key not in parameters]
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), list(parameters), n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise ValueError(
        f"{where}: unknown Trainer argument{'s' if len(unknown) > 1 else ''} "
        f"{', '.join(hints)}; the Trainer takes {', '.join(parameters)}"
    )


def resolve_settings(
    config: str | os.PathLike | None, set_items: list[str], flags: dict
) -> tuple[dict, set]:
    """Every Trainer argument: its default, overridden by the config file, then by ``--set``,
    then by the flags given on the command line (``flags`` holds only those); and the names
    set by any of the three."""
    parameters = trainer_parameters()
    layers = []
    if config is not None:
        layers.append((read_config(config), f"--config {config}"))
    layers.append((parse_set(set_items), "--set"))
    layers.append((flags, "flags"))
    settings = {name: p.default for name, p in parameters.items()}
    given = set()
    for layer, where in layers:
        check_keys(layer, parameters, where)
        for key, value in layer.items():
            settings[key] = _coerce(key, value, parameters[key], where)
        given |= set(layer)
    return settings, given


def _coerce(key: str, value, parameter: inspect.Parameter, where: str):
    """Plain values only; a string where the Trainer takes a number is read as one (YAML
    1.1 reads ``1e-3`` as a string)."""
    _check_plain(key, value, where)
    words = set(re.findall(r"\w+", str(parameter.annotation)))
    if isinstance(value, str) and "str" not in words and words & {"int", "float"}:
        try:
            number = float(value)
        except ValueError:
            return value  # the Trainer names the argument and what it takes
        if "int" in words and "float" not in words and number.is_integer():
            return int(number)
        return number
    return value


def _check_plain(key: str, value, where: str) -> None:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_plain(key, item, where)
        return
    if isinstance(value, Mapping):
        for item in value.values():
            _check_plain(key, item, where)
        return
    raise ValueError(
        f"{where}: {key} = {value!r} ({type(value).__name__}) is not a number, string, "
        f"boolean, list or mapping"
    )


def save_resolved(settings: Mapping, out: str | os.PathLike) -> Path:
    """Write the resolved settings to ``OUT/resolved.json`` (atomically); the file is a
    valid ``--config`` for the same run."""
    from .core.atomic import atomic_write

    path = Path(out) / RESOLVED_NAME
    with atomic_write(path, "w") as f:
        json.dump(dict(settings), f, indent=2)
        f.write("\n")
    return path
