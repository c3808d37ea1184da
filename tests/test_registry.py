"""Registry: name validation, duplicates, unknown names listing the valid ones, the factory."""
from __future__ import annotations

import pytest

from benchmark.registry import DATASETS, EVALUATORS, METHODS, Registry, RegistryError, UnknownNameError
from methods.base import Editor


@pytest.mark.parametrize("bad", ["", "has space", "tab\tname", " lead", "new\nline", "-dash-first", None, 3])
def test_invalid_names_rejected(bad):
    reg: Registry = Registry("thing", "faceedit_bench.test_things")
    with pytest.raises(RegistryError):
        reg.register(bad)(type("X", (), {}))


def test_duplicate_name_rejected_and_names_both_sources():
    reg: Registry = Registry("thing", "faceedit_bench.test_things")
    reg.register("a")(type("First", (), {}))
    with pytest.raises(RegistryError, match="duplicate thing name 'a'.*First.*Second"):
        reg.register("a")(type("Second", (), {}))


def test_reregistering_same_object_is_idempotent():
    reg: Registry = Registry("thing", "faceedit_bench.test_things")
    cls = type("Same", (), {})
    reg.register("same")(cls)
    reg.register("same")(cls)
    assert reg.names() == ["same"]


def test_unknown_name_lists_valid_ones():
    with pytest.raises(UnknownNameError) as err:
        METHODS.get("no-such-editor")
    msg = str(err.value)
    assert "no-such-editor" in msg and "identity" in msg


def test_check_fails_on_first_unknown_before_building():
    with pytest.raises(UnknownNameError, match="bogus"):
        EVALUATORS.check(["mean-abs-change", "bogus"])


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_follows_the_contract(name):
    cls = METHODS.get(name)
    assert issubclass(cls, Editor)
    assert cls.name == name
    assert cls.meta.paper


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_declares_grouped_celeba_attributes(name):
    from benchmark.data.base import CELEBA_GROUPS

    cls = DATASETS.get(name)
    for spec in cls.attributes:
        assert spec.group in ("local", "global")
        if spec.name in CELEBA_GROUPS and name != "toy-faces":
            assert spec.group == CELEBA_GROUPS[spec.name], f"{name}: {spec.name} grouped differently"
