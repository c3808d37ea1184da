"""Downloadable assets: declared once (url, sha256, size, licence), verified, cached.

DESIGN §6: downloads go to a temporary file in the cache directory, are
verified against their sha256, then atomically moved into place.  Google Drive
files go through gdown.  Offline, a missing asset raises ``MissingAssetError``
whose message says which file, where to put it and how to get it - the CLI
prints that message alone, never a stack trace.

The cache root is ``$FACEEDIT_CACHE`` (default ``~/.cache/faceedit-bench``);
nothing is ever resolved relative to the working directory.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

log = logging.getLogger(__name__)

CHUNK = 1 << 20


@dataclass(frozen=True)
class Asset:
    """One downloadable file.

    ``url`` is an http(s) or file URL, or ``gdrive:<file id>`` for Google Drive
    (fetched with gdown from ``gdrive_url(id)``; ``$FACEEDIT_GDRIVE_URL`` may
    point it at a mirror or a test server).
    ``sha256`` may be None only for assets whose publisher gives no hash; those
    are verified by size alone and the log says so.
    """

    name: str
    url: str
    filename: str
    sha256: str | None
    size: int | None = None
    licence: str = ""
    subdir: str = "assets"
    description: str = ""
    how_to_get: str = ""

    def path(self, cache: Path | None = None) -> Path:
        return (cache or cache_root()) / self.subdir / self.filename


# Every asset the code can download, by name: `faceedit-bench --assets` lists them with
# their status, so an offline user sees in one place what to fetch and where to put it.
ASSETS: dict[str, tuple[Asset, Callable[[], Path] | None]] = {}


def declare(asset: Asset, root: Callable[[], Path] | None = None) -> Asset:
    """Register ``asset`` (once per name); ``root`` gives its directory when it is not the cache root."""
    known = ASSETS.get(asset.name)
    if known is not None and known[0] != asset:
        raise ValueError(f"asset {asset.name!r} is declared twice with different contents")
    ASSETS[asset.name] = (asset, root)
    return asset


def asset_status() -> list[dict[str, str]]:
    """One row per declared asset: name, path, present?, url, sha256, licence."""
    rows = []
    for name, (asset, root) in sorted(ASSETS.items()):
        path = asset.path(root() if root else None)
        rows.append({"name": name, "present": "yes" if path.exists() else "no", "path": str(path),
                     "url": asset.url, "sha256": asset.sha256 or "(not published)", "licence": asset.licence,
                     "description": asset.description})
    return rows


class AssetError(RuntimeError):
    """Base class: the message is meant for the user, verbatim."""


class MissingAssetError(AssetError):
    """An asset is absent and cannot be downloaded (offline, or downloads disabled)."""


class ChecksumError(AssetError):
    """A file's sha256 or size does not match its declaration (e.g. a half-finished download)."""


class UnsafeArchiveError(AssetError):
    """An archive member would land outside the extraction directory."""


