"""benchmark.assets against a real local HTTP server (urllib and gdown paths) and real archives."""
from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from benchmark.assets import (
    GDRIVE_URL_ENV, Asset, ChecksumError, MissingAssetError, UnsafeArchiveError, cache_root, fetch, safe_extract,
)

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """Serves PAYLOAD at /good and /uc?id=..., a cut-off body at /cut, 404 elsewhere; logs every path."""

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        if self.path in ("/good", "/uc?id=good-id"):
            self._send(PAYLOAD, len(PAYLOAD))
        elif self.path in ("/cut", "/uc?id=cut-id"):
            self._send(PAYLOAD[: len(PAYLOAD) // 2], len(PAYLOAD))  # announce all, send half, close
            self.close_connection = True
        else:
            self.send_error(404)

    def _send(self, body: bytes, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.hits = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def _cache(cache_dir, monkeypatch):
    monkeypatch.delenv("FACEEDIT_OFFLINE", raising=False)
    return cache_dir


def _url(srv, path: str) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}{path}"


def _asset(url: str, sha: str | None = SHA, size: int | None = len(PAYLOAD)) -> Asset:
    return Asset(name="test-blob", url=url, filename="blob.bin", sha256=sha, size=size,
                 how_to_get="ask the test suite", description="a test file")


def _leftovers() -> list[Path]:
    root = cache_root()
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_good_checksum_is_cached_and_not_fetched_twice(server):
    asset = _asset(_url(server, "/good"))
    path = fetch(asset)
    assert path == cache_root() / "assets" / "blob.bin"
    assert path.read_bytes() == PAYLOAD
    assert not list(path.parent.glob("*.part"))
    assert server.hits == ["/good"]
    assert fetch(asset) == path
    assert server.hits == ["/good"]  # the second fetch used the cache


def test_file_rewritten_in_place_is_verified_again(server):
    """The ``.verified`` stamp must not vouch for a file changed since (same size, zeroed weights)."""
    asset = _asset(_url(server, "/good"))
    path = fetch(asset)
    assert fetch(asset) == path  # stamped: trusted without re-hashing
    path.write_bytes(bytes(len(PAYLOAD)))  # zeroed, same size
    with pytest.raises(ChecksumError, match=r"sha256 of .*blob\.bin"):
        fetch(asset)


def test_bad_checksum_leaves_nothing(server):
    with pytest.raises(ChecksumError, match="test-blob"):
        fetch(_asset(_url(server, "/good"), sha="0" * 64))
    assert _leftovers() == []


def test_bad_size_leaves_nothing(server):
    with pytest.raises(ChecksumError, match="bytes"):
        fetch(_asset(_url(server, "/good"), sha=None, size=len(PAYLOAD) + 1))
    assert _leftovers() == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assert_helpful(msg: str) -> None:
    assert "blob.bin" in msg or "test-blob" in msg
    assert str(cache_root() / "assets" / "blob.bin") in msg  # where to put it
    assert "ask the test suite" in msg  # how to get it


def test_server_down_is_a_missing_asset_with_instructions():
    with pytest.raises(MissingAssetError) as err:
        fetch(_asset(f"http://127.0.0.1:{_free_port()}/good"))
    _assert_helpful(str(err.value))
    assert _leftovers() == []


def test_http_404_is_a_missing_asset(server):
    with pytest.raises(MissingAssetError, match="404"):
        fetch(_asset(_url(server, "/nope")))
    assert _leftovers() == []


def test_offline_never_touches_the_network(server, monkeypatch):
    monkeypatch.setenv("FACEEDIT_OFFLINE", "1")
    with pytest.raises(MissingAssetError) as err:
        fetch(_asset(_url(server, "/good")))
    _assert_helpful(str(err.value))
    assert "FACEEDIT_OFFLINE" in str(err.value)
    assert server.hits == []


def test_half_downloaded_file_in_cache_is_a_checksum_error(server):
    asset = _asset(_url(server, "/good"))
    target = asset.path()
    target.parent.mkdir(parents=True)
    target.write_bytes(PAYLOAD[:1000])
    with pytest.raises(ChecksumError, match="partial"):
        fetch(asset)
    assert server.hits == []  # a present file is verified, not silently replaced


def test_cut_off_transfer_is_a_checksum_error(server):
    with pytest.raises(ChecksumError, match="incomplete"):
        fetch(_asset(_url(server, "/cut")))
    assert _leftovers() == []


def test_file_url(tmp_path):
    src = tmp_path / "source.bin"
    src.write_bytes(PAYLOAD)
    path = fetch(_asset(src.as_uri()))
    assert path.read_bytes() == PAYLOAD


# -- gdown: the real gdown download code, pointed at the local server ------------------------------


@pytest.fixture
def gdrive(server, monkeypatch):
    monkeypatch.setenv(GDRIVE_URL_ENV, _url(server, "/uc?id={id}"))
    return server


def test_gdown_good(gdrive):
    path = fetch(_asset("gdrive:good-id"))
    assert path.read_bytes() == PAYLOAD
    assert gdrive.hits == ["/uc?id=good-id"]
    assert sorted(p.name for p in _leftovers()) == ["blob.bin", "blob.bin.verified"]  # no gdown .part files


def test_gdown_bad_checksum_leaves_nothing(gdrive):
    with pytest.raises(ChecksumError):
        fetch(_asset("gdrive:good-id", sha="f" * 64))
    assert gdrive.hits == ["/uc?id=good-id"]
    assert _leftovers() == []


def test_gdown_missing_file_is_a_missing_asset(gdrive):
    with pytest.raises(MissingAssetError) as err:
        fetch(_asset("gdrive:absent-id"))
    _assert_helpful(str(err.value))
    assert _leftovers() == []


def test_gdown_cut_off_transfer(gdrive):
    with pytest.raises(ChecksumError, match="incomplete"):
        fetch(_asset("gdrive:cut-id"))
    assert _leftovers() == []


def test_gdrive_message_names_the_drive_url(monkeypatch):
    monkeypatch.setenv("FACEEDIT_OFFLINE", "1")
    asset = Asset(name="x", url="gdrive:abc", filename="x.zip", sha256=None)
    with pytest.raises(MissingAssetError, match=r"drive\.google\.com/uc\?id=abc"):
        fetch(asset)


# -- safe_extract ---------------------------------------------------------------------------------


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return path


def _tar(path: Path, members: list[tarfile.TarInfo], data: bytes = b"x") -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info in members:
            if info.isfile():
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return path


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def test_safe_extract_good_zip_and_tar(tmp_path):
    z = _zip(tmp_path / "ok.zip", {"top/a.txt": b"A", "top/sub/b.txt": b"B"})
    out = safe_extract(z, tmp_path / "zout")
    assert (out / "top" / "sub" / "b.txt").read_bytes() == b"B"
    t = _tar(tmp_path / "ok.tar.gz", [tarfile.TarInfo("top/a.txt"), _link("top/alias", "a.txt")])
    out = safe_extract(t, tmp_path / "tout")
    assert (out / "top" / "a.txt").read_bytes() == b"x"
    assert (out / "top" / "alias").is_symlink() and (out / "top" / "alias").read_bytes() == b"x"


@pytest.mark.parametrize("name", ["../evil.txt", "top/../../evil.txt", "/tmp/evil_abs.txt"])
def test_safe_extract_refuses_bad_zip_members(tmp_path, name):
    z = _zip(tmp_path / "bad.zip", {"top/fine.txt": b"ok", name: b"pwned"})
    with pytest.raises(UnsafeArchiveError, match="outside"):
        safe_extract(z, tmp_path / "dest" / "inner")
    assert not (tmp_path / "dest" / "inner" / "top" / "fine.txt").exists()  # refused before writing anything
    assert not (tmp_path / "dest" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize(
    "member",
    [
        tarfile.TarInfo("../evil.txt"),
        tarfile.TarInfo("/tmp/evil_abs.txt"),
        _link("top/escape", "../../outside"),
        _link("top/escape", "/etc/passwd"),
        _link("top/hard", "../outside.txt", tarfile.LNKTYPE),
    ],
    ids=["dotdot", "absolute", "symlink-out", "symlink-absolute", "hardlink-out"],
)
def test_safe_extract_refuses_bad_tar_members(tmp_path, member):
    t = _tar(tmp_path / "bad.tar.gz", [tarfile.TarInfo("top/fine.txt"), member])
    with pytest.raises(UnsafeArchiveError):
        safe_extract(t, tmp_path / "dest")
    assert not (tmp_path / "dest" / "top" / "fine.txt").exists()
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize(
    "members",
    [
        # each link alone stays inside; followed as extracted, top/x escapes (y is already a link to dest)
        [_link("top/y", ".."), _link("top/x", "y/..")],
        # a link inside a link: top/b/c is really dest/c, and its ".." is above dest
        [_link("top/b", ".."), _link("top/b/c", "..")],
        # a longer chain of links to links
        [_link("top/l1", "l2"), _link("top/l2", "l3"), _link("top/l3", "../.."), tarfile.TarInfo("top/ok.txt")],
        # a loop
        [_link("top/p", "q"), _link("top/q", "p"), _link("top/r", "p/x")],
    ],
    ids=["chain-up", "link-through-link", "long-chain", "loop"],
)
def test_safe_extract_refuses_symlink_chains_before_writing(tmp_path, members):
    """tarfile's own data filter used to be the only stop: a bare FilterError, half a tree left behind."""
    t = _tar(tmp_path / "chain.tar.gz", [tarfile.TarInfo("top/fine.txt"), *members])
    staging = tmp_path / ".root.extracting"
    with pytest.raises(UnsafeArchiveError, match=r"archive (link|member) 'top/"):
        safe_extract(t, staging)
    assert not staging.exists()  # nothing extracted, nothing left
    assert not (tmp_path / "c").exists() and not (tmp_path / "x").exists()


def test_safe_extract_follows_links_already_on_disk(tmp_path):
    """A link already under dest (not in the archive) counts too: refused before anything is written."""
    dest = tmp_path / "dest"
    (dest / "top").mkdir(parents=True)
    (dest / "keep.txt").write_text("was here before")
    (dest / "top" / "y").symlink_to("..")
    t = _tar(tmp_path / "late.tar.gz", [tarfile.TarInfo("top/fine.txt"), _link("top/x", "y/..")])
    with pytest.raises(UnsafeArchiveError, match=r"archive link 'top/x' -> 'y/\.\.' points outside"):
        safe_extract(t, dest)
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == ["keep.txt", "top", "top/y"]


@pytest.mark.parametrize("existing", [False, True], ids=["fresh-dest", "existing-dest"])
def test_safe_extract_stopped_half_way_is_an_asset_error_and_removes_its_part(tmp_path, existing):
    """An archive that breaks after extraction began: one AssetError naming it, and none of its files kept."""
    from benchmark.assets import AssetError

    good = _tar(tmp_path / "ok.tar.gz", [tarfile.TarInfo("top/a.txt"), tarfile.TarInfo("top/b.txt")],
                data=bytes(range(256)) * 200)
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(good.read_bytes()[:-40])  # the gzip stream ends inside the second member
    dest = tmp_path / "out"
    if existing:
        (dest / "top").mkdir(parents=True)
        (dest / "top" / "keep.txt").write_text("mine")
    with pytest.raises(AssetError, match=r"cut\.tar\.gz.*nothing was kept"):
        safe_extract(cut, dest)
    left = sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) if dest.exists() else None
    assert left == (["top", "top/keep.txt"] if existing else None)
