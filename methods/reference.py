"""Reference fits shipped with the repository: export them from a run, list them.

GAN editors do not train in minutes on a CPU, so the offline default run evaluates fits that our
own training code made and the repository ships (docs/training.md). A reference fit is a finished
stage directory copied from the cache into ``methods/<pkg>/reference_fits/<stage>-<key>/`` with its
floating-point weights stored as fp16 (a few MB each) and its provenance extended by how it was
exported. The platform uses one only when its key matches the key the current config computes.

    python -m methods.reference export results/runs/00007-default   # the stages that run trained
    python -m methods.reference list

Fits trained on another machine (the GPU box of scripts/device_reference_fits.sh, whose tool brings
back at most 8 files, 2 folders deep) travel as one archive:

    python -m methods.reference export RUN [RUN ...] --pack fits.tar.gz   # there: export, then pack
    python -m methods.reference unpack fits.tar.gz [--replace]            # here: path-checked, verified
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

from benchmark import cache as cachelib
from benchmark.assets import AssetError, safe_extract
from benchmark.registry import METHODS
from methods.training import PROVENANCE, REFERENCE_DIRNAME, editor_package_dir, load_safetensors, save_safetensors


def _to_fp16(src: Path, dst: Path) -> None:
    """Copy a safetensors file with every floating tensor cast to fp16 (integers and bools kept)."""
    state = load_safetensors(src)
    out = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    save_safetensors(dst, out)


def export_stage(method: str, src: Path, run_dir: Path | None = None, note: str | None = None) -> Path:
    """Copy one finished cache entry into the editor's ``reference_fits`` folder (fp16 weights).

    ``note``: what the provenance cannot know (a fit continued from another one, the other jobs that
    shared the cores), stored as ``reference.note`` so that nobody edits an exported JSON by hand."""
    cachelib.verify_entry(src)
    cls = METHODS.get(method)
    dst = editor_package_dir(cls) / REFERENCE_DIRNAME / src.name
    with cachelib.atomic_directory(dst) as tmp:
        for item in sorted(src.iterdir()):
            if item.name == cachelib.MANIFEST:
                continue
            if item.suffix == ".safetensors":
                _to_fp16(item, tmp / item.name)
            elif item.is_file():
                shutil.copy2(item, tmp / item.name)
            else:
                shutil.copytree(item, tmp / item.name)
        prov = json.loads((tmp / PROVENANCE).read_text())
        env = {}
        if run_dir is not None and (run_dir / "env.json").is_file():
            env = json.loads((run_dir / "env.json").read_text())
        prov["reference"] = {
            "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "from_run": str(run_dir) if run_dir else None,
            "command": " ".join(env.get("argv", [])) or None, "weights_dtype": "float16",
            "source_entry_digest": cachelib.read_manifest(src)["files"],
        }
        if note:
            prov["reference"]["note"] = note
        (tmp / PROVENANCE).write_text(json.dumps(prov, indent=1, sort_keys=True, default=str) + "\n")
    return dst


def export_run(run_dir: Path, methods: list[str] | None = None, cache: Path | None = None,
               note: str | None = None) -> list[Path]:
    """Export every stage the run's ``fits.jsonl`` names (trained or cached, not already shipped).

    ``cache``: where the entries are when the run was made on another machine (a GPU box whose
    ``$FACEEDIT_CACHE`` came back as a folder): ``<cache>/editors/<method>/<stage>-<key>``.
    """
    rows = [json.loads(x) for x in (run_dir / "fits.jsonl").read_text().splitlines() if x.strip()]
    done: dict[str, Path] = {}
    for r in rows:
        if r["source"] == "reference" or (methods and r["method"] not in methods) or r["path"] in done:
            continue
        src = Path(r["path"])
        if cache is not None:
            src = cache / "editors" / r["method"] / src.name
        done[r["path"]] = export_stage(r["method"], src, run_dir, note)
    return list(done.values())


REPO_ROOT = Path(__file__).resolve().parents[1]


class PackError(RuntimeError):
    """A reference-fit archive that is not what ``pack`` writes: foreign paths, a corrupt entry."""


def pack(entries: list[Path], archive: Path) -> Path:
    """One tar.gz of exported reference-fit directories, stored as ``methods/<pkg>/reference_fits/<entry>``."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_name(archive.name + ".part")
    with tarfile.open(tmp, "w:gz") as tf:
        for entry in entries:
            entry = Path(entry).resolve()
            rel = Path(*entry.parts[-4:])
            if len(entry.parts) < 4 or rel.parts[0] != "methods" or rel.parts[2] != REFERENCE_DIRNAME:
                raise PackError(f"{entry} is not a reference fit (methods/<pkg>/{REFERENCE_DIRNAME}/<entry>)")
            cachelib.verify_entry(entry)
            tf.add(entry, arcname=str(rel))
    tmp.replace(archive)
    return archive


