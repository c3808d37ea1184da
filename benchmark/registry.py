"""Name -> factory registries for methods, evaluators and datasets.

Modelled on timm's ``@register_model``: one registry per kind, one factory
(``Registry.create``), names validated on registration, and unknown names
rejected *before* any model or dataset is built, listing the valid names.

Third-party plugins register through the entry-point groups
``faceedit_bench.methods``, ``faceedit_bench.evaluators`` and
``faceedit_bench.datasets``: the entry point names a module (importing it runs
its ``@register_*`` decorators) or a callable that returns the class.
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import logging
import re
from types import ModuleType
from typing import Any, Callable, Generic, Iterator, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")

# Modules whose import registers the built-in entries of each kind.  They are
# imported lazily (on first lookup) so that `import benchmark` stays cheap.
_BUILTIN_MODULES: dict[str, tuple[str, ...]] = {
    "methods": ("methods",),
    "evaluators": ("evaluators",),
    "datasets": ("benchmark.data",),
}


class UnknownNameError(KeyError):
    """An unknown method / evaluator / dataset / attribute name."""

    def __init__(self, kind: str, name: str, valid: list[str]):
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(self.valid) or '(none)'}")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return self.args[0]


class RegistryError(ValueError):
    """A bad registration: invalid or duplicate name, or a broken plugin."""


def validate_name(name: str) -> str:
    """Names are identifiers in configs, CSV cells and directory names."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise RegistryError(
            f"invalid registry name {name!r}: use letters, digits, '_', '-', '.', no whitespace, "
            "starting with a letter or digit"
        )
    return name


class Registry(Generic[T]):
    """A registry of classes of one kind, filled by decorators and entry points."""

    def __init__(self, kind: str, group: str):
        self.kind = kind
        self.group = group
        self._entries: dict[str, T] = {}
        self._sources: dict[str, str] = {}
        self._loaded = False
        self.plugin_errors: dict[str, str] = {}

    # -- registration -------------------------------------------------------
    def register(self, name: str | None = None, *, source: str | None = None) -> Callable[[T], T]:
        """Decorator: ``@register_method("l2mgan")`` or ``@register_method()`` (uses ``cls.name``)."""

        def deco(obj: T) -> T:
            key = validate_name(name if name is not None else getattr(obj, "name", None))
            origin = source or f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', obj)}"
            if key in self._entries and self._entries[key] is not obj:
                raise RegistryError(
                    f"duplicate {self.kind} name {key!r}: already registered by {self._sources[key]}, "
                    f"again by {origin}"
                )
            self._entries[key] = obj
            self._sources[key] = origin
            if getattr(obj, "name", key) != key:
                try:
                    obj.name = key  # type: ignore[attr-defined]
                except (AttributeError, TypeError):
                    pass
            return obj

        return deco

    def unregister(self, name: str) -> None:
        """For tests and interactive sessions."""
        self._entries.pop(name, None)
        self._sources.pop(name, None)

    # -- discovery ----------------------------------------------------------
    def load_all(self) -> None:
        """Import built-ins, then entry-point plugins, once.

        A broken plugin does not take the benchmark down: its error is kept in
        ``plugin_errors`` (shown by ``--list``) and its name stays unknown.
        """
        if self._loaded:
            return
        self._loaded = True
        for mod in _BUILTIN_MODULES.get(self.kind + "s", ()):
            importlib.import_module(mod)
        for ep in md.entry_points(group=self.group):
            try:
                obj = ep.load()  # a module registers itself on import
                if not isinstance(obj, ModuleType) and ep.name not in self._entries:
                    # a class (or a zero-argument callable returning one) registers under the entry-point name
                    cls = obj if isinstance(obj, type) else obj()
                    self.register(ep.name, source=f"entry point {ep.value}")(cls)
            except Exception as exc:  # noqa: BLE001 - a plugin may fail in any way
                msg = f"{type(exc).__name__}: {exc}"
                self.plugin_errors[ep.name] = msg
                log.warning("%s plugin %r (%s) failed to load: %s", self.kind, ep.name, ep.value, msg)

    def reload(self) -> None:
        """Discover entry points again (after installing a plugin at run time)."""
        self._loaded = False
        self.plugin_errors.clear()
        importlib.invalidate_caches()
        self.load_all()

    # -- lookup -------------------------------------------------------------
    def names(self) -> list[str]:
        self.load_all()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        self.load_all()
        if name not in self._entries:
            raise UnknownNameError(self.kind, name, list(self._entries))
        return self._entries[name]

    def check(self, names: list[str]) -> None:
        """Fail on the first unknown name, before anything is built."""
        for n in names:
            self.get(n)

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """The one factory: look the class up and instantiate it."""
        return self.get(name)(*args, **kwargs)  # type: ignore[operator]

    def source(self, name: str) -> str:
        self.get(name)
        return self._sources[name]

    def __contains__(self, name: object) -> bool:
        self.load_all()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


METHODS: Registry[Any] = Registry("method", "faceedit_bench.methods")
EVALUATORS: Registry[Any] = Registry("evaluator", "faceedit_bench.evaluators")
DATASETS: Registry[Any] = Registry("dataset", "faceedit_bench.datasets")

register_method = METHODS.register
register_evaluator = EVALUATORS.register
register_dataset = DATASETS.register
