"""Listing a 10,000-volume pool over SSH on loopback vs the same listing locally.

The pool is bench_listing's dataset (half raw, half qcow2, a third qcow2 overlays, some
chained). A real sshd is started here on 127.0.0.1 (the tests' harness: its own host key,
a generated client key, key auth only) and stopped at the end. Two ways, each side by
side with the same listing of the same directory locally:

- whole processes: ``storage-console ls HOST:POOL --json`` (an ``ssh://`` host in a
  scratch config: connect, ship the scanner, one round trip) vs
  ``storage-console ls DIR --json``;
- in-process: ``Inventory.scan_pool`` through the console's ``SshTransport`` (the
  connection already up, as in the console after its first refresh) vs the local one.

Each side is warmed up once (connection, page cache, the agent cached on the host), then
the median of several runs, the two sides taking turns. Target (issue 4): SSH at most
1.5x local.

    .venv/bin/python benchmarks/bench_ssh_listing.py [--quick] [--count N] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # the project and its test harness

from bench_listing import Dataset, check_ours, prepare_dataset, scratch_env  # noqa: E402
from common import (  # noqa: E402
    BenchError,
    data_root,
    describe_runs,
    heading,
    median,
    note,
    print_table,
    quick_requested,
    record_target,
    run,
    storage_console_exe,
)

if TYPE_CHECKING:
    from tests.harness.sshd import Sshd

BENCH = "ssh_listing"
TARGET_RATIO = 1.5  # ssh / local
FULL = {"count": 10_000, "runs": 5}
QUICK = {"count": 1_000, "runs": 3}


# -- sshd on loopback ----------------------------------------------------------------


@dataclass
class SshHosts:
    """sshd instances on 127.0.0.1 and a HOME whose ~/.ssh trusts them and holds the
    only authorized client key."""

    root: Path
    home: Path
    sshds: dict[str, Sshd] = field(default_factory=dict)

    def uri(self, name: str) -> str:
        return f"ssh://root@127.0.0.1:{self.sshds[name].port}"

    def env(self, base: dict[str, str]) -> dict[str, str]:
        env = dict(base, HOME=str(self.home))
        env.pop("SSH_AUTH_SOCK", None)  # the generated key only, never an agent's
        return env

    def stop(self, name: str) -> None:
        self.sshds[name].stop()

    def stop_all(self) -> None:
        for sshd in self.sshds.values():
            sshd.stop()


@contextmanager
def ssh_hosts(root: Path, names: Sequence[str]) -> Iterator[SshHosts]:
    """Start one sshd per name (the tests' harness), stop them all at the end."""
    from tests.harness.sshd import Sshd, keygen, skip_reason

    reason = skip_reason()
    if reason is not None:
        raise BenchError(reason)
    client_key = root / "client" / "id_ed25519"
    client_key.parent.mkdir(parents=True)
    keygen(client_key)
    authorized = root / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    hosts = SshHosts(root, root / "home")
    try:
        for name in names:
            sshd = Sshd(name, root, authorized, path)
            hosts.sshds[name] = sshd
            sshd.start()
        ssh_dir = hosts.home / ".ssh"
        ssh_dir.mkdir(parents=True, mode=0o700)
        (ssh_dir / "id_ed25519").write_bytes(client_key.read_bytes())
        (ssh_dir / "id_ed25519").chmod(0o600)
        (ssh_dir / "known_hosts").write_text("".join(
            s.known_hosts_line() for s in hosts.sshds.values()))
        yield hosts
    finally:
        hosts.stop_all()


@contextmanager
def home_of(hosts: SshHosts) -> Iterator[None]:
    """This process's HOME is the hosts' (paramiko reads ~/.ssh from it) for a while."""
    saved = {k: os.environ.get(k) for k in ("HOME", "SSH_AUTH_SOCK")}
    os.environ["HOME"] = str(hosts.home)
    os.environ.pop("SSH_AUTH_SOCK", None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# -- timing ----------------------------------------------------------------------------


def timed_runs(a: Callable[[], object], b: Callable[[], object],
               runs: int) -> tuple[tuple[float, list[float]], tuple[float, list[float]]]:
    """((the warm-up's seconds, the timed runs' seconds) of ``a``, the same of ``b``).

    The runs alternate, a b a b ...: on a shared machine, load from elsewhere then
    falls on both sides alike instead of on whichever ran while it lasted."""
    def timed(once: Callable[[], object]) -> float:
        start = time.perf_counter()
        once()
        return time.perf_counter() - start

    warm_a, warm_b = timed(a), timed(b)
    times_a, times_b = [], []
    for _ in range(runs):
        times_a.append(timed(a))
        times_b.append(timed(b))
    return (warm_a, times_a), (warm_b, times_b)


def process_listing(argv: list[str], env: dict[str, str], out: Path) -> Callable[[], None]:
    def once() -> None:
        with open(out, "w") as f:
            run(argv, timeout=900, env=env, stdout=f.fileno())
    return once


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench_ssh_listing.py",
                                description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="1,000 volumes, fewer runs")
    p.add_argument("--dir", help="dataset root (shared with bench_listing)")
    p.add_argument("--count", type=int)
    p.add_argument("--runs", type=int)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    defaults = QUICK if args.quick or quick_requested() else FULL
    count, runs = args.count or defaults["count"], args.runs or defaults["runs"]

    heading(f"ssh_listing: a {count:,}-volume pool over SSH on loopback vs locally")
    note(f"{os.cpu_count()} CPUs, load average "
         + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    root = data_root(args.dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        ds = prepare_dataset(root, count, args.seed, regenerate=False)
    except (BenchError, OSError) as err:
        print(f"  ERROR: cannot prepare the dataset: {err}")
        return 1
    note(f"dataset {ds.pool}: {'reused' if ds.reused else f'generated in {ds.seconds:.1f} s'}")

    with tempfile.TemporaryDirectory(prefix="sc-bench-ssh-") as tmp:
        scratch = Path(tmp)
        try:
            with ssh_hosts(scratch / "sshd", ["bench"]) as hosts:
                return measure(ds, hosts, scratch, runs)
        except BenchError as err:
            print(f"  ERROR: {err}")
            return 1


def measure(ds: Dataset, hosts: SshHosts, scratch: Path, runs: int) -> int:
    exe = storage_console_exe()
    conf = scratch / "config.toml"
    conf.write_text(f"[[host]]\nname = 'bench'\nuri = '{hosts.uri('bench')}'\n"
                    f"[[host.pool]]\nname = 'images'\npath = '{ds.pool}'\n")
    env = hosts.env(scratch_env(scratch / "xdg"))
    out_ssh, out_local = scratch / "ssh.json", scratch / "local.json"
    note(f"sshd on 127.0.0.1:{hosts.sshds['bench'].port}; "
         f"timing processes: 1 warm-up + {runs} runs each ...")
    ssh_argv = [exe, "ls", "--config", str(conf), "bench:images", "--json"]
    local_argv = [exe, "ls", str(ds.pool), "--json"]
    (ssh_warm, ssh_runs), (local_warm, local_runs) = timed_runs(
        process_listing(ssh_argv, env, out_ssh), process_listing(local_argv, env, out_local),
        runs)
    status = 0
    for label, out in (("over SSH", out_ssh), ("locally", out_local)):
        problems, summary = check_ours(json.loads(out.read_text()), ds)
        if problems:
            print(f"  ERROR: the listing {label} does not match the dataset:\n"
                  + "\n".join(f"    - {x}" for x in problems))
            status = 1
        else:
            note(f"the listing {label} is correct: {summary}")

    note(f"timing in-process Inventory.scan_pool: 1 warm-up + {runs} runs each ...")
    in_ssh, in_local = in_process(ds.pool, hosts, conf, runs)
    if in_ssh[2] != len(ds.volumes) or in_local[2] != len(ds.volumes):
        print(f"  ERROR: scan_pool found {in_ssh[2]} volumes over SSH, {in_local[2]} "
              f"locally; generated {len(ds.volumes)}")
        status = 1

    ssh_t, local_t = median(ssh_runs), median(local_runs)
    in_ssh_t, in_local_t = median(in_ssh[1]), median(in_local[1])
    rows = [
        ["storage-console ls bench:images --json (SSH)", f"{ssh_t:.3f}",
         f"{ssh_t / local_t:.2f}x", f"warm-up {ssh_warm:.3f}; {describe_runs(ssh_runs)}"],
        ["storage-console ls DIR --json (local)", f"{local_t:.3f}", "1.00x",
         f"warm-up {local_warm:.3f}; {describe_runs(local_runs)}"],
        ["Inventory.scan_pool over SSH (connected)", f"{in_ssh_t:.3f}",
         f"{in_ssh_t / in_local_t:.2f}x",
         f"warm-up {in_ssh[0]:.3f} (connects); {describe_runs(in_ssh[1])}"],
        ["Inventory.scan_pool locally", f"{in_local_t:.3f}", "1.00x",
         f"warm-up {in_local[0]:.3f}; {describe_runs(in_local[1])}"],
    ]
    print()
    print_table([f"{len(ds.volumes):,} volumes", "seconds", "vs local",
                 f"median of {runs}; runs"], rows, right=(1, 2))
    print()
    for what, ratio in (("whole process", ssh_t / local_t),
                        ("in-process scan", in_ssh_t / in_local_t)):
        record_target(BENCH, f"{what}: ssh/local <= {TARGET_RATIO}", ratio <= TARGET_RATIO,
                      f"ssh/local = {ratio:.2f}")
    return status


def in_process(pool_dir: Path, hosts: SshHosts, conf: Path,
               runs: int) -> tuple[tuple[float, list[float], int], tuple[float, list[float], int]]:
    """((warm-up, runs, volumes) over SSH, the same locally) through Inventory.scan_pool."""
    from backends.model import Host, Pool
    from console.config import Config, HostConfig
    from console.inventory import Inventory

    with home_of(hosts):
        remote = Inventory(Config.load(conf), None, read_only=True,
                           known_hosts=str(hosts.home / ".ssh" / "known_hosts"))
        local_pool = Pool("local", "images", "dir", str(pool_dir))
        local = Inventory(Config((HostConfig(Host("local"), (local_pool,)),)), None,
                          read_only=True)
        found = {"ssh": 0, "local": 0}
        try:
            ssh_pool = remote.pool("bench", "images")

            def ssh_once() -> None:
                found["ssh"] = len(remote.scan_pool(ssh_pool)[0].volumes)

            def local_once() -> None:
                found["local"] = len(local.scan_pool(local_pool)[0].volumes)

            ssh, here = timed_runs(ssh_once, local_once, runs)
        finally:
            remote.close()
            local.close()
    return (*ssh, found["ssh"]), (*here, found["local"])


if __name__ == "__main__":
    sys.exit(main())
