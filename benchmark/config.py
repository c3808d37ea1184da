"""One defaults object, YAML overlays and dotted command-line overrides.

Resolution order: ``Config()`` defaults <- the YAML file (``--config``) <-
``key.sub=value`` overrides, in order.  Values of overrides are parsed as YAML
(``methods=[identity,oracle]``, ``data.resolution=32``, ``device=cpu``), never
evaluated as Python.  Every key is checked against the dataclass fields so a
typo fails with the list of valid keys instead of being silently ignored;
``*_options`` dicts are free-form because they belong to plugins.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A broken config file or override; the message names the key and the problem."""


@dataclass
class DataConfig:
    name: str = "synthfaces"
    resolution: int = 64
    batch_size: int = 32
    num_workers: int = 0
    max_test: int | None = None  # cap on test images per cell (None: the whole split)
    options: dict[str, Any] = field(default_factory=dict)  # forwarded to the dataset constructor


@dataclass
class OutputConfig:
    root: str = "results/runs"  # relative paths are relative to the working directory
    save_images: int = 8  # source/edited pairs saved per cell for figure grids
    progress: bool = True


@dataclass
class Config:
    """The defaults object: everything a run needs, nothing implicit."""

    name: str = "default"
    data: DataConfig = field(default_factory=DataConfig)
    methods: list[str] = field(default_factory=lambda: ["identity"])
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    attributes: list[str] = field(default_factory=lambda: ["local", "global"])
    strengths: list[float] = field(default_factory=lambda: [1.0])
    seeds: list[int] = field(default_factory=lambda: [0])
    evaluators: list[str] = field(default_factory=lambda: ["lpips"])
    evaluator_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    budget: dict[str, Any] = field(default_factory=dict)  # methods.base.Budget fields
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# -- type checking of values ---------------------------------------------------

def _check_type(key: str, value: Any, tp: Any) -> Any:
    """Coerce what YAML gives into the declared type, or raise ConfigError naming the key."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_type(key, value, inner[0])
    if origin is list:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # `methods=identity` means a one-item list
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_check_type(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {str(k): _check_type(f"{key}.{k}", v, args[1]) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def _merge(obj: Any, updates: dict[str, Any], prefix: str = "") -> None:
    """Apply a nested dict onto a dataclass instance, validating keys and types."""
    if not isinstance(updates, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {updates!r}")
    hints = typing.get_type_hints(type(obj))
    valid = {f.name for f in fields(obj)}
    for key, value in updates.items():
        path = f"{prefix}{key}"
        if key not in valid:
            raise ConfigError(f"unknown config key {path!r}; valid keys here: {', '.join(sorted(valid))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, prefix=f"{path}.")
        else:
            setattr(obj, key, _check_type(path, value, hints[key]))


def _set_dotted(obj: Any, dotted: str, value: Any) -> None:
    """``a.b.c=value`` onto nested dataclasses; inside a free-form dict, creates keys."""
    parts = dotted.split(".")
    nested: dict[str, Any] = {}
    cursor = nested
    for p in parts[:-1]:
        cursor = cursor.setdefault(p, {})
    cursor[parts[-1]] = value
    _merge_deep(obj, nested)


def _merge_deep(obj: Any, updates: dict[str, Any]) -> None:
    """Like _merge, but merges into existing free-form dicts instead of replacing them."""
    for key, value in updates.items():
        current = getattr(obj, key, None) if hasattr(obj, key) else None
        if isinstance(current, dict) and isinstance(value, dict):
            merged = _deep_update(dict(current), value)
            _merge(obj, {key: merged})
        else:
            _merge(obj, {key: value})


def _deep_update(base: dict, upd: dict) -> dict:
    for k, v in upd.items():
        base[k] = _deep_update(dict(base[k]), v) if isinstance(base.get(k), dict) and isinstance(v, dict) else v
    return base


def parse_override(text: str) -> tuple[str, Any]:
    """``key.sub=value`` -> (dotted key, YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. data.resolution=32)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    return key, value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Resolve defaults <- YAML file <- overrides into a validated Config."""
    cfg = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        _merge(cfg, data)
        if "name" not in data:
            cfg.name = path.stem
    return apply_overrides(cfg, overrides or [])


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``key=value`` overrides in order, then validate."""
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(cfg, key, value)
    validate(cfg)
    return cfg


def config_from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> Config:
    """Rebuild a Config from a resolved ``config.yaml`` (for --resume)."""
    cfg = Config()
    _merge(cfg, data)
    return apply_overrides(cfg, overrides or [])


def validate(cfg: Config) -> None:
    """Value checks that types alone cannot express."""
    if not cfg.methods:
        raise ConfigError("methods: at least one method is needed")
    if not cfg.evaluators:
        raise ConfigError("evaluators: at least one evaluator is needed")
    if not cfg.seeds:
        raise ConfigError("seeds: at least one seed is needed")
    if not cfg.strengths:
        raise ConfigError("strengths: at least one strength is needed")
    if not 8 <= cfg.data.resolution <= 1024:
        raise ConfigError(f"data.resolution: {cfg.data.resolution} is outside 8..1024")
    if cfg.data.batch_size < 1:
        raise ConfigError("data.batch_size must be >= 1")
    for group in ("methods", "evaluators", "attributes"):
        items = getattr(cfg, group)
        dup = {x for x in items if items.count(x) > 1}
        if dup:
            raise ConfigError(f"{group}: duplicate entries {sorted(dup)}")
    budget_keys = {"steps", "minutes", "batch_size"}
    extra = set(cfg.budget) - budget_keys
    if extra:
        raise ConfigError(f"budget: unknown keys {sorted(extra)}; valid: {sorted(budget_keys)}")
    if not (cfg.device in ("auto", "cpu", "cuda", "mps") or cfg.device.startswith("cuda:")):
        raise ConfigError(f"device: {cfg.device!r} is not auto, cpu, cuda, cuda:N or mps")
