"""No single client address may hold more than its share of a listener's calls.

The listener's call limit (`maximum_concurrent_rpcs`) is one pool: without a share, one
client that opens long-lived calls (health watches, block streams, slow uploads) takes
them all, and every other client is refused. The share is counted per address (the
host of `context.peer()`, port left out, so new connections from one host share it).
A stranger with many addresses can still fill the pool; one with one address cannot."""

from __future__ import annotations

import contextlib

from medledger.transport.call_guard import Context, GuardInterceptor, Shares

__all__ = ["AddressShare", "client_host"]


def client_host(peer: str) -> str:
    """`ipv4:10.0.0.7:51234` → `ipv4:10.0.0.7`, `ipv6:[::1]:51234` → `ipv6:[::1]`;
    anything else (a Unix socket) as it is."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6") and ":" in rest:
        return f"{kind}:{rest.rsplit(':', 1)[0]}"
    return peer


class AddressShare(GuardInterceptor):
    """Refuses a call (RESOURCE_EXHAUSTED) from an address that holds `calls_max` open."""

    def __init__(self, calls_max: int, setting: str) -> None:
        self.calls_max = calls_max
        self.setting = setting
        self.calls = Shares()
        super().__init__(self._counted)

    def _counted(self, context: Context) -> contextlib.AbstractAsyncContextManager[None]:
        host = client_host(context.peer())
        refusal = (
            f"client address {host}: already holds {self.calls_max} calls on this listener "
            f"({self.setting}); retry when one ends"
        )
        return self.calls.holding(context, host, self.calls_max, refusal)
