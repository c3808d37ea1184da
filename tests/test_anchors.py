"""DESIGN §4's sanity anchors, measured through the whole grid on SynthFaces.

Small scoring networks keep this fast; the relations asserted hold whatever
their accuracy (the slow tests check the target accuracies themselves).
"""
from __future__ import annotations

import math

import pandas as pd
import pytest

from benchmark.cli import main

GRID = ["data.name=synthfaces", "data.resolution=32", "data.batch_size=32", "data.max_test=96",
        "data.options={n_train_ids: 150, n_test_ids: 24, images_per_id: 4}",
        "methods=[identity,oracle]", "attributes=[Smiling,Male]",
        "evaluators=[attributes,id_synth,leak,counterfactual,fid_classifier]",
        "evaluator_options.attributes.classifier={epochs: 4}",
        "evaluator_options.fid_classifier.classifier={epochs: 4}",
        "evaluator_options.id_synth={epochs: 1, image_size: 32, judge_ids: 240}",
        "device=cpu", "output.progress=false"]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> pd.DataFrame:
    tmp = tmp_path_factory.mktemp("anchors")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACEEDIT_CACHE", str(tmp / "cache"))
        mp.setenv("FACEEDIT_OFFLINE", "1")
        assert main(["--out", str(tmp / "runs"), *GRID]) == 0
    df = pd.read_csv(next((tmp / "runs").glob("*/results.csv")))
    assert (df.status == "ok").all(), df[df.status != "ok"][["metric", "error"]].to_string()
    return df


def _metric(df: pd.DataFrame, method: str, prefix: str, direction: str = "mean") -> pd.Series:
    sub = df[(df.method == method) & (df.direction == direction) & df.metric.str.startswith(prefix)]
    return sub.set_index("attribute")["value"]


def test_noop_editor_anchors(results):
    succ = _metric(results, "identity", "attr_success_")
    src_acc = _metric(results, "identity", "attr_source_acc_")
    # unchanged images: success is exactly the classifier's error on the sources
    assert ((succ + src_acc) - 1).abs().max() < 1e-9
    assert (_metric(results, "identity", "attr_preserve_") == 1.0).all()
    assert (_metric(results, "identity", "id_cos_synth_") - 1.0).abs().max() < 1e-5
    assert _metric(results, "identity", "leak").isna().all()
    assert (_metric(results, "identity", "cf_l1") > 0).all()


def test_oracle_anchors(results):
    assert (_metric(results, "oracle", "cf_l1") == 0).all()
    assert (_metric(results, "oracle", "cf_psnr") == math.inf).all()
    assert (_metric(results, "oracle", "leak") == 0).all()
    # the true edit moves the classifier towards the target more than doing nothing, wherever the
    # (deliberately small) classifier reads the attribute at all; it does read Male
    readable = _metric(results, "identity", "attr_source_acc_") > 0.75
    assert readable["Male"]
    succ_o, succ_i = _metric(results, "oracle", "attr_success_"), _metric(results, "identity", "attr_success_")
    assert (succ_o[readable] > succ_i[readable] + 0.25).all()
    # and moves the edited images towards the real images of the target value, in the features of a
    # judge that reads the attribute (a judge blind to it has features blind to it too)
    fid_o = _metric(results, "oracle", "fid_clean_")
    fid_i = _metric(results, "identity", "fid_clean_")
    assert (fid_o[readable] < fid_i[readable]).all()


def test_both_directions_and_their_mean(results):
    rows = results[(results.metric.str.startswith("attr_success_"))]
    for (_, _), cell in rows.groupby(["method", "attribute"]):
        by_dir = cell.set_index("direction")["value"]
        assert set(by_dir.index) == {"0to1", "1to0", "mean"}
        assert by_dir["mean"] == pytest.approx((by_dir["0to1"] + by_dir["1to0"]) / 2)
