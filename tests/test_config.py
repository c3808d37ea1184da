"""Config: defaults <- YAML <- dotted overrides, with errors that name the problem."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.config import Config, ConfigError, load_config, parse_override

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_without_file():
    cfg = load_config()
    assert cfg == Config()


def test_overrides_are_yaml_typed_and_nested():
    cfg = load_config(None, ["methods=[identity,oracle]", "data.resolution=32", "seeds=[0,1,2]",
                             "strengths=[0.5,1,2]", "device=cpu", "method_options.l2mgan.lr=0.0001",
                             "method_options.l2mgan.beta=[0.0,0.99]"])
    assert cfg.methods == ["identity", "oracle"]
    assert cfg.data.resolution == 32
    assert cfg.seeds == [0, 1, 2]
    assert cfg.strengths == [0.5, 1.0, 2.0] and all(isinstance(s, float) for s in cfg.strengths)
    assert cfg.method_options == {"l2mgan": {"lr": 0.0001, "beta": [0.0, 0.99]}}


def test_scalar_for_list_means_one_item():
    assert load_config(None, ["methods=identity"]).methods == ["identity"]


def test_file_then_overrides(tmp_path):
    f = tmp_path / "grid.yaml"
    f.write_text("data: {resolution: 48, batch_size: 4}\nmethods: [identity]\n")
    cfg = load_config(f, ["data.batch_size=8"])
    assert (cfg.name, cfg.data.resolution, cfg.data.batch_size) == ("grid", 48, 8)


@pytest.mark.parametrize("override, pattern", [
    ("data.resolutoin=32", "unknown config key 'data.resolutoin'.*resolution"),
    ("nosuchkey=1", "unknown config key 'nosuchkey'"),
    ("data.resolution=abc", "data.resolution: expected an integer"),
    ("data.resolution=4", "outside 8..1024"),
    ("seeds=[0, x]", r"seeds\[1\]: expected an integer"),
    ("methods=[]", "at least one method"),
    ("methods=[a,a]", "duplicate"),
    ("device=gpu0", "device"),
    ("budget.stepz=3", "budget: unknown keys"),
    ("data.resolution", "not of the form key=value"),
    ("data.resolution=[1", "not valid YAML"),
])
def test_bad_overrides_name_the_problem(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [override])


def test_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_override_value_never_evaluated():
    key, value = parse_override("name=__import__('os').system('false')")
    assert value == "__import__('os').system('false')"


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.name == path.stem or cfg.name
