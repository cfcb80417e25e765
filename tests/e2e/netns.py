"""Validators on separate hosts within one machine: each in its own Linux network
namespace, with links between them that a test cuts, heals and degrades (issue 17).

`Sandbox(n)` makes namespaces n0..n{n-1} with unique names (`ml<tag>n<i>`). Node i's
address, 10.77.<s>.<i+1>/32, is on its own `lo`; a veth pair per two nodes (a full mesh,
no addresses of their own) carries their traffic, by a /32 route `dev` that link with
that address as source. One more veth pair per namespace joins it to the root
namespace (10.78.<s>.<4i+1>/30 there, .<4i+2> in the namespace), with a root route to
node i's address through it, so that the test process reaches every node's client API
whatever is cut: only node-to-node links are ever cut or degraded. <s> is a third octet
under which neither the root namespace's addresses nor its routes lie: every address is
made here, none outside is touched.

- `cut(i, j)` sets both ends of link i-j down (the kernel drops its routes, so the
  nodes see "network unreachable", as between hosts whose cable is pulled), `heal(i, j)`
  sets them up and puts the routes back; `split(group, ...)` cuts every link between
  the groups.
- `degrade(i, percent)` drops that share of the packets node i sends on its links,
  at random (an nftables rule in its namespace, matched on the links' names);
  `restore(i)` removes it. `delay(i, j, ms)` uses `tc netem`, only where the kernel has
  it (`netem_unavailable()` says why not).

Everything is removed by `close()` (the namespaces, the root-side links), which the
tests call in a `finally` after their node processes are stopped. `unavailable()`
gives the reason a test must skip (not Linux, not root, no `ip`, a namespace or a veth
pair cannot be made), `nft_unavailable()` the reason the loss test must.

`Cluster` is a network (`init_network` with one host per namespace) of real `medledger
node start` processes, each run under `ip netns exec` in its namespace, with mutual
TLS as every network uses it."""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import itertools
import os
import random
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from medledger.block import block_hash
from medledger.chain.store import ChainStore
from medledger.client import LedgerClient
from medledger.run.homes import init_network, network_homes
from medledger.run.launcher import READY_LINE, READY_TIMEOUT_S, NodeProcess
from medledger.wire.v1 import envelope_pb2
from tests.e2e.cli_runner import medledger
from tests.integration.conftest import stop_all, tls_of

__all__ = [
    "Cluster",
    "Sandbox",
    "netem_unavailable",
    "nft_unavailable",
    "unavailable",
    "wait_for",
]

IP_TIMEOUT_S = 30
IDENTITY = "10.77"  # .<s>.<i+1>: each node's own address
UPLINK = "10.78"  # .<s>.<4i+1>/30: the links to the root namespace
LOSS_TABLE = "medledger_loss"
BASE_PORT = 7000  # free: each node has its own address in its own namespace
FUND_MICROS = 10**15


def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"`{' '.join(command)}` failed: {result.stderr.strip()}")
    return result


@contextlib.contextmanager
def _scratch_namespace() -> Iterator[str]:
    """A namespace of our own for a probe, deleted afterwards."""
    name = f"ml{secrets.token_hex(2)}probe"
    try:
        _run("ip", "netns", "add", name)
        yield name
    finally:
        _run("ip", "netns", "del", name, check=False)


