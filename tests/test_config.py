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


# -- overrides merge into mappings; replacing one is explicit -----------------------------------

def test_dotted_override_keeps_the_files_other_options():
    cfg = load_config(ROOT / "configs/celebahq64.yaml", ["data.options.root=../shared/data/celebahq"])
    assert cfg.data.options == {"image_dir": "CelebA-HQ-img-64", "download": False,
                                "root": "../shared/data/celebahq"}
    smoke = load_config(ROOT / "configs/smoke.yaml", ["data.options.n_test_ids=4"])
    assert smoke.data.options == {"n_train_ids": 8, "n_test_ids": 4, "images_per_id": 4}


def test_every_options_mapping_merges_at_any_depth(tmp_path):
    f = tmp_path / "grid.yaml"
    f.write_text("method_options: {m: {lr: 0.1, sched: {warmup: 10, kind: cos}}}\n"
                 "evaluator_options: {attributes: {train_if_missing: false}}\nbudget: {steps: 5}\n")
    cfg = load_config(f, ["method_options.m.sched.kind=linear", "method_options.m.beta=0.9",
                          "evaluator_options.attributes.classifier={epochs: 1}", "budget.minutes=2"])
    assert cfg.method_options == {"m": {"lr": 0.1, "beta": 0.9, "sched": {"warmup": 10, "kind": "linear"}}}
    assert cfg.evaluator_options == {"attributes": {"train_if_missing": False, "classifier": {"epochs": 1}}}
    assert cfg.budget == {"steps": 5, "minutes": 2}


def test_naming_the_mapping_replaces_it():
    cfg = load_config(ROOT / "configs/smoke.yaml", ["data.options={n_test_ids: 4}"])
    assert cfg.data.options == {"n_test_ids": 4}
    cfg = load_config(None, ["method_options.m.a=1", "method_options.m={b: 2}"])
    assert cfg.method_options == {"m": {"b": 2}}


def test_override_below_a_scalar_names_the_key():
    with pytest.raises(ConfigError, match=r"method_options\.m\.lr is 0\.1, not a mapping"):
        load_config(None, ["method_options.m.lr=0.1", "method_options.m.lr.x=1"])
    with pytest.raises(ConfigError, match="data.resolution is 64, not a mapping"):
        load_config(None, ["data.resolution.x=1"])


def test_override_order_is_kept_and_values_typed():
    cfg = load_config(ROOT / "configs/smoke.yaml", ["data.options.n_test_ids=4", "data.options.n_test_ids=6"])
    assert cfg.data.options["n_test_ids"] == 6
    with pytest.raises(ConfigError, match=r"data\.batch_size: expected an integer"):
        load_config(None, ["data.batch_size=big"])


# -- values that used to be accepted and failed later ------------------------------------------

@pytest.mark.parametrize("override, pattern", [
    ("strengths=[.nan]", "strengths: .*not finite"),
    ("strengths=[1.0, .inf]", "strengths: .*not finite"),
    ("strengths=[-.inf]", "strengths: .*not finite"),
    ("strengths=[1, 1.0]", "strengths: duplicate"),
    ("seeds=[3, 3]", "seeds: duplicate"),
    ("data.max_test=0", "data.max_test: 0 would evaluate no image"),
    ("data.max_test=-5", "data.max_test: -5"),
    ("data.num_workers=-1", "data.num_workers: -1 is negative"),
    ("attributes=[]", "attributes: at least one attribute"),
    ("seeds=[]", "seeds: at least one seed"),
    ("method_options.m=3", "method_options.m: expected a mapping"),
])
def test_bad_values_fail_with_the_key(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [override])


def test_max_test_null_means_the_whole_split():
    assert load_config(None, ["data.max_test=16"]).data.max_test == 16
    assert load_config(None, ["data.max_test=16", "data.max_test=null"]).data.max_test is None


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_config_file_is_an_error(tmp_path, text):
    f = tmp_path / "empty.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=r"empty\.yaml is empty"):
        load_config(f)
