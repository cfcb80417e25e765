"""Operating a node: Prometheus metrics scraped from a real node process (names and types
checked with prometheus_client's parser, every series there from the start), the probes,
the gRPC health service following readiness on four validators, and JSON logs."""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from medledger.client import LedgerClient, enrol
from medledger.client.records import RecordsClient
from medledger.config import Home
from medledger.crypto import SigningKey
from medledger.errors import Rejected
from medledger.genesis import Genesis
from medledger.keys import load_key
from medledger.ops.server import HEADER_TIMEOUT_S, OPS_CONNECTIONS_PER_ADDRESS_MAX
from medledger.run.homes import free_base_port, init_home, init_network, network_homes
from medledger.run.launcher import NodeProcess, start_node
from medledger.transport.credentials import ClientTls, sync_channel
from medledger.tx import TxBuilder
from medledger.wire.v1 import records_pb2, tx_pb2
from tests.integration.conftest import stop_all

# Every metric a fresh node exposes, with its Prometheus type.
EXPECTED = {
    "medledger_build_info": "gauge",
    "medledger_height": "gauge",
    "medledger_consensus_round": "gauge",
    "medledger_consensus_step": "gauge",
    "medledger_blocks_committed": "counter",
    "medledger_transactions_committed": "counter",
    "medledger_block_transactions": "histogram",
    "medledger_block_interval_seconds": "histogram",
    "medledger_block_commit_duration_seconds": "histogram",
    "medledger_block_fsync_duration_seconds": "histogram",
    "medledger_mempool_transactions": "gauge",
    "medledger_mempool_bytes": "gauge",
    "medledger_admission_refusals": "counter",
    "medledger_peers_connected": "gauge",
    "medledger_validator_power_reachable": "gauge",
    "medledger_validator_power_total": "gauge",
    "medledger_validator_missed_blocks": "counter",
    "medledger_equivocations": "counter",
    "medledger_catch_up_runs": "counter",
    "medledger_lmdb_map_used_bytes": "gauge",
    "medledger_lmdb_map_size_bytes": "gauge",
    "medledger_grpc_requests": "counter",
    "medledger_grpc_request_duration_seconds": "histogram",
    "medledger_vault_fetches": "counter",
    "medledger_vault_break_glass_releases": "counter",
    "medledger_channel_updates": "counter",
    "medledger_channel_payments": "counter",
    "medledger_channel_locks": "counter",
    "medledger_hub_routes": "counter",
    "medledger_tls_certificate_expiry_timestamp_seconds": "gauge",
    "medledger_ready": "gauge",
}


def get(ops: str, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{ops}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def get_from(source: str, ops: str, path: str) -> tuple[int, str]:
    """GET from another loopback address (another client, as far as the node can tell)."""
    host, port = ops.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10, source_address=(source, 0))
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def scrape(ops: str) -> dict[str, tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]]:
    """{family: (type, {(sample name, labels): value})}."""
    status, text = get(ops, "/metrics")
    assert status == 200
    return {
        family.name: (
            family.type,
            {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples},
        )
        for family in text_string_to_metric_families(text)
    }


def value(metrics: dict, family: str, sample: str, **labels: str) -> float:  # type: ignore[type-arg]
    return float(metrics[family][1][(sample, tuple(sorted(labels.items())))])


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def lone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Home, NodeProcess]]:
    home = Home(tmp_path_factory.mktemp("ops") / "node")
    init_home(home, "ops-1", listen="127.0.0.1:0")
    process = start_node(home.root, options=["--log-format", "json"])
    try:
        yield home, process
    finally:
        process.stop()


def test_every_series_is_there_from_the_start_with_its_type(
    lone: tuple[Home, NodeProcess],
) -> None:
    home, process = lone
    assert process.ops_address.startswith("127.0.0.1:")
    metrics = scrape(process.ops_address)
    missing = {name for name in EXPECTED if name not in metrics}
    assert not missing
    wrong = {name: metrics[name][0] for name, kind in EXPECTED.items() if metrics[name][0] != kind}
    assert not wrong
    assert value(metrics, "medledger_build_info", "medledger_build_info", version="0.1.0") == 1
    # Labelled series exist before their first event: refusals by code, the lone
    # validator's missed blocks, each gRPC method's OK count.
    assert (
        value(
            metrics,
            "medledger_admission_refusals",
            "medledger_admission_refusals_total",
            code="INVALID_ARGUMENT",
        )
        == 0
    )
    validator = Genesis.load(home.genesis).validators[0].public_key.hex()[:16]
    missed = metrics["medledger_validator_missed_blocks"][1]
    assert missed == {("medledger_validator_missed_blocks_total", (("validator", validator),)): 0}
    assert (
        "medledger_grpc_requests_total",
        (
            ("code", "OK"),
            ("method", "SubmitStream"),
            ("service", "medledger.wire.v1.LedgerService"),
        ),
    ) in metrics["medledger_grpc_requests"][1]
    assert value(metrics, "medledger_ready", "medledger_ready") == 1


