"""The directory driver on real images: chains, hostile chains, hostile names."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from backends.contract import InvalidRequest, PoolUnavailable, VolumeExists, VolumeNotFound
from backends.drivers.dir.driver import DirDriver
from backends.model import ImageFormat, LinkProblem, Pool
from backends.transport.local import LocalTransport
from tests.conftest import PATIENCE, MakeImage, strip_backing_format, write_file


def driver_for(*roots: Path) -> DirDriver:
    return DirDriver(LocalTransport(), tuple(str(r) for r in roots))


def pool_at(path: Path) -> Pool:
    return Pool("local", "p", "dir", str(path))


def by_name(pool_dir: Path, roots: tuple[Path, ...] = ()) -> dict[str, object]:
    scan = driver_for(*(roots or (pool_dir,))).scan_pool(pool_at(pool_dir))
    return {v.name: v for v in scan.volumes}


def test_lists_images_with_sizes_and_chain(pool_dir: Path, make_image: MakeImage) -> None:
    make_image(pool_dir / "base.raw", "raw", "4M")
    make_image(pool_dir / "mid.qcow2", "qcow2", "4M", backing="base.raw", backing_fmt="raw")
    make_image(pool_dir / "top.qcow2", "qcow2", "8M", backing="mid.qcow2",
               backing_fmt="qcow2")
    scan = driver_for(pool_dir).scan_pool(pool_at(pool_dir))
    vols = {v.name: v for v in scan.volumes}
    assert set(vols) == {"base.raw", "mid.qcow2", "top.qcow2"}
    top = vols["top.qcow2"]
    assert top.format == ImageFormat.QCOW2 and top.capacity == 8 << 20
    assert top.backing == str(pool_dir / "mid.qcow2") and top.backing_format == "qcow2"
    assert [link.path for link in top.chain.links] == [
        str(pool_dir / n) for n in ("top.qcow2", "mid.qcow2", "base.raw")]
    assert top.chain_depth == 3 and top.chain.problem is None
    assert vols["base.raw"].chain_depth == 1 and vols["base.raw"].backing is None
    assert top.allocation == os.stat(pool_dir / "top.qcow2").st_blocks * 512
    assert scan.pool.capacity is not None
    assert scan.pool.capacity.committed == (4 + 4 + 8) << 20


def test_not_volumes_are_never_opened(pool_dir: Path) -> None:
    (pool_dir / "subdir").mkdir()
    os.mkfifo(pool_dir / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(pool_dir / "sock"))
    write_file(pool_dir / "disk.raw", size=1 << 20)
    scan = driver_for(pool_dir).scan_pool(pool_at(pool_dir))
    assert [v.name for v in scan.volumes] == ["disk.raw"]
    assert sorted(scan.skipped) == ["fifo (fifo)", "sock (socket)", "subdir (directory)"]
    sock.close()


def fifo_watch(path: Path) -> threading.Event:
    """A FIFO at ``path`` and an event set if anybody opens it for reading."""
    os.mkfifo(path)
    opened = threading.Event()

    def watch() -> None:
        try:
            fd = os.open(path, os.O_WRONLY)  # blocks until a reader opens it
        except OSError:
            return
        opened.set()
        os.close(fd)

    threading.Thread(target=watch, daemon=True).start()
    return opened


def release(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        os.close(fd)
    except OSError:
        pass


def test_fifo_as_backing_is_never_opened(pool_dir: Path, make_image: MakeImage) -> None:
    make_image(pool_dir / "b", "raw", "1M")
    make_image(pool_dir / "top.qcow2", "qcow2", "1M", backing="b", backing_fmt="raw")
    os.unlink(pool_dir / "b")
    opened = fifo_watch(pool_dir / "b")
    top = by_name(pool_dir)["top.qcow2"]
    assert not opened.wait(0.3), "the scanner opened the FIFO"
    assert top.chain.problem == LinkProblem.NOT_REGULAR  # type: ignore[attr-defined]
    release(pool_dir / "b")


def test_fifo_as_data_file_is_never_opened(pool_dir: Path, make_image: MakeImage,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(pool_dir)  # qemu-img resolves data_file against the cwd
    make_image(pool_dir / "ext.qcow2", "qcow2", "1M", options="data_file=ext.data")
    os.unlink(pool_dir / "ext.data")
    opened = fifo_watch(pool_dir / "ext.data")
    vols = by_name(pool_dir)
    assert not opened.wait(0.3), "the scanner opened the data file FIFO"
    ext = vols["ext.qcow2"]
    assert ext.info.data_file == "ext.data"  # type: ignore[attr-defined]
    release(pool_dir / "ext.data")


def test_missing_backing(pool_dir: Path, make_image: MakeImage) -> None:
    make_image(pool_dir / "b.raw", "raw", "1M")
    make_image(pool_dir / "top", "qcow2", "1M", backing="b.raw", backing_fmt="raw")
    os.unlink(pool_dir / "b.raw")
    top = by_name(pool_dir)["top"]
    assert top.chain.problem == LinkProblem.MISSING  # type: ignore[attr-defined]
    assert top.chain.problem_path == str(pool_dir / "b.raw")  # type: ignore[attr-defined]


def test_loop(pool_dir: Path, make_image: MakeImage) -> None:
    make_image(pool_dir / "x", "raw", "1M")
    make_image(pool_dir / "a", "qcow2", "1M", backing="x", backing_fmt="raw")
    make_image(pool_dir / "b", "qcow2", "1M", backing="a", backing_fmt="qcow2")
    # a -> b -> a: rewrite a's backing to b, declared qcow2.
    import subprocess
    subprocess.run(["qemu-img", "rebase", "-u", "-f", "qcow2", "-b", "b", "-F", "qcow2",
                    str(pool_dir / "a")], check=True)
    vols = by_name(pool_dir)
    assert vols["a"].chain.problem == LinkProblem.LOOP  # type: ignore[attr-defined]
    assert vols["b"].chain.problem == LinkProblem.LOOP  # type: ignore[attr-defined]


def test_self_loop(pool_dir: Path, make_image: MakeImage) -> None:
    make_image(pool_dir / "x", "raw", "1M")
    make_image(pool_dir / "self", "qcow2", "1M", backing="x", backing_fmt="raw")
    import subprocess
    subprocess.run(["qemu-img", "rebase", "-u", "-f", "qcow2", "-b", "self", "-F", "qcow2",
                    str(pool_dir / "self")], check=True)
    assert by_name(pool_dir)["self"].chain.problem == LinkProblem.LOOP  # type: ignore[attr-defined]


def test_escape_outside_roots_not_opened(tmp_path: Path, pool_dir: Path,
                                         make_image: MakeImage) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    make_image(outside / "secret.raw", "raw", "1M")
    make_image(pool_dir / "abs", "qcow2", "1M", backing=str(outside / "secret.raw"),
               backing_fmt="raw")
    make_image(pool_dir / "rel", "qcow2", "1M", backing="../outside/secret.raw",
               backing_fmt="raw")
    os.symlink(outside / "secret.raw", pool_dir / "link-out")
    make_image(pool_dir / "via-link", "qcow2", "1M", backing="link-out", backing_fmt="raw")
    vols = by_name(pool_dir)
    for name in ("abs", "rel", "via-link"):
        v = vols[name]
        assert v.chain.problem == LinkProblem.ESCAPE, name  # type: ignore[attr-defined]
        assert v.chain.depth == 1  # type: ignore[attr-defined]
    assert "link-out" not in vols  # a link out of the roots is no volume


def test_link_to_a_volume_in_the_pool_probes_both(pool_dir: Path,
                                                  make_image: MakeImage) -> None:
    # One listed before its target and one after: each keeps its own probe.
    make_image(pool_dir / "disk.qcow2", "qcow2", "3M")
    os.symlink("disk.qcow2", pool_dir / "a-link.qcow2")
    os.symlink("disk.qcow2", pool_dir / "z-link.qcow2")
    make_image(pool_dir / "top.qcow2", "qcow2", "3M", backing="z-link.qcow2",
               backing_fmt="qcow2")
    vols = by_name(pool_dir)
    for name in ("disk.qcow2", "a-link.qcow2", "z-link.qcow2"):
        v = vols[name]
        assert v.format == ImageFormat.QCOW2 and v.capacity == 3 << 20, name  # type: ignore[attr-defined]
        assert v.path == str(pool_dir / name), name  # type: ignore[attr-defined]
    top = vols["top.qcow2"]
    assert top.chain.problem is None and top.chain_depth == 2  # type: ignore[attr-defined]


def test_backing_in_another_root_is_followed(tmp_path: Path, pool_dir: Path,
                                             make_image: MakeImage) -> None:
    other = tmp_path / "other"
    other.mkdir()
    make_image(other / "base.raw", "raw", "2M")
    make_image(pool_dir / "top", "qcow2", "2M", backing=str(other / "base.raw"),
               backing_fmt="raw")
    top = by_name(pool_dir, (pool_dir, other))["top"]
    assert top.chain.problem is None and top.chain_depth == 2  # type: ignore[attr-defined]


def test_undeclared_backing_format_not_followed(pool_dir: Path, make_image: MakeImage) -> None:
    make_image(pool_dir / "base.qcow2", "qcow2", "1M")
    make_image(pool_dir / "top", "qcow2", "1M", backing="base.qcow2", backing_fmt="qcow2")
    strip_backing_format(pool_dir / "top")
    top = by_name(pool_dir)["top"]
    assert top.chain.problem == LinkProblem.UNDECLARED_FORMAT  # type: ignore[attr-defined]
    assert top.chain.depth == 1  # type: ignore[attr-defined]


def test_declared_raw_backing_is_not_probed(pool_dir: Path, make_image: MakeImage) -> None:
    """A backing declared raw that holds a qcow2 header is read as raw: its own backing
    reference (to a file outside the pool) is never looked at."""
    make_image(pool_dir / "evil", "qcow2", "1M", backing="/etc/shadow", backing_fmt="raw")
    make_image(pool_dir / "top", "qcow2", "1M", backing="evil", backing_fmt="raw")
    top = by_name(pool_dir)["top"]
    assert top.chain.problem is None  # type: ignore[attr-defined]
    assert [link.format for link in top.chain.links] == ["qcow2", "raw"]  # type: ignore[attr-defined]


HOSTILE = ["with space", "new\nline", "semi;colon", "$(touch pwned)", "-leading-dash",
           "quote'\"", "back\\slash"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_listed_created_and_deleted(tmp_path: Path, pool_dir: Path,
                                                 make_image: MakeImage, name: str) -> None:
    monkey_cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        d = driver_for(pool_dir)
        pool = pool_at(pool_dir)
        make_image(pool_dir / f"base {name}", "raw", "1M")
        base = d.probe_volume(pool, f"base {name}")
        vol = d.create_volume(pool, name, ImageFormat.QCOW2, 2 << 20, backing=base)
        assert vol.name == name and vol.chain.depth == 2 and vol.chain.problem is None
        assert {v.name for v in d.scan_pool(pool).volumes} == {name, f"base {name}"}
        d.delete_volume(pool, name)
        assert not (pool_dir / name).exists()
        assert not (tmp_path / "pwned").exists()
    finally:
        os.chdir(monkey_cwd)


def test_non_utf8_name(pool_dir: Path) -> None:
    raw = os.fsencode(str(pool_dir)) + b"/bad-\xff\xfe.raw"
    with open(raw, "wb") as f:
        f.truncate(1 << 20)
    vols = by_name(pool_dir)
    (name,) = vols
    assert os.fsencode(name) == b"bad-\xff\xfe.raw"
    assert os.path.exists(os.fsencode(vols[name].path))  # type: ignore[attr-defined]


def test_create_refuses_existing_and_bad_names(pool_dir: Path) -> None:
    d = driver_for(pool_dir)
    pool = pool_at(pool_dir)
    write_file(pool_dir / "taken", b"precious")
    with pytest.raises(VolumeExists) as err:
        d.create_volume(pool, "taken", ImageFormat.RAW, 1 << 20)
    assert "volume 'taken'" in str(err.value) and "pool 'p'" in str(err.value)
    assert (pool_dir / "taken").read_bytes() == b"precious"
    for bad in ("", "..", "a/b", ".sc-tmp-x"):
        with pytest.raises(InvalidRequest):
            d.create_volume(pool, bad, ImageFormat.RAW, 1 << 20)
    with pytest.raises(InvalidRequest):
        d.create_volume(pool, "zero", ImageFormat.RAW, 0)
    assert sorted(os.listdir(pool_dir)) == ["taken"]


def test_failed_create_leaves_nothing(pool_dir: Path) -> None:
    d = driver_for(pool_dir)
    with pytest.raises(Exception, match="qemu-img create failed"):
        # An absurd size qemu-img refuses: nothing may be left behind.
        d.create_volume(pool_at(pool_dir), "huge", ImageFormat.QCOW2, 1 << 62)
    assert os.listdir(pool_dir) == []


def test_missing_pool_and_volume(tmp_path: Path) -> None:
    d = driver_for(tmp_path)
    with pytest.raises(PoolUnavailable, match="does not exist"):
        d.scan_pool(pool_at(tmp_path / "nope"))
    with pytest.raises(VolumeNotFound):
        d.probe_volume(pool_at(tmp_path), "nope")


def test_holds_data(pool_dir: Path, make_image: MakeImage) -> None:
    import subprocess
    d = driver_for(pool_dir)
    pool = pool_at(pool_dir)
    make_image(pool_dir / "empty.raw", "raw", "1M")
    make_image(pool_dir / "empty.qcow2", "qcow2", "1M")
    make_image(pool_dir / "full.qcow2", "qcow2", "1M")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write 0 4k", str(pool_dir / "full.qcow2")],
                   check=True, capture_output=True)
    write_file(pool_dir / "full.raw", b"x" * 4096)
    holds = {n: d.holds_data(d.probe_volume(pool, n)) for n in os.listdir(pool_dir)}
    assert holds == {"empty.raw": False, "empty.qcow2": False, "full.qcow2": True,
                     "full.raw": True}


def test_temporary_files_are_not_volumes(pool_dir: Path) -> None:
    write_file(pool_dir / ".sc-tmp-1234-new", size=4096)
    write_file(pool_dir / "real", size=4096)
    assert list(by_name(pool_dir)) == ["real"]


def test_read_only_transport_refuses(pool_dir: Path) -> None:
    from backends.contract import ReadOnlyViolation
    d = DirDriver(LocalTransport(read_only=True), (str(pool_dir),))
    with pytest.raises(ReadOnlyViolation):
        d.create_volume(pool_at(pool_dir), "x", ImageFormat.RAW, 4096)
    write_file(pool_dir / "keep", b"data")
    with pytest.raises(ReadOnlyViolation):
        d.delete_volume(pool_at(pool_dir), "keep")
    assert sorted(os.listdir(pool_dir)) == ["keep"]


def test_parallel_probe_matches_serial(pool_dir: Path, make_image: MakeImage,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from backends.transport import scanner

    make_image(pool_dir / "base.raw", "raw", "1M")
    for i in range(6):
        make_image(pool_dir / f"q{i}", "qcow2", f"{i + 1}M", backing="base.raw",
                   backing_fmt="raw")
        write_file(pool_dir / f"r{i}", size=(i + 1) << 16)
    serial = scanner.scan_directory(str(pool_dir), (str(pool_dir),))
    monkeypatch.setattr(scanner, "PARALLEL_MIN", 2)
    monkeypatch.setattr(scanner.threading, "active_count", lambda: 1)
    forks: list[int] = []
    real_fork = os.fork

    def counting_fork() -> int:
        pid = real_fork()
        if pid:
            forks.append(pid)
        return pid

    monkeypatch.setattr(scanner.os, "fork", counting_fork)
    parallel = scanner.scan_directory(str(pool_dir), (str(pool_dir),))
    assert len(forks) == 1
    # Free space may move between two scans (other writers): compare the volumes.
    assert parallel["entries"] == serial["entries"]


def test_parallel_probe_survives_a_failing_child(pool_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from backends.transport import scanner

    for i in range(8):
        write_file(pool_dir / f"r{i}", size=4096 * (i + 1))
    serial = scanner.scan_directory(str(pool_dir), (str(pool_dir),))
    monkeypatch.setattr(scanner, "PARALLEL_MIN", 2)
    monkeypatch.setattr(scanner.threading, "active_count", lambda: 1)

    def broken_dumps(value: object) -> bytes:
        raise MemoryError  # what a child out of memory would hit

    monkeypatch.setattr(scanner.marshal, "dumps", broken_dumps)
    assert scanner.scan_directory(str(pool_dir), (str(pool_dir),))["entries"] == \
        serial["entries"]


def test_in_use_seen_through_qemu_file_lock(pool_dir: Path, make_image: MakeImage) -> None:
    """A qemu-nbd serving the image writable holds QEMU's write lock: the scan says so,
    for raw and qcow2 alike, with one F_GETLK and no extra process."""
    import shutil
    import subprocess
    import time

    if shutil.which("qemu-nbd") is None:
        pytest.skip("qemu-nbd is not installed")
    make_image(pool_dir / "busy.qcow2", "qcow2", "4M")
    make_image(pool_dir / "busy.raw", "raw", "4M")
    make_image(pool_dir / "idle.qcow2", "qcow2", "4M")
    servers = []
    for i, (name, fmt) in enumerate((("busy.qcow2", "qcow2"), ("busy.raw", "raw"))):
        sock = pool_dir.parent / f"nbd{i}.sock"
        servers.append(subprocess.Popen(["qemu-nbd", "--persistent", "-k", str(sock), "-f",
                                         fmt, str(pool_dir / name)]))
    try:
        deadline = time.monotonic() + PATIENCE  # qemu-nbd locks as it opens the image
        while True:
            vols = by_name(pool_dir)
            busy = {n for n, v in vols.items() if v.in_use}  # type: ignore[attr-defined]
            if busy == {"busy.qcow2", "busy.raw"} or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert busy == {"busy.qcow2", "busy.raw"}
    finally:
        for server in servers:
            server.terminate()
            server.wait()
    assert not any(v.in_use for v in by_name(pool_dir).values())  # type: ignore[attr-defined]
