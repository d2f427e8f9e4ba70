"""Graceful shutdown: turn unready, stop accepting, let requests finish.

On SIGTERM (or SIGINT) a serving process:

1. marks itself draining: ``/readyz`` answers 503 ``draining`` and the
   ``sluicegate_draining`` gauge is 1, while it still accepts connections for
   ``SLUICEGATE_DRAIN_NOTICE_SECONDS`` so a load balancer can take it out;
2. stops accepting (Hypercorn closes the listening socket and idle keep-alive
   connections) and waits up to ``SLUICEGATE_DRAIN_SECONDS`` for in-flight
   requests and streams to end;
3. cancels what is still running (each request's after-steps still run, so
   reservations are released), then closes the gateway: the audit writer
   flushes its batch or spools it, stages and services close.

:class:`DrainState` is created with the app; :func:`shutdown_trigger` is what
``sluicegate serve`` hands Hypercorn as its shutdown trigger.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

EXTENSION = "sluicegate.drain"
"""``app.extensions`` key of the app's :class:`DrainState`."""
SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass
class DrainState:
    """Whether this process is draining, and when it was told to."""

    notice_seconds: float = 0.0
    draining: bool = False
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def begin(self) -> None:
        if not self.draining:
            log.info(
                "draining: /readyz answers 503 now; new connections are refused "
                "in %.1f s, then in-flight requests may finish",
                self.notice_seconds,
            )
        self.draining = True
        self.stop.set()


async def shutdown_trigger(state: DrainState) -> None:
    """Return when Hypercorn should stop accepting: a signal, then the notice."""
    loop = asyncio.get_running_loop()
    for signum in SIGNALS:
        loop.add_signal_handler(signum, state.begin)
    try:
        await state.stop.wait()
        await asyncio.sleep(state.notice_seconds)
    finally:
        for signum in SIGNALS:
            loop.remove_signal_handler(signum)
