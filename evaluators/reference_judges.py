"""Shipped judge weights: the default judges' cache entries, committed under ``evaluators/judge_weights/``.

Why ship them: a judge's weights depend on the machine that trained it, not only on its config
(float reductions split across a different number of torch threads give a different network;
measured in docs/classifier.md and docs/metrics.md: the same config trained on one and on two
threads accepted SaGAN's tinted not-quite-glasses at 0.16 and 0.24, and gave the oracle's
global-edit id_cos 0.73 and 0.65).  A benchmark whose scores move with the reader's core count
ranks nothing, so the protocol's default judges are fixed files, like the field's pretrained
FID / LPIPS networks, and every machine scores with the same weights.

How: before a judge of cache key ``<key>`` is trained or loaded (``<cache_root()>/classifiers/<key>/``,
``id_embedders/<key>/``), it is looked for here under the same key; a shipped entry is verified
against its manifest (sha256 per file) and copied into the cache (replacing a cache entry of that
key with other files, with a warning), with ``reference.json`` saying where it came from.  Nothing
is trained then.  ``FACEEDIT_REFERENCE_JUDGES=0`` trains instead (the from-scratch path) and keeps
what it trained; ``python -m evaluators.classifier.train --force`` without it trains too, but the next
load replaces that entry with the shipped one.

Export (after training the default judges on the machine whose numbers the README reports)::

    python -m evaluators.reference_judges export --dataset synthfaces --resolution 64
    python -m evaluators.reference_judges export --dataset celebahq --resolution 64 \
        --option root=../shared/data/celebahq --option image_dir=CelebA-HQ-img-64

The keys leave out where the data lives (``content_fingerprint``), so the CelebA-HQ judge answers for
any reader's copy of the same images; ``judge_weights/README.md`` lists what is shipped and its licence.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from pathlib import Path

from benchmark import cache as entries

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent / "judge_weights"
ENV = "FACEEDIT_REFERENCE_JUDGES"
INFO = "reference.json"


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def reference_dir(kind: str, key: str) -> Path:
    """Where a shipped judge of ``kind`` (``classifiers`` / ``id_embedders``) and cache ``key`` lives."""
    return ROOT / kind / key


def _files(manifest: dict) -> dict:
    return {k: v for k, v in manifest["files"].items() if k != INFO}


def use_shipped(kind: str, final: Path) -> bool:
    """Make the cache entry ``final`` the shipped judge of its key, if one is shipped; True then.

    A cache entry of the same key whose files differ from the shipped ones (a judge trained on this
    machine before the weights were shipped, or with another thread count) is replaced, with a
    warning: the protocol's judge is the shipped one.  A damaged shipped entry is an error naming its
    file, never a silently different judge.
    """
    ref = reference_dir(kind, final.name)
    if not enabled() or not ref.is_dir():
        return False
    remedy = (f"the shipped judge {ref} is damaged: restore it with `git checkout -- {ref}`, "
              f"or set {ENV}=0 to train the judge")
    shipped = _files(entries.verify_entry(ref, remedy))
    if _matches(final, shipped):
        return True
    with entries.entry_lock(final):
        if _matches(final, shipped):
            return True
        if final.exists():
            log.warning("judge %s in the cache differs from the shipped judge of that key; replacing it with %s "
                        "(the protocol's weights; %s=0 keeps locally trained judges)", final, ref, ENV)
        with entries.atomic_directory(final, replace=True) as tmp:
            for name in shipped:
                shutil.copy2(ref / name, tmp / name)
            (tmp / INFO).write_text(json.dumps({"copied_from": str(ref), "kind": kind, "key": final.name},
                                               indent=1) + "\n")
    return True


def _matches(final: Path, shipped: dict) -> bool:
    try:
        return _files(entries.verify_entry(final)) == shipped
    except entries.CacheCorruptError:
        return False


def _export(kind: str, source: Path) -> Path:
    dest = reference_dir(kind, source.name)
    entries.verify_entry(source)
    with entries.atomic_directory(dest, replace=True) as tmp:
        for f in source.iterdir():
            if f.is_file() and f.name != entries.MANIFEST and not f.name.startswith(".lock") and f.name != INFO:
                shutil.copy2(f, tmp / f.name)
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evaluators.reference_judges", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="copy the default judges of a dataset from the cache into the checkout")
    ex.add_argument("--dataset", default="synthfaces")
    ex.add_argument("--resolution", type=int, default=64)
    ex.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="dataset option, as for python -m evaluators.classifier.train (root=..., image_dir=...)")
    args = p.parse_args(argv)

    import benchmark.data  # noqa: F401  (registers the datasets)
    from benchmark.registry import DATASETS
    from evaluators.classifier import cache as clf_cache
    from evaluators.classifier.config import default_config
    from evaluators.identity import synth_embedder as se

    from evaluators.classifier.train import _key_values

    ds = DATASETS.create(args.dataset, resolution=args.resolution, **_key_values(args.option, "--option"))
    sources = [("classifiers", clf_cache.classifier_dir(ds, default_config(ds)))]
    if callable(getattr(ds.split("test"), "identity_params", None)):
        sources.append((se.CACHE_SUBDIR, se.cache_dir(ds, se.SynthEmbedderConfig())))
    for kind, src in sources:
        if not src.is_dir():
            print(f"error: no trained default judge at {src}; run the default benchmark first", file=sys.stderr)
            return 2
        print(f"{kind}: {src} -> {_export(kind, src)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
