"""A node's long-lived tasks under watch. A task that ends while the node is not stopping
(block production, consensus, a peer link, the channel watcher, a group commit) leaves a
node that answers health checks but makes no progress. So the first such end turns
health NOT_SERVING, is logged once with its cause, and stops the process with a non-zero
exit status, for its own supervisor (systemd's Restart=on-failure) to restart it: a
restart resumes from the durable state."""

from __future__ import annotations

import asyncio
import logging

__all__ = ["Supervisor"]

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop
        self.failure: str | None = None  # the first task that ended, and why
        self.stopping = False

    def watch(self, tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self.stopping or self.failure is not None:
            return
        error = None if task.cancelled() else task.exception()
        cause = "cancelled" if task.cancelled() else repr(error) if error else "returned"
        self.failure = f"task {task.get_name()} ended: {cause}"
        log.critical(
            "%s; the node stops with exit status 1",
            self.failure,
            exc_info=(type(error), error, error.__traceback__) if error else None,
        )
        self._stop.set()
