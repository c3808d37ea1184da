"""One mechanism for every cached artefact: content digests, atomic directories, locks.

Everything the benchmark builds and keeps on disk (trained classifiers, identity embedders, FID
reference statistics, rendered test splits, editor fits and their training stages) is a *cache
entry*: a directory whose files are listed with their sha256 and size in ``MANIFEST.json``.

* ``write_manifest`` is called when an entry is made, as its last step;
* ``verify_entry`` is called before an entry is used: a missing manifest means the entry is
  incomplete, a file whose size or digest differs means it is corrupt. Either raises
  ``CacheCorruptError`` naming the file and the remedy; callers rebuild (under ``entry_lock``)
  or fail with that message, and never score with the entry;
* ``atomic_directory`` builds an entry under a temporary name and renames it into place, replacing
  an incomplete or corrupt entry at the same path (``repair``), so a killed build leaves nothing
  half-written behind and a broken entry is repaired exactly once, by whoever holds the lock;
* ``ensure_entry`` is the whole protocol in one call (verify; else lock, verify again, build,
  manifest, rename), and ``read_entry_file`` turns a parser's bare error on a cache file
  (``SafetensorError``, ``BadZipFile``, ``JSONDecodeError``) into a ``CacheCorruptError`` naming it.

Every consumer goes through these functions: ``evaluators/classifier`` (``classifiers/<key>/``),
``evaluators/identity/synth_embedder.py`` (``id_embedders/<key>/``) and ``evaluators/fid.py``
(``fid_refs/<key>/stats.npz``).

Why digests rather than "the file parses": a zeroed weight tensor still parses, and a network
with zeroed weights scores every edit the same without a word (FID 6.1 -> 218, status ok).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar

from benchmark.assets import sha256_file

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
T = TypeVar("T")


def without_later_defaults(values: Mapping[str, Any], later: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` less every field of ``later`` that holds the value ``later`` gives it.

    ``later`` maps each field added after entries were keyed to the value that was implicit before
    it existed. Such a field enters a content key only when it differs from that value, so every
    entry made before it (which behaved as that value does) keeps its key. The classifier's and
    the identity embedder's configs and the editors' ``option(added_later=True)`` go through it.
    InterFaceGAN's ``LabellerSpec.keyed`` does the same by hand and stays so: editing a file of
    the editor's package changes its source hash, and every shipped InterFaceGAN fit would then
    warn that it was made by other source (tests pin that it keys the same way).
    """
    return {k: v for k, v in values.items() if not (k in later and v == later[k])}


class CacheCorruptError(RuntimeError):
    """A cache entry is incomplete or its content does not match its manifest."""

    def __init__(self, path: Path, reason: str, remedy: str = ""):
        self.path, self.reason = Path(path), reason
        remedy = remedy or f"delete {Path(path)} and run again to rebuild it"
        super().__init__(f"{path}: {reason}; {remedy}")


# the project's one streamed sha256 (assets verify downloads with it too)
file_digest = sha256_file


def _entry_files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*")
                  if p.is_file() and p.name != MANIFEST and not p.name.startswith(".lock"))


