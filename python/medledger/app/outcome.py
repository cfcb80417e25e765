"""The result of applying one transaction."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["TxOutcome"]


class TxOutcome(NamedTuple):
    code: int  # tx_pb2.ResultCode
    message: str