def cache_root() -> Path:
    """``$FACEEDIT_CACHE`` or ``~/.cache/faceedit-bench``."""
    env = os.environ.get("FACEEDIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "faceedit-bench"


def downloads_allowed() -> bool:
    """``FACEEDIT_OFFLINE=1`` forbids every download (CI, air-gapped clusters)."""
    return os.environ.get("FACEEDIT_OFFLINE", "0") not in ("1", "true", "yes")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify(asset: Asset, path: Path) -> None:
    """Raise ChecksumError naming the file unless its size and sha256 match the declaration."""
    size = path.stat().st_size
    if asset.size is not None and size != asset.size:
        raise ChecksumError(
            f"{asset.name}: {path} has {size} bytes, expected {asset.size} "
            "(a partial or corrupt download?); delete it and fetch again"
        )
    if asset.sha256 is None:
        log.warning("%s: no sha256 is published; verified by size only", asset.name)
        return
    digest = sha256_file(path)
    if digest != asset.sha256.lower():
        raise ChecksumError(
            f"{asset.name}: sha256 of {path} is {digest}, expected {asset.sha256} "
            "(a partial or corrupt download?); delete it and fetch again"
        )


def missing_message(asset: Asset, path: Path, reason: str) -> str:
    url = asset.url
    if url.startswith("gdrive:"):
        url = GDRIVE_URL_DEFAULT.format(id=url.split(":", 1)[1]) + " (e.g. with gdown)"
    how = asset.how_to_get or f"download {url}"
    return (
        f"missing asset '{asset.name}' ({asset.description or asset.filename}): {reason}.\n"
        f"  put the file at: {path}\n"
        f"  how to get it:   {how}\n"
        f"  expected sha256: {asset.sha256 or '(not published)'}"
        + (f"\n  licence: {asset.licence}" if asset.licence else "")
    )


def _download_url(url: str, dest: Path) -> None:
    """Copy ``url`` to ``dest``; a body shorter than its Content-Length is a ChecksumError.

    urllib returns a cut-off body as a short read, not an error, so the byte
    count is checked here: assets without a declared size would pass otherwise.
    """
    with urllib.request.urlopen(url, timeout=60) as resp, open(dest, "wb") as out:  # noqa: S310 - declared urls
        announced = resp.headers.get("Content-Length")
        try:
            shutil.copyfileobj(resp, out, CHUNK)
        except http.client.IncompleteRead:
            pass  # reported below with the byte counts
        if announced is not None and announced.isdigit() and out.tell() < int(announced):
            raise ChecksumError(
                f"incomplete download from {url}: got {out.tell()} of {announced} bytes "
                "(the connection closed early); try again"
            )


# Google Drive: ``gdrive:<id>`` is fetched by gdown from this URL.  The variable
# exists so that tests (and mirrors) can point the real gdown code path at
# another server, e.g. FACEEDIT_GDRIVE_URL=http://127.0.0.1:8000/uc?id={id}.
GDRIVE_URL_ENV = "FACEEDIT_GDRIVE_URL"
GDRIVE_URL_DEFAULT = "https://drive.google.com/uc?id={id}"


def gdrive_url(file_id: str) -> str:
    """The URL gdown fetches for Drive file ``file_id`` (``$FACEEDIT_GDRIVE_URL`` overrides the host)."""
    return os.environ.get(GDRIVE_URL_ENV, GDRIVE_URL_DEFAULT).format(id=file_id)


def _download_gdrive(file_id: str, dest: Path) -> None:
    """gdown handles Drive's virus-scan confirmation page for large files.

    gdown writes into our open file (so its own ``.part`` files never appear in
    the cache) and does not persist cookies under ``~/.cache/gdown``.
    """
    import gdown  # lazy: only Google Drive assets need it
    from gdown.exceptions import DownloadError, FileURLRetrievalError

    url = gdrive_url(file_id)
    with open(dest, "wb") as out:
        try:
            # progress bar only for people watching: archives are GBs, CI logs are not a terminal
            gdown.download(url=url, output=out, quiet=not sys.stderr.isatty(), use_cookies=False)
        except FileURLRetrievalError as exc:  # Drive refused: quota, permissions, removed file
            raise urllib.error.URLError(f"Google Drive refused file {file_id} ({exc})") from None
        except DownloadError as exc:  # without resume/retries gdown raises it for a cut-off body
            raise ChecksumError(f"incomplete download of Google Drive file {file_id} from {url}: {exc}") from None


def download(asset: Asset, dest: Path) -> None:
    """Fetch ``asset`` into ``dest`` (a temporary path); no verification here."""
    if asset.url.startswith("gdrive:"):
        _download_gdrive(asset.url.split(":", 1)[1], dest)
    else:
        _download_url(asset.url, dest)


def _stamp_text(path: Path, asset: Asset) -> str:
    """What a ``.verified`` stamp holds: the file's size and mtime (ns) when it was verified, and the hash."""
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}:{asset.sha256}"


def fetch(asset: Asset, cache: Path | None = None, allow_download: bool | None = None) -> Path:
    """The path of the verified asset, downloading it first if allowed.

    A file already in place is verified once and then trusted while it is unchanged: a
    ``.verified`` stamp beside it records its size, modification time and hash, so large
    checkpoints are not re-hashed on every run, yet a file rewritten in place (same size,
    e.g. zeroed weights) is verified again and refused.
    """
    path = asset.path(cache)
    stamp = path.with_name(path.name + ".verified")
    if path.exists():
        if stamp.exists() and stamp.read_text().strip() == _stamp_text(path, asset):
            return path
        verify(asset, path)
        stamp.write_text(_stamp_text(path, asset))
        return path
    if allow_download is None:
        allow_download = downloads_allowed()
    if not allow_download:
        raise MissingAssetError(missing_message(asset, path, "downloads are disabled (FACEEDIT_OFFLINE=1)"))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        log.info("downloading %s from %s", asset.name, asset.url)
        try:
            download(asset, tmp)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise MissingAssetError(missing_message(asset, path, f"download failed ({exc})")) from None
        verify(asset, tmp)
        os.replace(tmp, path)
        stamp.write_text(_stamp_text(path, asset))
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _is_within(root: Path, target: Path) -> bool:
    try:
        target.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _check_member(root: Path, name: str) -> Path:
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts:
        raise UnsafeArchiveError(f"archive member {name!r} would be written outside {root}")
    target = root / pure
    if not _is_within(root, target):
        raise UnsafeArchiveError(f"archive member {name!r} would be written outside {root}")
    return target


_MAX_LINK_HOPS = 40  # as the kernel's ELOOP limit: deeper is a loop or an attack


