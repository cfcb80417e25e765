"""The asyncio client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from types import TracebackType

from medledger.client.errors import translated_errors
from medledger.client.sync import DEFAULT_TIMEOUT_S
from medledger.transport.credentials import FROM_ENVIRONMENT, Transport, aio_channel
from medledger.transport.grpc_common import channel_options
from medledger.wire.v1 import envelope_pb2, ledger_pb2, ledger_pb2_grpc, tx_pb2

__all__ = ["AsyncLedgerClient"]


class AsyncLedgerClient:
    """An asyncio connection to one node; every call has a deadline."""

    def __init__(
        self,
        target: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        tls: Transport = FROM_ENVIRONMENT,
    ) -> None:
        self.timeout_s = timeout_s
        self._channel = aio_channel(target, tls, channel_options())
        self._stub = ledger_pb2_grpc.LedgerServiceStub(self._channel)

    async def __aenter__(self) -> AsyncLedgerClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def status(self) -> ledger_pb2.GetStatusResponse:
        with translated_errors():
            response: ledger_pb2.GetStatusResponse = await self._stub.GetStatus(
                ledger_pb2.GetStatusRequest(), timeout=self.timeout_s
            )
        return response

    async def submit(
        self,
        tx: envelope_pb2.SignedTransaction,
        *,
        wait: bool = True,
        timeout_s: float | None = None,
    ) -> tx_pb2.Receipt:
        request = ledger_pb2.SubmitRequest(tx=tx, wait_for_commit=wait)
        with translated_errors():
            response: ledger_pb2.SubmitResponse = await self._stub.Submit(
                request, timeout=timeout_s or self.timeout_s
            )
        return response.receipt

    async def submit_batches(
        self,
        batches: Iterable[Sequence[envelope_pb2.SignedTransaction]],
        *,
        timeout_s: float | None = None,
    ) -> AsyncIterator[tuple[int, list[tx_pb2.Receipt]]]:
        """Streams batches; yields (batch index, receipts) as each batch commits."""
        requests = [
            ledger_pb2.SubmitBatch(batch_id=i, txs=list(batch)) for i, batch in enumerate(batches)
        ]
        call = self._stub.SubmitStream(iter(requests), timeout=timeout_s or self.timeout_s)
        with translated_errors():
            async for result in call:
                yield result.batch_id, list(result.receipts)

    async def get_transaction(
        self, *, tx_id: bytes = b"", tx_hash: bytes = b""
    ) -> ledger_pb2.GetTransactionResponse:
        with translated_errors():
            response: ledger_pb2.GetTransactionResponse = await self._stub.GetTransaction(
                ledger_pb2.GetTransactionRequest(tx_id=tx_id, tx_hash=tx_hash),
                timeout=self.timeout_s,
            )
        return response

    async def get_account(self, owner: bytes) -> ledger_pb2.Account:
        with translated_errors():
            response: ledger_pb2.GetAccountResponse = await self._stub.GetAccount(
                ledger_pb2.GetAccountRequest(owner=owner), timeout=self.timeout_s
            )
        return response.account
