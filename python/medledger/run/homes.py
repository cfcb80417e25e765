"""Node homes: one validator's (`init_home`), a network's sharing one genesis
(`init_network`), and a home that follows a running network (`join_network`). Each holds
keys (mode 0600), the organisation's CA and the node's TLS certificate, the genesis and a
config."""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Sequence
from pathlib import Path

from medledger.config import DEFAULT_LISTEN, Home, NodeConfig
from medledger.crypto import SigningKey
from medledger.genesis import (
    DEFAULT_MIN_CHALLENGE_BLOCKS,
    Allocation,
    Genesis,
    GenesisValidator,
    founding_organisation,
)
from medledger.keys import save_key
from medledger.transport.certs import Identity, make_ca
from medledger.transport.files import issue_node_certificate, save_ca, write_bundle

__all__ = [
    "DEFAULT_FUND_MICROS",
    "free_base_port",
    "init_home",
    "init_network",
    "join_network",
    "network_homes",
]

DEFAULT_FUND_MICROS = 10**15
"""What genesis gives each client key unless told otherwise."""
VALIDATOR_POWER = 10


def free_base_port(count: int, start: int = 20_000, stop: int = 60_000) -> int:
    """A port from which `count` consecutive ports on 127.0.0.1 are free right now."""
    rng = random.Random()  # noqa: S311 - spreading port choices, not a secret
    for _ in range(200):
        base = rng.randrange(start, stop - count)
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return base
    raise OSError(f"no {count} consecutive free ports found")


def network_homes(root: Path, validators: int) -> list[Home]:
    return [Home(root / f"node{i}") for i in range(validators)]


