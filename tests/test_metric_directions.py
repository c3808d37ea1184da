"""Which way is better: declared by each evaluator (``higher_is_better``), read by the report's arrows."""
from __future__ import annotations

import pandas as pd
import pytest

from benchmark.registry import EVALUATORS
from benchmark.report import latex_table
from evaluators.base import EvalContext, Evaluator, metric_direction, metric_is_declared

BUILTIN = [n for n in EVALUATORS.names() if EVALUATORS.source(n).startswith("evaluators.")]


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_metric_has_a_direction(name):
    cls = EVALUATORS.get(name)
    assert cls.metrics, name
    for metric in cls.metrics:
        concrete = metric.replace("<classifier>", "slim10_judge2_synthfaces64")
        assert metric_is_declared(concrete), concrete
        if concrete not in NO_DIRECTION:
            assert metric_direction(concrete) in ("higher", "lower"), concrete


# declared on purpose without a better direction: how far to trust FID / KID, not editor scores
NO_DIRECTION = {f"{p}_clean_{tag}" for p in ("fid_floor", "fid_n_below_dim", "kid_se")
                for tag in ("inception", "slim10_judge2_synthfaces64")}


@pytest.mark.parametrize("metric", sorted(NO_DIRECTION))
def test_small_n_rows_are_declared_without_direction(metric):
    assert metric_is_declared(metric) and metric_direction(metric) is None


@pytest.mark.parametrize("metric, direction", [
    ("cf_lpips_alex_v01", "lower"), ("cf_l1", "lower"), ("cf_psnr", "higher"),
    ("id_facenet_nodetect_rate", "lower"), ("id_dlib_nodetect_rate", "lower"),
    ("id_cos_facenet_vggface2", "higher"), ("id_match_dlib_resnet_v1", "higher"),
    ("id_cos_synth_cnn4_cosface_ridge-1a2b", "higher"), ("id_param_err_synth_cnn4_cosface_ridge", "lower"),
    ("attr_success_slim10_judge2_synthfaces64", "higher"), ("attr_preserve_slim10_judge2_synthfaces64", "higher"),
    ("attr_source_acc_resnet18_celebahq64", "higher"),
    ("fid_clean_inception", "lower"), ("kid_clean_slim10_judge2_synthfaces64", "lower"),
    ("lpips_alex_v01", "lower"), ("leak", "lower"),
    ("some_plugin_metric", None),
])
def test_directions(metric, direction):
    assert metric_direction(metric) == direction
    assert metric_is_declared(metric) == (metric != "some_plugin_metric")


def test_exact_names_and_longer_prefixes_win():
    @EVALUATORS.register("test-direction-a")
    class A(Evaluator):
        higher_is_better = {"zz_": True, "zz_err": False, "zz_err_rate": True}

        def reset(self): ...
        def update(self, *a, **k): ...
        def finalize(self): return {}

    try:
        assert metric_direction("zz_score") == "higher"
        assert metric_direction("zz_err_l2") == "lower"
        assert metric_direction("zz_err_rate") == "higher"
    finally:
        EVALUATORS.unregister("test-direction-a")
    assert metric_direction("zz_score") is None


def test_latex_arrows_follow_the_declarations():
    table = pd.DataFrame([["0.1", "0.2", "0.9", "3"]], columns=["cf_lpips_alex_v01", "id_facenet_nodetect_rate",
                                                              "attr_success_x", "some_plugin_metric"],
                         index=pd.MultiIndex.from_tuples([("m", "Smiling")], names=["method", "attribute"]))
    head = next(line for line in latex_table(table, "c").splitlines() if line.startswith("Method"))
    assert r"cf\_lpips\_alex\_v01 $\downarrow$" in head
    assert r"id\_facenet\_nodetect\_rate $\downarrow$" in head
    assert r"attr\_success\_x $\uparrow$" in head
    assert head.endswith(r"some\_plugin\_metric \\")  # undeclared: no arrow rather than a wrong one


def test_option_names_declared_or_introspected():
    assert EVALUATORS.get("lpips").option_names() == ()
    assert EVALUATORS.get("attributes").option_names() == ("classifier", "train_if_missing")
    assert "epochs" in EVALUATORS.get("id_synth").option_names()

    class Explicit(Evaluator):
        def __init__(self, ctx: EvalContext, *, power: float = 1.0, clip: bool = False):
            self.power, self.clip = power, clip
            super().__init__(ctx, power=power, clip=clip)

        def reset(self): ...
        def update(self, *a, **k): ...
        def finalize(self): return {}

    class Undeclared(Evaluator):  # **options, nothing declared
        def reset(self): ...
        def update(self, *a, **k): ...
        def finalize(self): return {}

    assert Explicit.option_names() == ("power", "clip")
    assert Undeclared.option_names() is None