def test_a_committed_transaction_and_a_refusal_move_the_counters(
    lone: tuple[Home, NodeProcess],
) -> None:
    home, process = lone
    before = scrape(process.ops_address)
    key = load_key(home.keys_dir / "client.json")
    tls = ClientTls.from_file(home.consortium_ca)
    with LedgerClient(process.address, tls=tls) as client:
        height = client.status().height
        builder = TxBuilder(key, "ops-1")
        client.submit(
            builder.transfer(to=key.public_key, amount_micros=1, expiry_height=height + 50),
            wait=True,
        )
        expired = builder.transfer(to=key.public_key, amount_micros=1, expiry_height=0)
        with pytest.raises(Rejected, match="expired"):
            client.submit(expired)
    after = scrape(process.ops_address)

    def grew(family: str, sample: str, **labels: str) -> float:
        return value(after, family, sample, **labels) - value(before, family, sample, **labels)

    assert grew("medledger_transactions_committed", "medledger_transactions_committed_total") >= 1
    assert grew("medledger_blocks_committed", "medledger_blocks_committed_total") >= 1
    assert value(after, "medledger_height", "medledger_height") >= height + 1
    assert (
        grew(
            "medledger_block_commit_duration_seconds",
            "medledger_block_commit_duration_seconds_count",
        )
        >= 1
    )
    assert (
        grew(
            "medledger_admission_refusals",
            "medledger_admission_refusals_total",
            code="FAILED_PRECONDITION",
        )
        == 1
    )
    assert (
        grew(
            "medledger_grpc_requests",
            "medledger_grpc_requests_total",
            service="medledger.wire.v1.LedgerService",
            method="Submit",
            code="OK",
        )
        >= 1
    )
    assert value(after, "medledger_lmdb_map_used_bytes", "medledger_lmdb_map_used_bytes") > 0


def test_the_probes_answer_and_a_stranger_path_is_not_found(
    lone: tuple[Home, NodeProcess],
) -> None:
    _, process = lone
    assert get(process.ops_address, "/livez") == (200, "live\n")
    assert get(process.ops_address, "/readyz") == (200, "ready\n")
    assert get(process.ops_address, "/blocks/../../etc/passwd")[0] == 404


def test_logs_are_one_json_object_per_line(lone: tuple[Home, NodeProcess]) -> None:
    home, _ = lone
    lines = [line for line in (home.root / "node.log").read_text().splitlines() if line]
    assert lines
    for line in lines:
        entry = json.loads(line)
        assert {"time", "level", "logger", "message"} <= entry.keys()
        assert entry["time"].endswith("+00:00")


def health(process: NodeProcess, home: Home) -> int:
    with sync_channel(process.address, ClientTls.from_file(home.consortium_ca)) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(service=""), timeout=5
            )
        except grpc.RpcError:
            return -1
        return int(response.status)


def test_readiness_follows_the_reachable_voting_power(tmp_path: Path) -> None:
    root = tmp_path / "net"
    init_network(root, "ops-net", 4, free_base_port(8), 10**12)
    homes = network_homes(root, 4)
    processes: list[NodeProcess | None] = [
        start_node(h.root, h.load_config().listen) for h in homes
    ]
    try:
        first = processes[0]
        assert first is not None

        def ready(process: NodeProcess) -> bool:
            return get(process.ops_address, "/readyz")[0] == 200

        wait_until(lambda: all(p is not None and ready(p) for p in processes), 60, "all ready")
        # gRPC health follows readiness within HEALTH_INTERVAL_S (1 s).
        wait_until(
            lambda: health(first, homes[0]) == health_pb2.HealthCheckResponse.SERVING,
            10,
            "gRPC health SERVING",
        )
        # Two of four stopped: the others reach half the power, not more than 2/3.
        for index in (2, 3):
            process = processes[index]
            assert process is not None
            process.stop()
            processes[index] = None
        wait_until(lambda: not ready(first), 30, "not ready with two validators down")
        status, text = get(first.ops_address, "/readyz")
        assert status == 503
        assert "voting power" in text
        wait_until(
            lambda: health(first, homes[0]) == health_pb2.HealthCheckResponse.NOT_SERVING,
            10,
            "gRPC health NOT_SERVING",
        )
        assert get(first.ops_address, "/livez")[0] == 200  # alive all the same
        for index in (2, 3):
            processes[index] = start_node(homes[index].root, homes[index].load_config().listen)
        wait_until(lambda: all(p is not None and ready(p) for p in processes), 60, "ready again")
        wait_until(
            lambda: health(first, homes[0]) == health_pb2.HealthCheckResponse.SERVING,
            10,
            "gRPC health SERVING again",
        )
    finally:
        stop_all(*processes)


