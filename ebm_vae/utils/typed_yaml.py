"""Typed YAML: plain YAML files (with `base:` inheritance and `dotted.key=value` overrides)
validated once into frozen dataclasses, every error a one-line `ConfigError` naming the dotted
key. Each task owns its schema (core/config.py, completion/config.py, reproduce/spec.py); this
module knows none of them.
"""
from __future__ import annotations

import dataclasses
import math
import reprlib
import typing
from pathlib import Path
from typing import Any, List, Literal

import yaml

from ebm_vae.errors import UserError
from ebm_vae.utils.atomic import write_text


MAX_SEED = 2 ** 63 - 1  # seeds (config keys and flags) are in [0, MAX_SEED]; Paddle refuses < 0


class ConfigError(UserError, ValueError):
    """A configuration key is unknown, missing, of the wrong type or out of range."""


class DuplicateKeyError(yaml.YAMLError):
    """A mapping gives the same key twice (YAML requires keys to be unique)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping, at any depth."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` overrides on purpose
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, typing.Hashable) and key in seen:
                raise DuplicateKeyError(f"key '{key}' is given twice, on lines {seen[key]} and "
                                        f"{line}")
            if isinstance(key, typing.Hashable):
                seen[key] = line
        return super().construct_mapping(node, deep)


def safe_load(text: str) -> Any:
    """`yaml.safe_load`, refusing duplicate keys (DuplicateKeyError, a yaml.YAMLError)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def _yaml_problem(err: yaml.YAMLError) -> str:
    """The one-line problem of a YAML error (with its line and column where known)."""
    if isinstance(err, DuplicateKeyError):
        return str(err)
    mark = getattr(err, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    return f"{getattr(err, 'problem', None) or str(err).splitlines()[0]}{where}"


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 6, 6, 80, 80


def shown(value: Any) -> str:
    """`repr(value)`, cut short (a value an alias bomb built stays a short line, made at once)."""
    text = _REPR.repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def require(ok: bool, key: str, msg: str) -> None:
    """Raise ConfigError naming `key` unless `ok`."""
    if not ok:
        raise ConfigError(f"config key '{key}': {msg}")


def convert(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the type hint `tp`, building nested dataclasses."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:  # Optional[X], or one of several types (the first that fits)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options[:-1]:
            try:
                return convert(value, option, key)
            except ConfigError:
                pass
        return convert(value, options[-1], key)
    if origin is Literal:
        require(value in args, key, f"must be one of {list(args)}, got {shown(value)}")
        return value
    if origin in (list, List):
        require(isinstance(value, list), key, f"must be a list, got {shown(value)}")
        return [convert(v, args[0], f"{key}.{i}") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if tp is bool:
        require(isinstance(value, bool), key, f"must be true or false, got {shown(value)}")
        return value
    if tp is int:
        require(isinstance(value, int) and not isinstance(value, bool), key,
                 f"must be an integer, got {shown(value)}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        require(isinstance(value, (int, float)) and not isinstance(value, bool), key,
                 f"must be a number, got {shown(value)}")
        require(math.isfinite(value), key, f"must be a finite number, got {shown(value)}")
        return float(value)
    if tp is str:
        require(isinstance(value, str), key, f"must be a string, got {shown(value)}")
        return value
    raise TypeError(f"unsupported config type {tp} at {key}")


def build(cls: type, raw: Any, key: str = "") -> Any:
    """Validate the mapping `raw` into the dataclass `cls` (recursively), naming the dotted key
    of every unknown, missing or mistyped value; `key` is the prefix of `raw` itself."""
    prefix = f"{key}." if key else ""
    require(isinstance(raw, dict), key or "<top level>", f"must be a mapping, got {shown(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in raw:
        require(name in fields, f"{prefix}{name}",
                 f"unknown key (allowed here: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        if name in raw:
            kwargs[name] = convert(raw[name], hints[name], prefix + name)
        else:
            missing = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            require(not missing, prefix + name, "is required")
    return cls(**kwargs)


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one `dotted.key=value` override (value parsed as YAML) to a raw config dict."""
    if "=" not in assignment:
        raise ConfigError(f"override '{assignment}' must look like dotted.key=value")
    path, text = assignment.split("=", 1)
    keys = path.strip().split(".")
    node: Any = raw
    for i, k in enumerate(keys[:-1]):
        if isinstance(node, list):
            require(k.isdigit() and int(k) < len(node), ".".join(keys[:i + 1]),
                     f"list index out of range (the list has {len(node)} entries)")
            nxt = node[int(k)]
        else:
            nxt = node.get(k) if isinstance(node, dict) else None
        if nxt is None:
            if isinstance(node, dict):
                nxt = node[k] = {}
            else:
                raise ConfigError(f"config key '{'.'.join(keys[:i + 1])}': cannot be overridden")
        if not isinstance(nxt, (dict, list)):
            raise ConfigError(f"config key '{'.'.join(keys[:i + 1])}' is a single value "
                              f"({nxt!r}), so '{path.strip()}' cannot be set")
        node = nxt
    try:
        value = safe_load(text) if text.strip() else None
    except yaml.YAMLError as err:
        hint = "" if isinstance(err, DuplicateKeyError) else (
            "; quote strings that contain ':', '#', '[' or '{'")
        raise ConfigError(f"override '{assignment}': the value is not valid YAML "
                          f"({_yaml_problem(err)}){hint}") from None
    last = keys[-1]
    if isinstance(node, list):
        require(last.isdigit() and int(last) < len(node), path, "list index out of range")
        node[int(last)] = value
    else:
        node[last] = value


def merge(base: dict, update: dict) -> dict:
    """Deep-merge `update` into a copy of `base` (mappings merge, everything else replaces)."""
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """Read a YAML mapping; a top-level `base: other.yaml` (relative to this file) is merged under it."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'base' files form a cycle")
    try:
        raw = safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not a text (UTF-8) YAML file: {err.reason} at byte "
                          f"{err.start}") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {_yaml_problem(err)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    if "base" in raw:
        base = raw.pop("base")
        if not isinstance(base, str):
            raise ConfigError(f"{path}: config key 'base' must be a file name")
        raw = merge(read_yaml(path.parent / base, seen + (path.resolve(),)), raw)
    return raw


def load_raw(path: str | Path, overrides: list[str] = ()) -> dict:
    """Read a YAML file (with its `base` files) into a dict and apply `dotted.key=value` overrides."""
    raw = read_yaml(Path(path))
    for assignment in overrides:
        apply_override(raw, assignment)
    return raw


def dump_yaml(obj: Any, path: str | Path) -> None:
    """Write a dataclass as YAML (it loads back to an equal object through `build`)."""
    write_text(path, yaml.safe_dump(dataclasses.asdict(obj), sort_keys=False))