@functools.cache
def unavailable() -> str | None:
    """Why namespaces cannot be made here (the reason to skip), or None."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "making network namespaces needs root (the partition tests run as root in CI)"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is missing: `make system-deps` installs it"
    try:
        with _scratch_namespace() as name:
            _run("ip", "-n", name, "link", "add", "pa", "type", "veth", "peer", "name", "pb")
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
        return f"cannot make a network namespace with a veth pair here: {error}"
    return None


@functools.cache
def nft_unavailable() -> str | None:
    """Why packet loss cannot be made here (no `nft`, or no nf_tables), or None."""
    if shutil.which("nft") is None:
        return "`nft` (nftables) is missing: `make system-deps` installs it (as root, apt-get)"
    try:
        with _scratch_namespace() as name:
            _run(*_in(name), "nft", "add", "table", "inet", LOSS_TABLE)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
        return f"nftables does not work in a namespace here: {error}"
    return None


@functools.cache
def netem_unavailable() -> str | None:
    """Why `tc netem` (delay) cannot be used here, or None. Probed once, on a link of
    our own."""
    if shutil.which("tc") is None:
        return "`tc` is missing"
    try:
        with _scratch_namespace() as name:
            _run("ip", "-n", name, "link", "add", "pa", "type", "veth", "peer", "name", "pb")
            _run(*_in(name), "tc", "qdisc", "add", "dev", "pa", "root", "netem", "delay", "1ms")
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
        return f"the kernel has no netem qdisc (sch_netem), so delay is not emulated: {error}"
    return None


def _in(namespace: str) -> list[str]:
    return ["ip", "netns", "exec", namespace]


def _free_octet() -> int:
    """A third octet s such that nothing in the root namespace is in 10.77.s.0/24 or
    10.78.s.0/24 (another run's sandbox, or a real network)."""
    taken = _run("ip", "-o", "-4", "addr", "show").stdout + _run("ip", "-4", "route").stdout
    used: list[ipaddress.IPv4Network] = []
    for word in taken.split():
        with contextlib.suppress(ValueError):
            used.append(ipaddress.IPv4Network(word, strict=False))
    candidates = list(range(1, 255))
    random.shuffle(candidates)
    for octet in candidates:
        mine = [ipaddress.ip_network(f"{prefix}.{octet}.0/24") for prefix in (IDENTITY, UPLINK)]
        if not any(net.overlaps(other) for net in mine for other in used):
            return octet
    raise RuntimeError("no free 10.77.s.0/24 and 10.78.s.0/24 for the sandbox")


class Sandbox:
    """`count` network namespaces joined in a full mesh; see the module's docstring."""

    def __init__(self, count: int) -> None:
        if not 2 <= count <= 60:
            raise ValueError("between 2 and 60 namespaces")
        self.count = count
        self.tag = f"ml{secrets.token_hex(2)}"  # 6 characters: every name stays <= 15
        self.octet = _free_octet()
        self.namespaces = [f"{self.tag}n{i}" for i in range(count)]
        self.hosts = [f"{IDENTITY}.{self.octet}.{i + 1}" for i in range(count)]
        self._made: list[str] = []  # namespaces to delete
        self._uplinks: list[str] = []  # root-side links to delete
        try:
            self._make()
        except BaseException:
            self.close()
            raise

    def _uplink(self, i: int) -> tuple[str, str]:
        """(root side, namespace side) addresses of node i's link to the root."""
        return f"{UPLINK}.{self.octet}.{4 * i + 1}", f"{UPLINK}.{self.octet}.{4 * i + 2}"

    def link(self, i: int, j: int) -> str:
        """The name, in namespace i, of its end of the link to node j."""
        return f"{self.tag}m{i}x{j}"

    def _make(self) -> None:
        for i, (namespace, host) in enumerate(zip(self.namespaces, self.hosts, strict=True)):
            _run("ip", "netns", "add", namespace)
            self._made.append(namespace)
            _run("ip", "-n", namespace, "link", "set", "lo", "up")
            _run("ip", "-n", namespace, "addr", "add", f"{host}/32", "dev", "lo")
            root_end, inner_end = f"{self.tag}r{i}", f"{self.tag}h{i}"
            _run("ip", "link", "add", root_end, "type", "veth", "peer", "name", inner_end,
                 "netns", namespace)  # fmt: skip
            self._uplinks.append(root_end)
            outer, inner = self._uplink(i)
            _run("ip", "addr", "add", f"{outer}/30", "dev", root_end)
            _run("ip", "link", "set", root_end, "up")
            _run("ip", "-n", namespace, "addr", "add", f"{inner}/30", "dev", inner_end)
            _run("ip", "-n", namespace, "link", "set", inner_end, "up")
            _run("ip", "route", "add", f"{host}/32", "via", inner, "dev", root_end)
        for i, j in self.pairs():
            _run("ip", "link", "add", self.link(i, j), "netns", self.namespaces[i], "type",
                 "veth", "peer", "name", self.link(j, i), "netns", self.namespaces[j])  # fmt: skip
            self.heal(i, j)

    def pairs(self) -> list[tuple[int, int]]:
        return list(itertools.combinations(range(self.count), 2))

    def exec_prefix(self, i: int) -> list[str]:
        """The command prefix that runs a program in node i's namespace."""
        return _in(self.namespaces[i])

    def _set(self, i: int, j: int, state: str) -> None:
        _run("ip", "-n", self.namespaces[i], "link", "set", self.link(i, j), state)

    def cut(self, i: int, j: int) -> None:
        """Link i-j down at both ends."""
        self._set(i, j, "down")
        self._set(j, i, "down")

    def heal(self, i: int, j: int) -> None:
        """Link i-j up at both ends, with its routes (a link set down loses them)."""
        for a, b in ((i, j), (j, i)):
            self._set(a, b, "up")
            _run("ip", "-n", self.namespaces[a], "route", "replace", f"{self.hosts[b]}/32",
                 "dev", self.link(a, b), "src", self.hosts[a])  # fmt: skip

    def split(self, *groups: Sequence[int]) -> list[tuple[int, int]]:
        """Cuts every link between two of the groups; returns the links cut."""
        cut = [
            (i, j)
            for a, b in itertools.combinations(groups, 2)
            for i in a
            for j in b
        ]  # fmt: skip
        for i, j in cut:
            self.cut(i, j)
        return cut

    def heal_all(self) -> None:
        for i, j in self.pairs():
            self.heal(i, j)

    def degrade(self, i: int, percent: int) -> None:
        """Drops `percent` % of the packets node i sends on its links to the other
        nodes, at random (nftables in its namespace; never its link to the root)."""
        namespace = self.namespaces[i]
        links = ", ".join(f'"{self.link(i, j)}"' for j in range(self.count) if j != i)
        script = (
            f"table inet {LOSS_TABLE} {{\n"
            "  chain out {\n"
            "    type filter hook output priority 0; policy accept;\n"
            f"    oifname {{ {links} }} numgen random mod 100 < {percent} counter drop\n"
            "  }\n"
            "}\n"
        )
        result = subprocess.run(
            [*_in(namespace), "nft", "-f", "-"],
            input=script,
            capture_output=True,
            text=True,
            timeout=IP_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"nft in {namespace} failed: {result.stderr.strip()}")

    def dropped(self, i: int) -> int:
        """How many packets `degrade` has dropped so far on node i's links."""
        listed = _run(*_in(self.namespaces[i]), "nft", "list", "table", "inet", LOSS_TABLE)
        words = listed.stdout.split()
        return sum(int(words[k + 1]) for k, word in enumerate(words[:-1]) if word == "packets")

    def restore(self, i: int) -> None:
        """Removes node i's packet loss, if any."""
        _run(*_in(self.namespaces[i]), "nft", "delete", "table", "inet", LOSS_TABLE,
             check=False)  # fmt: skip

    def delay(self, i: int, j: int, ms: int) -> None:
        """`ms` of delay each way on link i-j (tc netem; see `netem_unavailable`)."""
        for a, b in ((i, j), (j, i)):
            _run(*_in(self.namespaces[a]), "tc", "qdisc", "replace", "dev", self.link(a, b),
                 "root", "netem", "delay", f"{ms}ms")  # fmt: skip

    def close(self) -> None:
        """Removes the root-side links and the namespaces (with the links in them).
        Idempotent; errors are ignored, so that all of it is tried."""
        for name in self._uplinks:
            _run("ip", "link", "del", name, check=False)
        for namespace in self._made:
            _run("ip", "netns", "del", namespace, check=False)
        self._uplinks, self._made = [], []

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def wait_for(what: str, condition: Callable[[], bool], timeout_s: float) -> None:
    """Polls `condition` until it holds; fails naming `what` past the deadline."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s waiting for {what}"
        time.sleep(0.2)


class Cluster:
    """A network of `sandbox.count` validators, node i in namespace i on its own host."""

    def __init__(self, sandbox: Sandbox, root: Path, chain_id: str) -> None:
        self.sandbox = sandbox
        self.chain_id = chain_id
        init_network(root, chain_id, sandbox.count, BASE_PORT, FUND_MICROS, hosts=sandbox.hosts)
        self.homes = network_homes(root, sandbox.count)
        self.addresses = [home.load_config().listen for home in self.homes]
        self.nodes: list[NodeProcess] = []

    def start(self) -> None:
        """Starts every node in its namespace, then waits until each serves."""
        for i, home in enumerate(self.homes):
            log_path = home.root / "node.log"
            command = [
                *self.sandbox.exec_prefix(i), sys.executable, "-m", "medledger", "node",
                "start", "--home", str(home.root), "--listen", self.addresses[i],
            ]  # fmt: skip
            with log_path.open("a") as log:
                process = subprocess.Popen(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    text=True,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            # `ip netns exec` execs the command: this is the node's own process.
            self.nodes.append(NodeProcess(home.root, process, self.addresses[i]))
        deadline = time.monotonic() + READY_TIMEOUT_S
        for node in self.nodes:
            log_path = node.home / "node.log"
            while not READY_LINE.search(log_path.read_text()):
                if node.process.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text()[-2000:]
                    raise RuntimeError(f"node at {node.home} did not start:\n{tail}")
                time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM to every node, SIGKILL past the deadline (`NodeProcess.stop`)."""
        stop_all(*self.nodes)

    def client(self, i: int, timeout_s: float = 10) -> LedgerClient:
        return LedgerClient(self.addresses[i], timeout_s=timeout_s, tls=tls_of(self.homes[i]))

    def check_running(self, i: int) -> None:
        """Fails, with the end of its log, if node i has exited (it should not)."""
        node = self.nodes[i]
        if node.process.poll() is not None:
            tail = (node.home / "node.log").read_text()[-1500:]
            raise AssertionError(f"node {i} exited ({node.process.returncode}):\n{tail}")

    def height(self, i: int) -> int:
        self.check_running(i)
        with self.client(i) as client:
            return client.status().height

    def heights(self) -> list[int]:
        return [self.height(i) for i in range(len(self.homes))]

    def hashes(self, i: int, up_to: int | None = None) -> list[bytes]:
        """Node i's block hashes from height 1, through its API."""
        with self.client(i, timeout_s=30) as client:
            top = client.status().height if up_to is None else up_to
            return [client.get_block(h).block_hash for h in range(1, top + 1)]

    def assert_no_fork(self) -> None:
        """No two nodes hold different blocks at any height (read from the running
        nodes; each up to its own height)."""
        chains = [self.hashes(i) for i in range(len(self.homes))]
        _assert_one_chain(chains)

    def assert_same_blocks_on_disk(self) -> None:
        """The same, from the stopped nodes' files: every height that two homes hold
        is the same block."""
        chains = []
        for home in self.homes:
            store = ChainStore(home.data, 1 << 30, 1 << 30)
            try:
                chain = []
                for height in range(1, store.head.height + 1):
                    raw = store.block(height)
                    assert raw is not None, f"{home.root}: block {height} missing"
                    header = envelope_pb2.Block.FromString(raw).header
                    chain.append(block_hash(header.SerializeToString(deterministic=True)))
                chains.append(chain)
            finally:
                store.close()
        _assert_one_chain(chains)

    def verify_chains(self) -> None:
        """`medledger verify-chain` on every (stopped) node's home."""
        for home in self.homes:
            verified = medledger("verify-chain", "--home", str(home.root))
            assert "chain OK" in verified.stdout, verified.stdout


def _assert_one_chain(chains: Sequence[Sequence[bytes]]) -> None:
    longest = max(chains, key=len)
    for i, chain in enumerate(chains):
        for height, (mine, theirs) in enumerate(zip(chain, longest, strict=False), start=1):
            assert mine == theirs, f"fork at height {height}: node {i} holds another block"
