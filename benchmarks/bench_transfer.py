"""A copy between two SSH hosts on loopback, side by side with ``scp -3`` and ``scp``.

Dataset: a 2 GiB sparse raw image holding 512 MiB of data in 1 MiB extents spread over
it (each extent half random bytes, half a repeated text pattern: roughly what a guest's
disk compresses to with zstd -1). Two sshd instances of the test harness (hosts "a" and
"b", both on 127.0.0.1, each with its own pool directory) serve it.

- ours: a ``TransferVolume`` job on a ``Runner`` (as the command line runs
  ``storage-console copy a:images/vm.raw b:images/vm.raw``), timed from ``submit()`` to
  done: locks on both hosts, the reservation, the sparse stream through zstd on both
  ends, the checksum, fsync and publish on b. Bytes on the wire: what this process
  pumped from a's agent to b's (compressed), per hop.
- ``scp -3``: a → this machine → b, the same two hops; ``scp`` and ``rsync --sparse``
  (over ssh): the file from this machine to b, one hop (the hosts are this machine).
  They send every byte of the file (holes as zeroes; rsync --sparse only writes holes)
  and do not fsync; their bytes on the wire are the file's size per hop (SSH's own
  compression off, as by default).

Target (issue 4): ours at least 1.5x faster than the faster of scp and rsync. The copy is
checked (cmp) and must be sparse. Needs root and sshd, as the SSH tests do.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import common  # noqa: E402  (run as a script: sys.path is set just above)

MiB = 1 << 20
FULL = {"size": 2048 * MiB, "data": 512 * MiB, "rounds": 3}
QUICK = {"size": 256 * MiB, "data": 64 * MiB, "rounds": 1}


def make_image(path: Path, size: int, data: int) -> None:
    """``data`` bytes in 1 MiB extents spread evenly over a sparse file of ``size``."""
    extents = data // MiB
    step = size // extents
    pattern = (b"storage-console transfer benchmark " * 32000)[:MiB // 2]
    with open(path, "wb") as f:
        f.truncate(size)
        for i in range(extents):
            f.seek(i * step)
            f.write(os.urandom(MiB // 2) + pattern)
        f.flush()
        os.fsync(f.fileno())


def ours(conf: Path, pools: dict[str, Path], round_: int) -> tuple[float, int, bool]:
    from console.cache import Cache
    from console.config import Config, journal_path
    from console.inventory import Inventory
    from console.jobs.journal import JobState, Journal
    from console.jobs.runner import Runner
    from console.jobs.transfer import TransferVolume

    inv = Inventory(Config.load(conf), Cache(None))
    runner = Runner(Journal(journal_path()), inv)
    try:
        start = time.perf_counter()
        job = runner.submit(TransferVolume("a", "images", "vm.raw", dest_host="b",
                                           dest_pool="images", dest_name=f"ours{round_}.raw"))
        done = runner.wait(job.id)
        seconds = time.perf_counter() - start
        if done.state != JobState.DONE:
            raise common.BenchError(f"our copy failed: {done.error}")
        stats = done.resume["transfer"]
        return seconds, int(stats["wire_bytes"]), bool(stats["zstd"])
    finally:
        runner.close()
        inv.close()


def scp_argv(ssh_dir: Path) -> list[str]:
    # -O: the legacy scp protocol (the harness sshd runs no sftp subsystem).
    return ["scp", "-O", "-q", "-i", str(ssh_dir / "id_ed25519"), "-o",
            f"UserKnownHostsFile={ssh_dir / 'known_hosts'}", "-o", "BatchMode=yes"]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="256 MiB with 64 MiB of data, once")
    p.add_argument("--dir", help="where the hosts' pools live (default: the data root)")
    args = p.parse_args(argv)
    size = QUICK if args.quick or common.quick_requested() else FULL
    common.heading(f"copy between hosts: {size['size'] // MiB} MiB sparse raw with "
                   f"{size['data'] // MiB} MiB of data, host a → host b over loopback sshd")
    from tests.harness.sshd import skip_reason, start_fleet

    reason = skip_reason()
    if reason:
        common.record_target("transfer", "copy between hosts", None, reason)
        return 0
    for tool in ("scp", "rsync", "zstd", "cmp"):
        common.require_tool(tool)
    parent = Path(args.dir) if args.dir else common.data_root()
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="transfer-", dir=parent))
    fleet = start_fleet(root / "fleet", "127.0.0.1")  # scp and rsync below name it
    old_env = {k: os.environ.get(k) for k in ("HOME", "SSH_AUTH_SOCK", "XDG_STATE_HOME",
                                              "XDG_CACHE_HOME", "XDG_CONFIG_HOME")}
    try:
        os.environ["HOME"] = str(fleet.home)
        os.environ.pop("SSH_AUTH_SOCK", None)
        for var in ("XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
            os.environ[var] = str(root / var.lower())
        pools = {name: root / name for name in ("a", "b")}
        for pool in pools.values():
            pool.mkdir()
        conf = root / "config.toml"
        conf.write_text("".join(
            f"[[host]]\nname = '{n}'\nuri = '{fleet.uri(n)}'\n"
            f"[[host.pool]]\nname = 'images'\npath = '{pools[n]}'\n" for n in ("a", "b")))
        source = pools["a"] / "vm.raw"
        make_image(source, size["size"], size["data"])
        port_a, port_b = fleet["a"].port, fleet["b"].port
        scp = scp_argv(fleet.home / ".ssh")
        ssh_dir = fleet.home / ".ssh"
        rsync = ["rsync", "--sparse", "-e", f"ssh -p {port_b} -i {ssh_dir / 'id_ed25519'} "
                 f"-o UserKnownHostsFile={ssh_dir / 'known_hosts'} -o BatchMode=yes"]
        times: dict[str, list[float]] = {"ours": [], "scp -3": [], "scp": [],
                                         "rsync --sparse": []}
        wire = 0
        zstd = False
        for r in range(size["rounds"]):
            subprocess.run(["sync"], check=True)
            seconds, wire, zstd = ours(conf, pools, r)
            times["ours"].append(seconds)
            if r == 0:
                common.run(["cmp", str(source), str(pools["b"] / "ours0.raw")], timeout=600)
                allocated = os.stat(pools["b"] / "ours0.raw").st_blocks * 512
                if allocated > size["data"] + 16 * MiB:
                    raise common.BenchError(f"our copy is not sparse: {allocated} bytes")
            (pools["b"] / f"ours{r}.raw").unlink()
            subprocess.run(["sync"], check=True)
            times["scp -3"].append(common.time_command(
                [*scp, "-3", f"scp://root@127.0.0.1:{port_a}/{source}",
                 f"scp://root@127.0.0.1:{port_b}/{pools['b'] / 'scp3.raw'}"], timeout=1200))
            (pools["b"] / "scp3.raw").unlink()
            subprocess.run(["sync"], check=True)
            times["scp"].append(common.time_command(
                [*scp, str(source), f"scp://root@127.0.0.1:{port_b}/{pools['b'] / 'scp.raw'}"],
                timeout=1200))
            (pools["b"] / "scp.raw").unlink()
            subprocess.run(["sync"], check=True)
            times["rsync --sparse"].append(common.time_command(
                [*rsync, str(source), f"root@127.0.0.1:{pools['b'] / 'rsync.raw'}"],
                timeout=1200))
            (pools["b"] / "rsync.raw").unlink()
        med = {k: common.median(v) for k, v in times.items()}
        file_bytes = size["size"]
        rows = [["ours" + (" (zstd)" if zstd else " (raw)"), f"{med['ours']:.2f}", "1.00x",
                 f"{wire / MiB:.0f} MiB", common.describe_runs(times["ours"])]]
        for tool in ("scp -3", "scp", "rsync --sparse"):
            rows.append([tool, f"{med[tool]:.2f}", f"{med[tool] / med['ours']:.2f}x",
                         f"{file_bytes / MiB:.0f} MiB ({file_bytes / max(wire, 1):.1f}x)",
                         common.describe_runs(times[tool])])
        common.print_table(["tool", "seconds", "time vs ours", "bytes on the wire per hop",
                            "runs"], rows, right=(1, 2))
        faster = min(med["scp -3"], med["scp"], med["rsync --sparse"])
        ratio = faster / med["ours"]
        common.record_target("transfer", "copy between hosts at least 1.5x faster than scp "
                             "and rsync --sparse", ratio >= 1.5,
                             f"the fastest of them takes {ratio:.2f}x ours")
        return 0
    finally:
        fleet.stop()
        for key, value in old_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