def test_a_stranger_cannot_hold_the_operations_port(lone: tuple[Home, NodeProcess]) -> None:
    """Half-sent requests from one address: past its share the connections are closed
    at once, and those held are closed once HEADER_TIMEOUT_S passes without a whole
    request; the probes answer throughout, from another client."""
    _, process = lone
    host, port = process.ops_address.rsplit(":", 1)
    sockets = []
    try:
        for _ in range(OPS_CONNECTIONS_PER_ADDRESS_MAX + 8):
            held = socket.create_connection((host, int(port)), timeout=5)
            held.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
            sockets.append(held)
        time.sleep(0.5)

        def closed(held: socket.socket) -> bool:
            held.settimeout(0.2)
            try:
                return held.recv(1) == b""
            except TimeoutError:
                return False
            except OSError:
                return True

        refused = sum(closed(held) for held in sockets)
        assert refused >= 8
        assert get_from("127.0.0.2", process.ops_address, "/livez") == (200, "live\n")
        time.sleep(HEADER_TIMEOUT_S + 1.5)
        assert all(closed(held) for held in sockets)
        assert get(process.ops_address, "/readyz")[0] == 200
    finally:
        for held in sockets:
            held.close()


def test_no_log_line_carries_phi_key_material_or_a_whole_block(
    lone: tuple[Home, NodeProcess],
) -> None:
    """Canaries planted where a careless log call would pick them up: a record's content
    and an emergency reason, a transfer's reference, a refused transaction, a fetch under
    break-glass; then no line of the node's log holds any of them, a key's secret seed,
    or anything the size of a block."""
    home, process = lone
    tls = ClientTls.from_file(home.consortium_ca)
    custodian = load_key(home.keys_dir / "client.json")
    canaries = ["CANARY-PHI-Jane-Roe-1962-03-04", "CANARY-REF-INV-5531", "CANARY-WHY-chest-pain"]
    clinician, patient = SigningKey.generate(), SigningKey.generate()
    with LedgerClient(process.address, tls=tls) as client:
        enrol(
            client,
            custodian,
            "org-0",
            {
                custodian: [tx_pb2.ROLE_CUSTODIAN],
                clinician: [tx_pb2.ROLE_CLINICIAN],
                patient: [tx_pb2.ROLE_PATIENT],
            },
        )
        height = client.status().height
        builder = TxBuilder(custodian, "ops-1")
        client.submit(
            builder.transfer(
                to=patient.public_key,
                amount_micros=1,
                reference=canaries[1],
                expiry_height=height + 50,
            ),
            wait=True,
        )
        refused = builder.transfer(
            to=patient.public_key, amount_micros=1, reference=canaries[1], expiry_height=0
        )
        with pytest.raises(Rejected):
            client.submit(refused)
    with RecordsClient(process.address, "ops-1", tls=tls) as records:
        record = records.put(
            custodian,
            patient=patient.public_key,
            resource_type="Observation",
            content=json.dumps({"resourceType": "Observation", "note": canaries[0]}).encode(),
        ).record_id
        records.fetch(
            clinician,
            record,
            purpose=records_pb2.PURPOSE_EMERGENCY,
            emergency_reason=canaries[2],
        )
    process.stop()  # flushes the log; the module's other tests have run
    log = (home.root / "node.log").read_text()
    secrets = [
        json.loads(path.read_text())["seed"]
        for path in (home.validator_key, home.keys_dir / "client.json")
    ]
    for needle in [*canaries, *secrets, patient.public_key.hex()]:
        assert needle not in log
    assert max(len(line) for line in log.splitlines()) < 4_096