def init_network(
    root: Path,
    chain_id: str,
    validators: int,
    base_port: int,
    fund_micros: int,
    *,
    extra_allocations: Sequence[Allocation] = (),
    min_challenge_blocks: int = DEFAULT_MIN_CHALLENGE_BLOCKS,
    insecure: bool = False,
    hosts: Sequence[str] | None = None,
) -> Genesis:
    """Homes for `validators` validators under `root` (node0, node1, …): each with its own
    validator key and funded client key (the admin of its organisation, `org-<i>`, which
    runs that validator), the organisation's CA and the node's TLS certificate, one
    shared genesis (which names each organisation's CA and also funds
    `extra_allocations`), and configs: client API on consecutive ports from `base_port`,
    PeerService on the next `validators` ports (twice `validators` in all). Node i
    listens on `hosts[i]` (an IP address or a DNS name; one per validator, in order; by
    default all on 127.0.0.1): its certificate names that host, and the other nodes
    reach its PeerService there. `insecure` makes configs that serve clear text."""
    if hosts is not None and len(hosts) != validators:
        raise ValueError(f"hosts: one per validator ({validators}), got {len(hosts)}")
    # host:port, an IPv6 address in brackets.
    listen_hosts = [
        f"[{host}]" if ":" in host and not host.startswith("[") else host
        for host in (hosts if hosts is not None else ["127.0.0.1"] * validators)
    ]
    homes = network_homes(root, validators)
    if any(home.config.exists() for home in homes):
        raise FileExistsError(f"{root} already holds a network")
    keys = [SigningKey.generate() for _ in homes]
    clients = [SigningKey.generate() for _ in homes]
    cas = [make_ca(f"org-{i}") for i in range(validators)]
    genesis = Genesis(
        chain_id=chain_id,
        genesis_time_ms=int(time.time() * 1000),
        validators=tuple(
            GenesisValidator(f"validator-{i}", key.public_key, VALIDATOR_POWER)
            for i, key in enumerate(keys)
        ),
        allocations=(
            *(Allocation(client.public_key, fund_micros) for client in clients),
            *extra_allocations,
        ),
        min_challenge_blocks=min_challenge_blocks,
        organisations=tuple(
            founding_organisation(i, client, key, ca.certificate_pem)
            for i, (client, key, ca) in enumerate(zip(clients, keys, cas, strict=True))
        ),
    )
    genesis.validator_set()
    addresses = [f"{listen_hosts[i]}:{base_port + i}" for i in range(validators)]
    peers = [f"{listen_hosts[i]}:{base_port + validators + i}" for i in range(validators)]
    bundle = [ca.certificate_pem for ca in cas]
    write_bundle(root / "consortium-ca.pem", bundle)
    # The nodes share this machine's cores (NodeConfig.rust_threads).
    shared_cores = max(1, (os.cpu_count() or 1) // validators)
    for i, (home, key, client) in enumerate(zip(homes, keys, clients, strict=True)):
        home.root.mkdir(parents=True)
        save_key(key, home.validator_key)
        save_key(client, home.keys_dir / "client.json")
        save_ca(home, cas[i])
        issue_node_certificate(home, cas[i], f"node{i}", [addresses[i], peers[i]])
        write_bundle(home.consortium_ca, bundle)
        home.genesis.write_text(genesis.to_json())
        config = NodeConfig(
            listen=addresses[i],
            peer_listen=peers[i],
            validator_addresses=peers,
            insecure=insecure,
            rust_threads=shared_cores,
        )
        home.config.write_text(config.to_json())
    return genesis


def join_network(
    home: Home,
    genesis: Genesis,
    peers: Sequence[str],
    *,
    listen: str,
    peer_listen: str,
    organisation_ca: Identity | None,
    insecure: bool = False,
) -> SigningKey:
    """A home for a node joining a running network: a new validator key, a TLS
    certificate from its organisation's CA (`organisation_ca`; None: the operator puts
    its own in `tls/`), the network's genesis, and a config naming the genesis
    validators' PeerService addresses (`peers`, in genesis order). Started, the node
    follows the chain (it commits every block, signs nothing) until a governance change
    adds its key to the validator set; it votes from the height the change names.
    Returns the validator key, for that proposal."""
    if home.config.exists():
        raise FileExistsError(f"{home.root} is already initialised")
    if len(peers) != len(genesis.validators):
        raise ValueError(
            f"peers: one address per genesis validator ({len(genesis.validators)}), in "
            "genesis order"
        )
    home.root.mkdir(parents=True, exist_ok=True)
    key = SigningKey.generate()
    save_key(key, home.validator_key)
    if organisation_ca is not None:
        issue_node_certificate(home, organisation_ca, home.root.name, [listen, peer_listen])
    write_bundle(home.consortium_ca, [o.tls_ca for o in genesis.organisations if o.tls_ca])
    home.genesis.write_text(genesis.to_json())
    config = NodeConfig(
        listen=listen, peer_listen=peer_listen, validator_addresses=list(peers), insecure=insecure
    )
    home.config.write_text(config.to_json())
    return key


def init_home(
    home: Home,
    chain_id: str,
    listen: str = DEFAULT_LISTEN,
    fund_micros: int = DEFAULT_FUND_MICROS,
    *,
    extra_allocations: Sequence[Allocation] = (),
    min_challenge_blocks: int = DEFAULT_MIN_CHALLENGE_BLOCKS,
    insecure: bool = False,
) -> Genesis:
    """Creates a one-validator home: keys (mode 0600), genesis with a funded client
    account (and `extra_allocations`), one organisation (`org-0`, whose admin is the
    client key and which runs the validator) with its CA, the node's TLS certificate,
    and config (`insecure`: clear text)."""
    if home.config.exists():
        raise FileExistsError(f"{home.root} is already initialised")
    home.root.mkdir(parents=True, exist_ok=True)
    validator, client = SigningKey.generate(), SigningKey.generate()
    save_key(validator, home.validator_key)
    save_key(client, home.keys_dir / "client.json")
    ca = make_ca("org-0")
    save_ca(home, ca)
    issue_node_certificate(home, ca, "node0", [listen])
    write_bundle(home.consortium_ca, [ca.certificate_pem])
    genesis = Genesis(
        chain_id=chain_id,
        genesis_time_ms=int(time.time() * 1000),
        validators=(GenesisValidator("validator-0", validator.public_key, 10),),
        allocations=(Allocation(client.public_key, fund_micros), *extra_allocations),
        min_challenge_blocks=min_challenge_blocks,
        organisations=(founding_organisation(0, client, validator, ca.certificate_pem),),
    )
    genesis.validator_set()
    home.genesis.write_text(genesis.to_json())
    home.config.write_text(NodeConfig(listen=listen, insecure=insecure).to_json())
    return genesis
