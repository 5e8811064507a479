"""The source of a Triton release's vLLM backend: archives and directories from outside taken safely, installed
by content hash, and looked for once per release in order (image, archive, the user's path)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from stackmatrix.errors import BadInput
from stackmatrix.registry.image import ImageFacts
from stackmatrix.triton.backend import (
    MAX_FILE,
    BackendFinder,
    BackendOptions,
    BackendSource,
    NoBackend,
    check_backend_path,
    fetch_archive,
    from_archive,
    from_image,
    from_image_dir,
    from_path,
)
from stackmatrix.triton.server import free_port

TOP = "vllm_backend-r26.01"
CHECKOUT = {
    f"{TOP}/src/model.py": b"import vllm\n",
    f"{TOP}/src/utils/metrics.py": b"M = 1\n",
    f"{TOP}/src/tests/x.py": b"T = 1\n",
    f"{TOP}/ci/L0_backend_vllm/test.py": b"C = 1\n",
    f"{TOP}/README.md": b"# vllm_backend\n",
}
KEPT = [("model.py", b"import vllm\n"), ("utils/metrics.py", b"M = 1\n")]
FLAT = dict(KEPT)  # an image's backends/vllm archived: its root is the top, so no root prefix filters a member
ESCAPES = ["../evil.py", "/abs/model.py", "/evil.py", "utils/../../evil.py", "./../evil.py"]
DIGEST = "sha256:" + "a" * 64
LAYER = "sha256:" + "b" * 64


def tar_gz(members: dict[str, bytes], extra: tuple[tarfile.TarInfo, ...] = (), mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:  # type: ignore[call-overload]
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return buf.getvalue()


def zipped(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, target)
    return buf.getvalue()


def link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def checkout(root: Path) -> Path:
    for name, data in CHECKOUT.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root / TOP


def facts(files: tuple[tuple[str, str], ...]) -> ImageFacts:
    return ImageFacts(
        ref="nvcr.io/nvidia/tritonserver:26.01-vllm-python-py3",
        digest=DIGEST,
        config="sha256:" + "c" * 64,
        layers=1,
        size=1,
        shipped=(),
        backend_layer=LAYER,
        backend_files=files,
        vllm_modules=(),
        vllm_requires=(),
        layers_read=(),
        learnt_bytes=0,
    )


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx trusts the environment: a proxy there must not stand between the test and its loopback port."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def closed_url(path: str = "/r{release}.tar.gz", userinfo: str = "") -> str:
    return f"http://{userinfo}127.0.0.1:{free_port()}{path}"  # nothing listens there


# from_archive


def test_a_github_tarball_takes_the_py_files_under_src_named_relative_to_it() -> None:
    source = from_archive(tar_gz(CHECKOUT), {"from": "archive"}, "test")
    assert source.files == tuple(KEPT)


def test_a_github_tarball_roots_the_backend_at_its_src() -> None:
    assert from_archive(tar_gz(CHECKOUT), {}, "test").origin["root"] == f"{TOP}/src"


def test_a_zip_of_a_checkout_is_taken_as_the_tarball_is() -> None:
    assert from_archive(zipped(CHECKOUT), {}, "test").files == tuple(KEPT)


def test_the_origin_keeps_what_was_given_and_adds_the_archives_sha256_and_root() -> None:
    data = tar_gz(CHECKOUT)
    origin = from_archive(data, {"from": "archive", "url": "u"}, "test").origin
    assert origin == {"from": "archive", "url": "u", "sha256": hashlib.sha256(data).hexdigest(), "root": f"{TOP}/src"}


@pytest.mark.parametrize("pack", [tar_gz, zipped], ids=["tar", "zip"])
@pytest.mark.parametrize("name", ESCAPES)
def test_a_member_that_could_escape_is_not_taken(pack: Callable[[dict[str, bytes]], bytes], name: str) -> None:
    assert from_archive(pack({**FLAT, name: b"EVIL = 1\n"}), {}, "test").files == tuple(KEPT)


@pytest.mark.parametrize(
    "member",
    [
        link(f"{TOP}/src/passwd.py", "/etc/passwd", tarfile.SYMTYPE),
        link(f"{TOP}/src/up.py", "../../../outside.py", tarfile.SYMTYPE),
        link(f"{TOP}/src/hard.py", "/etc/passwd", tarfile.LNKTYPE),
        link(f"{TOP}/src/again.py", f"{TOP}/src/model.py", tarfile.LNKTYPE),
    ],
    ids=["symlink-absolute", "symlink-up", "hardlink-absolute", "hardlink-inside"],
)
def test_a_link_member_of_a_tar_is_not_taken(member: tarfile.TarInfo) -> None:
    assert from_archive(tar_gz(CHECKOUT, (member,)), {}, "test").files == tuple(KEPT)


def test_a_symlink_member_of_a_zip_is_not_taken() -> None:
    data = zipped(CHECKOUT, {f"{TOP}/src/passwd.py": "/etc/passwd"})
    assert from_archive(data, {}, "test").files == tuple(KEPT)


def test_members_that_could_escape_are_never_written_anywhere(tmp_path: Path) -> None:
    bad = {name: b"EVIL = 1\n" for name in ESCAPES}
    links = (link("s.py", "/etc/passwd", tarfile.SYMTYPE), link("h.py", "/etc/passwd", tarfile.LNKTYPE))
    source = from_archive(tar_gz({**FLAT, **bad}, links), {}, "test")
    home = source.install(tmp_path / "cache")
    assert files_under(tmp_path) == [home / "vllm" / "model.py", home / "vllm" / "utils" / "metrics.py"]


def test_an_archive_without_model_py_is_no_backend() -> None:
    with pytest.raises(NoBackend, match=r"no model\.py"):
        from_archive(tar_gz({f"{TOP}/src/utils/metrics.py": b"M = 1\n"}), {}, "test")


def test_bytes_that_are_not_an_archive_are_no_backend() -> None:
    with pytest.raises(NoBackend, match="not a readable tar or zip archive"):
        from_archive(b"<html>not found</html>", {}, "test")


@pytest.mark.parametrize("pack", [tar_gz, zipped], ids=["tar", "zip"])
def test_a_member_over_the_file_cap_is_no_backend(pack: Callable[[dict[str, bytes]], bytes]) -> None:
    members = {**CHECKOUT, f"{TOP}/src/big.py": b"#" * (MAX_FILE + 1)}
    with pytest.raises(NoBackend, match=r"big\.py makes the backend larger than its caps"):
        from_archive(pack(members), {}, "test")


# from_path


def test_a_checkout_directory_takes_its_src(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    source = from_path(root)
    assert (source.files, source.origin["root"]) == (tuple(KEPT), str(root / "src"))


def test_a_src_directory_is_taken_as_the_root(tmp_path: Path) -> None:
    src = checkout(tmp_path) / "src"
    source = from_path(src)
    assert (source.files, source.origin) == (tuple(KEPT), {"from": "path", "path": str(src), "root": str(src)})


def test_an_images_backends_vllm_directory_is_taken(tmp_path: Path) -> None:
    vllm = tmp_path / "opt" / "tritonserver" / "backends" / "vllm"
    (vllm / "utils").mkdir(parents=True)
    (vllm / "model.py").write_bytes(b"import vllm\n")
    (vllm / "utils" / "metrics.py").write_bytes(b"M = 1\n")
    assert from_path(vllm).files == tuple(KEPT)


def test_an_archive_file_is_taken_with_its_path_as_origin(tmp_path: Path) -> None:
    archive = tmp_path / "vllm_backend.tar.gz"
    archive.write_bytes(tar_gz(CHECKOUT))
    source = from_path(archive)
    assert (source.files, source.origin["from"], source.origin["path"]) == (tuple(KEPT), "path", str(archive))


def test_a_symlinked_py_file_in_a_directory_is_skipped(tmp_path: Path) -> None:
    src = checkout(tmp_path) / "src"
    outside = tmp_path / "outside.py"
    outside.write_bytes(b"SECRET = 1\n")
    (src / "linked.py").symlink_to(outside)
    assert from_path(src).files == tuple(KEPT)


def test_a_fifo_named_like_a_module_is_skipped_without_hanging(tmp_path: Path) -> None:
    src = checkout(tmp_path) / "src"
    os.mkfifo(src / "x.py")
    got: list[BackendSource] = []
    worker = threading.Thread(target=lambda: got.append(from_path(src)), daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "from_path blocked on a FIFO"
    assert got[0].files == tuple(KEPT)


def test_a_directory_without_model_py_is_bad_input_naming_the_flag(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput) as caught:
        from_path(tmp_path / "empty", "--the-flag")
    assert (caught.value.where, caught.value.key, caught.value.value) == ("--the-flag", "path", str(tmp_path / "empty"))


def test_a_regular_file_that_is_not_an_archive_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(BadInput, match="not a readable tar or zip archive") as caught:
        from_path(tmp_path / "notes.txt")
    assert (caught.value.where, caught.value.key) == ("--vllm-backend", "path")


def test_a_path_that_does_not_exist_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no such file") as caught:
        from_path(tmp_path / "missing")
    assert caught.value.key == "path"


def test_the_option_check_refuses_a_path_without_a_backend(tmp_path: Path) -> None:
    with pytest.raises(BadInput) as caught:
        check_backend_path("--vllm-backend", str(tmp_path))
    assert caught.value.where == "--vllm-backend"


def test_the_option_check_returns_the_path_of_a_backend(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    assert check_backend_path("--vllm-backend", str(root)) == root


# BackendSource


def test_the_sha256_of_equal_files_is_equal() -> None:
    assert BackendSource(tuple(KEPT), {"a": 1}).sha256 == BackendSource(tuple(KEPT), {"b": 2}).sha256


@pytest.mark.parametrize(
    "changed",
    [(("model.py", b"import vllm\n#\n"), KEPT[1]), (KEPT[0], ("utils/other.py", b"M = 1\n")), (KEPT[0],)],
    ids=["content", "name", "file-dropped"],
)
def test_the_sha256_changes_with_the_files(changed: tuple[tuple[str, bytes], ...]) -> None:
    assert BackendSource(changed).sha256 != BackendSource(tuple(KEPT)).sha256


def test_install_writes_the_backend_as_vllm_under_its_content_hash(tmp_path: Path) -> None:
    source = BackendSource(tuple(KEPT))
    home = source.install(tmp_path)
    assert home == tmp_path / "backends" / source.sha256[:20]
    assert [(p.relative_to(home).as_posix(), p.read_bytes()) for p in files_under(home)] == [
        ("vllm/model.py", b"import vllm\n"),
        ("vllm/utils/metrics.py", b"M = 1\n"),
    ]


def test_install_twice_returns_the_same_directory_and_leaves_nothing_else(tmp_path: Path) -> None:
    source = BackendSource(tuple(KEPT))
    first = source.install(tmp_path)
    assert source.install(tmp_path) == first
    assert list((tmp_path / "backends").iterdir()) == [first]


# from_image


def test_an_image_without_model_py_gives_no_source() -> None:
    assert from_image(facts((("utils/metrics.py", "M = 1\n"),))) is None


def test_an_images_backend_files_are_the_source_with_digest_and_layer() -> None:
    source = from_image(facts((("utils/metrics.py", "M = 1\n"), ("model.py", "import vllm\n"))))
    assert source is not None
    assert source.files == tuple(KEPT)
    assert source.origin == {
        "from": "image",
        "image": "nvcr.io/nvidia/tritonserver:26.01-vllm-python-py3",
        "digest": DIGEST,
        "layer": LAYER,
        "dir": "/opt/tritonserver/backends/vllm",
    }


# BackendFinder


def test_with_no_source_the_finder_says_why_each_gave_none(tmp_path: Path) -> None:
    source, why = BackendFinder(BackendOptions(url=None, user=None), tmp_path).find("26.01", None)
    assert source is None
    assert len(why) == 3
    assert "image" in why[0]
    assert "archive URL" in why[1]
    assert "--vllm-backend" in why[2]


def test_an_image_with_the_backend_is_used_before_the_users_path(tmp_path: Path) -> None:
    finder = BackendFinder(BackendOptions(url=None, user=checkout(tmp_path)), tmp_path / "cache")
    source, why = finder.find("26.01", facts((("model.py", "from_image = 1\n"),)))
    assert source is not None and (source.origin["from"], source.files, why) == (
        "image",
        (("model.py", b"from_image = 1\n"),),
        (),
    )


def test_the_users_path_is_the_source_when_there_is_no_image_or_url(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    source, why = BackendFinder(BackendOptions(url=None, user=root), tmp_path / "cache").find("26.01", None)
    assert source is not None and (source.files, source.origin["path"], why) == (tuple(KEPT), str(root), ())


def test_a_release_is_looked_for_once(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    finder = BackendFinder(BackendOptions(url=None, user=root), tmp_path / "cache")
    first = finder.find("26.01", None)
    shutil.rmtree(root)
    assert finder.find("26.01", None) is first


def test_another_release_is_looked_for_again(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    finder = BackendFinder(BackendOptions(url=None, user=root), tmp_path / "cache")
    finder.find("26.01", None)
    shutil.rmtree(root)
    with pytest.raises(BadInput):
        finder.find("25.12", None)


@pytest.mark.usefixtures("no_proxy")
def test_an_unreachable_archive_falls_through_to_the_users_path(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    options = BackendOptions(url=closed_url(), user=root, connect_s=0.5, read_s=0.5)
    source, why = BackendFinder(options, tmp_path / "cache").find("26.01", None)
    assert source is not None and (source.origin["from"], source.files, why) == ("path", tuple(KEPT), ())


@pytest.mark.usefixtures("no_proxy")
def test_an_unreachable_archive_is_a_reason_when_there_is_no_users_path(tmp_path: Path) -> None:
    url = closed_url()
    options = BackendOptions(url=url, user=None, connect_s=0.5, read_s=0.5)
    source, why = BackendFinder(options, tmp_path / "cache").find("26.01", None)
    assert source is None
    assert why[1].startswith(f"archive {url.replace('{release}', '26.01')}: ")


# fetch_archive


@pytest.mark.usefixtures("no_proxy")
def test_a_failed_fetch_never_shows_the_urls_password(tmp_path: Path) -> None:
    url = closed_url("/x.tar.gz", "user:secret@")
    with pytest.raises(NoBackend) as caught:
        fetch_archive(url, tmp_path, 0.5, 0.5)
    assert "secret" not in str(caught.value)
    assert "***@127.0.0.1" in str(caught.value)


@pytest.mark.usefixtures("no_proxy")
def test_a_kept_archive_is_read_from_the_cache_without_fetching(tmp_path: Path) -> None:
    url = closed_url("/x.tar.gz", "user:secret@")
    kept = tmp_path / "backends" / "archives" / f"{hashlib.sha256(url.encode()).hexdigest()[:24]}.archive"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(tar_gz(CHECKOUT))
    source = fetch_archive(url, tmp_path, 0.5, 0.5)
    assert (source.files, source.origin["from"]) == (tuple(KEPT), "archive")
    assert "secret" not in source.origin["url"]


def test_an_images_file_named_to_escape_is_not_taken_nor_written(tmp_path: Path) -> None:
    """A layer member ``backends/vllm/../../../x.py`` (or a tampered facts cache) names no backend file."""
    source = from_image(facts((("model.py", "x = 1\n"), ("../../../escape.py", "y = 1\n"))))
    assert source is not None and source.names() == ["model.py"]
    source.install(tmp_path / "cache")
    assert not (tmp_path / "escape.py").exists() and not (tmp_path / "cache" / "escape.py").exists()


def test_a_tar_whose_only_model_py_is_under_tests_is_no_backend() -> None:
    with pytest.raises(NoBackend, match=r"no model\.py"):
        from_archive(tar_gz({"repo/tests/model.py": b"x = 1\n"}), {}, "t.tar.gz")


# from_image_dir: the backend read out of an image on this host (docker cp's tar of backends/vllm)


def plain_tar(members: dict[str, bytes]) -> bytes:
    return tar_gz(members, mode="w")  # docker cp's form: uncompressed


def test_the_backend_dir_of_a_local_image_is_taken_under_its_vllm_root() -> None:
    tar = plain_tar({"vllm/model.py": b"import vllm\n", "vllm/utils/metrics.py": b"M = 1\n", "vllm/README": b"x"})
    origin = {"image": "reg/t:26.01-vllm-python-py3", "image_id": "sha256:" + "d" * 64, "digest": None}
    source = from_image_dir(tar, origin, "reg/t:26.01-vllm-python-py3")
    assert source.files == tuple(KEPT) and source.origin["from"] == "image" and source.origin["root"] == "vllm"
    assert source.describe() == "the vLLM backend in reg/t:26.01-vllm-python-py3 (sha256:dddddddddddd)"  # no layer


def test_a_local_images_dir_without_model_py_or_not_a_tar_is_no_backend() -> None:
    with pytest.raises(NoBackend, match=r"no model\.py"):
        from_image_dir(plain_tar({"vllm/other.py": b""}), {}, "img")
    with pytest.raises(NoBackend, match="not a readable tar"):
        from_image_dir(b"\x00garbage" * 100, {}, "img")