def write_manifest(directory: str | Path, files: Iterable[str] | None = None,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Record sha256 and size of ``files`` (default: every file under ``directory``); written last."""
    directory = Path(directory)
    names = sorted(files) if files is not None else _entry_files(directory)
    entries = {}
    for name in names:
        p = directory / name
        entries[name] = {"sha256": file_digest(p), "size": p.stat().st_size}
    manifest = {"files": entries, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(extra or {})}
    tmp = directory / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, directory / MANIFEST)
    return manifest


def read_manifest(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise CacheCorruptError(directory, f"incomplete cache entry (no {MANIFEST})")
    try:
        data = json.loads(path.read_text())
        files = data["files"]
        if not isinstance(files, dict):
            raise TypeError("files is not a mapping")
    except (ValueError, KeyError, TypeError) as exc:
        raise CacheCorruptError(path, f"unreadable manifest ({exc})") from None
    return data


def verify_entry(directory: str | Path, remedy: str = "", *, check_digest: bool = True) -> dict[str, Any]:
    """Raise ``CacheCorruptError`` unless every file of the manifest is present with its size and digest.

    Returns the manifest. ``check_digest=False`` checks presence and sizes only (for very large
    entries checked elsewhere); the default reads every byte, which costs ~1 s per GB.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CacheCorruptError(directory, "cache entry missing", remedy)
    try:
        manifest = read_manifest(directory)
    except CacheCorruptError as exc:
        raise CacheCorruptError(exc.path, exc.reason, remedy) from None
    for name, meta in manifest["files"].items():
        p = directory / name
        if not p.is_file():
            raise CacheCorruptError(p, "file listed in the manifest is missing", remedy)
        size = p.stat().st_size
        if size != meta.get("size"):
            raise CacheCorruptError(p, f"size {size} bytes, manifest says {meta.get('size')}", remedy)
        if check_digest and file_digest(p) != meta.get("sha256"):
            raise CacheCorruptError(p, "content digest does not match the manifest (modified or corrupt)", remedy)
    return manifest


def is_valid(directory: str | Path) -> bool:
    """True when ``verify_entry`` passes."""
    try:
        verify_entry(directory)
        return True
    except CacheCorruptError:
        return False


@contextlib.contextmanager
def entry_lock(final: str | Path) -> Iterator[None]:
    """Exclusive advisory lock for building ``final`` (POSIX ``flock`` on a sibling file).

    A second process asking for the same entry waits here, then finds it built and reuses it.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: builders race to the rename, same content
        yield
        return
    with open(final.parent / f".{final.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def atomic_directory(final: str | Path, *, manifest: bool = True,
                     extra: dict[str, Any] | None = None, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``final``; on success write its manifest and move it to ``final``.

    An existing ``final`` that does not verify (incomplete or corrupt) is moved aside and replaced;
    a valid one (another process won the race) is kept and ours discarded, unless ``replace``
    (a forced rebuild). Call under ``entry_lock(final)`` so that the repair happens once.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        if manifest:
            write_manifest(tmp, extra=extra)
        if final.exists() and (replace or not is_valid(final)):
            remove_entry(final)
        try:
            os.rename(tmp, final)
        except OSError:
            if not is_valid(final):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_entry(directory: str | Path) -> None:
    """Move a broken entry aside, then delete it (a rename first, so readers never see it half gone)."""
    directory = Path(directory)
    if not directory.exists():
        return
    trash = directory.with_name(f".{directory.name}.broken.{os.getpid()}.{time.time_ns()}")
    os.rename(directory, trash)
    shutil.rmtree(trash, ignore_errors=True)


def read_json_file(path: str | Path, remedy: str = "") -> Any:
    """``json.loads`` of a cache file, with an error that names the file instead of a bare JSONDecodeError."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CacheCorruptError(path, "file missing", remedy) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CacheCorruptError(path, f"not valid JSON ({exc})", remedy) from None


def read_entry_file(path: str | Path, reader: Callable[[Path], T], what: str, remedy: str = "") -> T:
    """``reader(path)``, with any parser failure raised as ``CacheCorruptError`` naming ``path``.

    Why catch broadly: safetensors, numpy and zipfile each raise their own types (``SafetensorError``,
    ``BadZipFile``, ``ValueError``, ``KeyError`` for a missing array, ``EOFError``), none naming the
    file; a user needs the path and the remedy, whichever parser tripped.
    """
    path = Path(path)
    if not path.is_file():
        raise CacheCorruptError(path, f"{what} is missing", remedy)
    try:
        return reader(path)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - see docstring
        raise CacheCorruptError(path, f"cannot read {what} ({type(exc).__name__}: {exc})", remedy) from None


def ensure_entry(final: str | Path, build: Callable[[Path], None], *, rebuild: bool = True, remedy: str = "",
                 extra: dict[str, Any] | None = None, force: bool = False) -> tuple[Path, bool]:
    """A verified entry at ``final``, built by ``build(tmp_dir)`` if it is missing, incomplete or corrupt.

    Returns ``(final, built)``. The cheap path (a valid entry) takes no lock. Otherwise the entry is
    re-checked under ``entry_lock`` (another process may have repaired it while we waited), so a broken
    entry is rebuilt once however many cells find it broken at the same time. With ``rebuild=False``
    a broken entry raises its ``CacheCorruptError`` (naming the file and ``remedy``) instead. ``force``
    rebuilds even a valid entry (the old one stays in place until the new one is complete).
    """
    final = Path(final)
    if not force:
        try:
            verify_entry(final, remedy)
            return final, False
        except CacheCorruptError:
            if not rebuild:
                raise
    with entry_lock(final):
        if not force:
            try:
                verify_entry(final, remedy)
                return final, False  # repaired by whoever held the lock before us
            except CacheCorruptError as exc:
                if final.exists():
                    log.warning("rebuilding cache entry %s: %s", final, exc)
        with atomic_directory(final, extra=extra, replace=force) as tmp:
            build(tmp)
        return final, True