def unpack(archive: Path, root: Path = REPO_ROOT, replace: bool = False) -> list[Path]:
    """Bring packed reference fits into ``root``; returns the entries written.

    The archive is extracted with path checks (``safe_extract``) into a temporary folder; it may hold
    nothing but ``methods/<pkg>/reference_fits/<entry>/`` directories of registered editors' packages,
    each of which must verify against its MANIFEST before it is moved into place.  An entry that is
    already shipped is kept unless ``replace`` (a GPU fit of the same key replaces a CPU one only when
    asked: the numbers of every run that uses it change).
    """
    dirs = [editor_package_dir(METHODS.get(n)) for n in METHODS.names()]
    packages = {d.name for d in dirs if d.parent.name == "methods"}  # methods/<pkg>/, not the baselines' module
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix=".unpack-", dir=root) as tmp:
        safe_extract(archive, tmp)
        found: set[Path] = set()
        for f in (p for p in Path(tmp).rglob("*") if not p.is_dir()):
            rel = f.relative_to(tmp)
            if (len(rel.parts) < 5 or rel.parts[0] != "methods" or rel.parts[1] not in packages
                    or rel.parts[2] != REFERENCE_DIRNAME):
                raise PackError(f"{archive}: {rel} is not inside methods/<editor package>/{REFERENCE_DIRNAME}/"
                                f"<entry>/; editor packages: {sorted(packages)}")
            found.add(Path(*rel.parts[:4]))
        for rel in sorted(found):
            cachelib.verify_entry(Path(tmp) / rel, f"{archive} holds a damaged fit {rel}; pack it again")
        for rel in sorted(found):
            dst = root / rel
            if dst.exists() and not replace:
                print(f"kept {dst} (already shipped; --replace to overwrite it with the packed one)", file=sys.stderr)
                continue
            with cachelib.atomic_directory(dst, manifest=False, replace=True) as stage:
                for item in (Path(tmp) / rel).iterdir():
                    shutil.move(str(item), stage / item.name)
            written.append(dst)
    return written


def list_references() -> list[dict]:
    """One row per shipped reference fit of every registered editor."""
    rows = []
    for name in METHODS.names():
        folder = editor_package_dir(METHODS.get(name)) / REFERENCE_DIRNAME
        for entry in sorted(folder.glob("*")) if folder.is_dir() else []:
            prov = json.loads((entry / PROVENANCE).read_text()) if (entry / PROVENANCE).is_file() else {}
            size = sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())
            rows.append({"method": name, "entry": entry.name, "attribute": prov.get("attribute"),
                         "steps": prov.get("steps"), "seconds": prov.get("seconds"), "device": prov.get("device"),
                         "final_losses": prov.get("final_losses"), "bytes": size, "valid": cachelib.is_valid(entry)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m methods.reference", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="copy the stages runs trained into the editors' reference_fits/")
    e.add_argument("run_dir", type=Path, nargs="+")
    e.add_argument("--methods", default="", help="comma-separated methods (default: all in fits.jsonl)")
    e.add_argument("--cache", type=Path, help="the cache the run used, when it was made on another machine")
    e.add_argument("--pack", type=Path, help="also write the exported fits into this .tar.gz (for `unpack`)")
    e.add_argument("--note", help="a sentence stored in each exported fit's provenance (reference.note)")
    u = sub.add_parser("unpack", help="bring fits packed elsewhere into the editors' reference_fits/")
    u.add_argument("archive", type=Path)
    u.add_argument("--replace", action="store_true", help="overwrite entries that are already shipped")
    sub.add_parser("list", help="list the shipped reference fits")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.cmd == "export":
        exported: list[Path] = []
        for run_dir in args.run_dir:
            if not (run_dir / "fits.jsonl").is_file():
                print(f"error: {run_dir} has no fits.jsonl (not a run directory, or it trained nothing)",
                      file=sys.stderr)
                return 2
            for path in export_run(run_dir, [m for m in args.methods.split(",") if m] or None, args.cache,
                                   args.note):
                if path not in exported:
                    exported.append(path)
                    print(path)
        if args.pack:
            print(pack(exported, args.pack))
        return 0
    if args.cmd == "unpack":
        try:
            for path in unpack(args.archive, replace=args.replace):
                print(path)
        except (PackError, AssetError, cachelib.CacheCorruptError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    for row in list_references():
        print(json.dumps(row, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
