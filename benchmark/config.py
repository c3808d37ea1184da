"""One defaults object, YAML overlays and dotted command-line overrides.

Resolution order: ``Config()`` defaults <- the YAML file (``--config``) <-
``key.sub=value`` overrides, in order.  Values of overrides are parsed as YAML
(``methods=[identity,oracle]``, ``data.resolution=32``, ``device=cpu``), never
evaluated as Python.  Every key is checked against the dataclass fields so a
typo fails with the list of valid keys instead of being silently ignored;
``*_options`` dicts are free-form because they belong to plugins.

An override sets exactly the key it names and keeps everything beside it:
``data.options.root=X`` changes ``root`` and keeps the file's other dataset
options, ``method_options.m.lr=0.1`` keeps ``m``'s other options.  Replacing a
whole mapping is explicit: ``data.options={root: X}``.
"""
from __future__ import annotations

import copy
import dataclasses
import math
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
class FitsConfig:
    """How editor fits are resolved and trained (methods/training.py).

    Resolution order of every training stage: the user's cache, then the reference fit shipped in
    the repository whose key matches (unless ``reference: false`` or ``--retrain``), then training.
    The intervals are runtime-only: they never enter a cache key.
    """

    reference: bool = True  # use shipped reference fits whose key matches
    log_every: int = 50  # steps between stats.jsonl rows (and progress-bar loss updates)
    sample_every: int = 1000  # steps between sample grids (fakes<step>.png); 0: only at the end
    checkpoint_every: int = 500  # steps between resumable checkpoints (also on SIGTERM and at the end)
    fit_only: bool = False  # train/resolve every fit of the grid, evaluate nothing
    # keep each trained stage's last checkpoint (every registered object: critics, optimisers, EMA, RNG) as
    # <entry>.state.pt beside its cache entry; a fit keeps only what editing needs (docs/training.md)
    keep_state: bool = False


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
    fits: FitsConfig = field(default_factory=FitsConfig)
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
    """``a.b.c=value``: walk the dataclasses, then the free-form dicts, and set only the last key.

    Siblings of the key are kept at every level, so an override never drops
    the other entries of the mapping it goes into; naming the mapping itself
    (``data.options={...}``) replaces it.
    """
    parts = dotted.split(".")
    prefix = ""
    for i, part in enumerate(parts):
        valid = {f.name for f in fields(obj)}
        if part not in valid:
            raise ConfigError(f"unknown config key {prefix + part!r}; valid keys here: {', '.join(sorted(valid))}")
        rest = parts[i + 1:]
        current = getattr(obj, part)
        if not rest:
            _merge(obj, {part: value}, prefix)
            return
        if dataclasses.is_dataclass(current):
            obj, prefix = current, f"{prefix}{part}."
            continue
        if isinstance(current, dict):
            _merge(obj, {part: _dict_with(current, rest, value, f"{prefix}{part}")}, prefix)
            return
        raise ConfigError(f"{prefix}{part} is {current!r}, not a mapping: it has no key {rest[0]!r}")


def _dict_with(base: dict[str, Any], keys: list[str], value: Any, where: str) -> dict[str, Any]:
    """A deep copy of ``base`` with ``value`` set at the nested ``keys`` (missing levels are created)."""
    out = copy.deepcopy(base)
    cursor = out
    for key in keys[:-1]:
        where = f"{where}.{key}"
        nxt = cursor.setdefault(key, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{where} is {nxt!r}, not a mapping; set it whole with {where}={{...}}")
        cursor = nxt
    cursor[keys[-1]] = value
    return out


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
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if data is None:  # an empty file (or only comments) is almost always a wrong path or a bad save
            raise ConfigError(f"config file {path} is empty; it needs at least one setting "
                              "(see configs/smoke.yaml), or drop --config for the built-in defaults")
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
    """Value checks that types alone cannot express; each failure names the key and the fix."""
    for group in ("methods", "evaluators", "attributes", "seeds", "strengths"):
        if not getattr(cfg, group):
            raise ConfigError(f"{group}: at least one {group[:-1]} is needed" +
                              (" (names, or local / global / all)" if group == "attributes" else ""))
    bad = [s for s in cfg.strengths if not math.isfinite(s)]
    if bad:
        raise ConfigError(f"strengths: {bad} are not finite numbers; use values like [0.5, 1.0, 2.0]")
    if not 8 <= cfg.data.resolution <= 1024:
        raise ConfigError(f"data.resolution: {cfg.data.resolution} is outside 8..1024")
    if cfg.data.batch_size < 1:
        raise ConfigError("data.batch_size must be >= 1")
    if cfg.data.max_test is not None and cfg.data.max_test < 1:
        raise ConfigError(f"data.max_test: {cfg.data.max_test} would evaluate no image; use a count >= 1, "
                          "or null for the whole test split")
    if cfg.data.num_workers < 0:
        raise ConfigError(f"data.num_workers: {cfg.data.num_workers} is negative; use 0 (load in the main "
                          "process) or a number of worker processes")
    for group in ("methods", "evaluators", "attributes", "seeds", "strengths"):
        items = getattr(cfg, group)
        dup = {x for x in items if items.count(x) > 1}
        if dup:
            raise ConfigError(f"{group}: duplicate entries {sorted(dup)}")
    budget_keys = {"steps", "minutes", "batch_size"}
    extra = set(cfg.budget) - budget_keys
    if extra:
        raise ConfigError(f"budget: unknown keys {sorted(extra)}; valid: {sorted(budget_keys)}")
    for key in ("steps", "batch_size"):
        value = cfg.budget.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"budget.{key}: expected a positive integer, got {value!r}")
    minutes = cfg.budget.get("minutes")
    if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or minutes <= 0):
        raise ConfigError(f"budget.minutes: expected a positive number, got {minutes!r}")
    for key in ("log_every", "checkpoint_every"):
        if getattr(cfg.fits, key) < 1:
            raise ConfigError(f"fits.{key}: must be >= 1, got {getattr(cfg.fits, key)}")
    if cfg.fits.sample_every < 0:
        raise ConfigError(f"fits.sample_every: must be >= 0 (0: only at the end), got {cfg.fits.sample_every}")
    if not (cfg.device in ("auto", "cpu", "cuda", "mps") or cfg.device.startswith("cuda:")):
        raise ConfigError(f"device: {cfg.device!r} is not auto, cpu, cuda, cuda:N or mps")
    for group in ("method_options", "evaluator_options"):
        for name, opts in getattr(cfg, group).items():
            if not isinstance(opts, dict):
                raise ConfigError(f"{group}.{name}: expected a mapping of options, got {opts!r}")