class _TreeView:
    """The tree an extraction will produce, for resolving paths before anything is written: the
    archive's own symlinks, over the symlinks already on disk under ``dest`` (when it is not empty)."""

    def __init__(self, dest: Path, links: dict[str, str], look_on_disk: bool):
        self.dest, self.links, self.look_on_disk = dest, links, look_on_disk
        self.real_dest = os.path.realpath(dest)

    def link(self, key: str) -> str | None:
        if key in self.links:
            return self.links[key]
        if self.look_on_disk and os.path.islink(self.dest / key):
            return os.readlink(self.dest / key)
        return None

    def resolve(self, parts: list[str], member: str, hops: list[int]) -> list[str] | None:
        """``parts`` (relative to dest) with every link followed; None when it leads outside dest.

        Why simulate instead of checking each link on its own: a chain (``top/b -> ..`` then
        ``top/b/c -> ..``) is harmless link by link and escapes only once the first link exists.
        """
        out: list[str] = []
        for comp in parts:
            if comp in ("", "."):
                continue
            if comp == "..":
                if not out:
                    return None
                out.pop()
                continue
            out.append(comp)
            target = self.link("/".join(out))
            if target is None:
                continue
            hops[0] += 1
            if hops[0] > _MAX_LINK_HOPS:
                raise UnsafeArchiveError(f"archive link {member!r}: more than {_MAX_LINK_HOPS} symlink hops (a loop?)")
            if os.path.isabs(target):  # only a link already on disk gets here (archive ones are refused)
                real = os.path.realpath(target)
                if os.path.commonpath([real, self.real_dest]) != self.real_dest:
                    return None
                out = list(Path(os.path.relpath(real, self.real_dest)).parts)
                continue
            resolved = self.resolve(out[:-1] + target.split("/"), member, hops)
            if resolved is None:
                return None
            out = resolved
        return out


def _check_tar_members(dest: Path, members: list[tarfile.TarInfo], look_on_disk: bool) -> None:
    """Refuse, before anything is written, every member that could land or point outside ``dest``.

    Rules: no absolute or ``..`` names; no device, fifo or other special file; no member written through
    one of the archive's own symlinks; every symlink and hard link, followed through the archive's
    links (chains included) and those already under ``dest``, stays inside ``dest``.
    """
    links = {m.name.rstrip("/"): m.linkname for m in members if m.issym()}
    tree = _TreeView(dest, links, look_on_disk)
    for m in members:
        _check_member(dest, m.name)
        parts = PurePosixPath(m.name).parts
        for k in range(1, len(parts)):
            prefix = "/".join(parts[:k])
            if prefix in links:
                raise UnsafeArchiveError(f"archive member {m.name!r} would be written through the archive's symlink "
                                         f"{prefix!r} -> {links[prefix]!r}; refusing it")
        if m.issym() or m.islnk():
            start = list(parts[:-1]) if m.issym() else []  # a hard link's target is relative to the archive root
            absolute = PurePosixPath(m.linkname).is_absolute()
            lands = None if absolute else tree.resolve(start + m.linkname.split("/"), m.name, [0])
            if lands is None:
                raise UnsafeArchiveError(f"archive link {m.name!r} -> {m.linkname!r} points outside {dest}")
        elif not (m.isfile() or m.isdir()):
            raise UnsafeArchiveError(f"archive member {m.name!r} is a device or fifo")


def _snapshot(dest: Path) -> set[str] | None:
    """Every path under ``dest`` now (None if ``dest`` does not exist): what a failed extraction must keep."""
    if not dest.is_dir():
        return None
    out: set[str] = set()
    for folder, dirs, files in os.walk(dest):
        rel = Path(folder).relative_to(dest)
        out.update(str(rel / n) for n in dirs + files)
    return out


def _remove_new_entries(dest: Path, before: set[str] | None) -> None:
    """Undo a failed extraction: remove ``dest`` if we created it, else every path that was not there before."""
    if before is None:
        shutil.rmtree(dest, ignore_errors=True)
        return
    new = _snapshot(dest) - before
    for rel in sorted(new, key=lambda r: r.count(os.sep), reverse=True):  # deepest first
        p = dest / rel
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def safe_extract(archive: str | Path, dest: str | Path) -> Path:
    """Extract a zip or tar archive into ``dest`` after checking every member's path.

    Absolute paths, ``..`` components, device files and (for tar) links that lead outside ``dest``,
    directly or through a chain of the archive's own links, are refused before anything is written
    (``_check_tar_members``).  tarfile's ``data`` filter stays on as a second line; whatever stops
    the extraction half-way (that filter, a corrupt member, a full disk) is an ``AssetError``
    naming the archive and member, and what was extracted is removed again.
    """
    archive, dest = Path(archive), Path(dest)
    before = _snapshot(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _check_member(dest, info.filename)
                zf.extractall(dest)
            return dest
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                _check_tar_members(dest, members, look_on_disk=bool(before))
                tf.extractall(dest, members=members, filter="data")
            return dest
    except tarfile.FilterError as exc:
        _remove_new_entries(dest, before)
        name = getattr(getattr(exc, "tarinfo", None), "name", "?")
        raise UnsafeArchiveError(f"{archive}: archive member {name!r} refused ({exc}); nothing was kept") from None
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
        _remove_new_entries(dest, before)
        raise AssetError(f"cannot extract {archive} into {dest} ({type(exc).__name__}: {exc}); "
                         "nothing was kept; delete the archive and fetch it again") from None
    except BaseException:
        _remove_new_entries(dest, before)
        raise
    _remove_new_entries(dest, before)
    raise AssetError(f"{archive} is neither a zip nor a tar archive")
