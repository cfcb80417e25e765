"""Log output: plain text for people, or one JSON object per line for a log shipper
(`--log-format json`): time (UTC, ISO 8601 with milliseconds), level, logger, message,
and the context fields a log call passes in `extra` (height, peer, trace), nothing else.
Log calls never carry record contents, key material or whole blocks; a test plants
canaries to keep it so."""

from __future__ import annotations

import datetime
import json
import logging

__all__ = ["CONTEXT_FIELDS", "JsonFormatter", "configure_logging"]

CONTEXT_FIELDS = ("height", "peer", "trace")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(log_format: str) -> None:
    """The root logger at INFO, as text or JSON (`log_format`: "text" or "json")."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
