"""Taking turns on a listening socket that several processes accept on: by load, one at a time.

Every process waiting on a shared listening socket hears of each new connection, the first to
call ``accept()`` takes it, and asyncio's own accept loop takes every connection waiting at once:
an interface engine or a load balancer opening four connections together had all four on one
process (one core, one GIL) about two times in three while the other idled. ``accept_by_load``
takes one connection at a time and, in a process already serving connections, first waits
``BUSY_DELAY`` for each of them (at most ``_MOST_DELAYED`` of them), so that an idler process
takes it; a process with none takes it at once.

Used by the MLLP listener of the HTTP workers and by the HTTP workers themselves
(``careops.api.serving``).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from careops.observability.logs import get_logger

BUSY_DELAY = 0.005
# A process with many open connections (idle keep-alive ones) delays a new one by 20 ms at most.
_MOST_DELAYED = 4
log = get_logger("careops.accepting")


async def accept_by_load(
    listener: socket.socket, serving: Callable[[], int], take: Callable[[socket.socket], None]
) -> None:
    """Accept on ``listener`` (made non-blocking) until cancelled, handing each connection
    (non-blocking) to ``take``; ``serving()`` is how many connections this process holds open now."""
    loop = asyncio.get_running_loop()
    listener.setblocking(False)
    while True:
        await _readable(loop, listener)
        held = min(serving(), _MOST_DELAYED)
        if held:  # an idler process takes this one, if there is one
            await asyncio.sleep(BUSY_DELAY * held)
        try:
            connection, _ = listener.accept()
        except BlockingIOError:  # another process took it
            continue
        except OSError as exc:  # e.g. out of file descriptors: keep listening
            log.warning("accept_failed", error=type(exc).__name__)
            await asyncio.sleep(0.1)
            continue
        connection.setblocking(False)
        take(connection)


async def _readable(loop: asyncio.AbstractEventLoop, listener: socket.socket) -> None:
    """Until a connection waits on ``listener`` (every process sharing it hears of it)."""
    ready = loop.create_future()

    def heard() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(listener, heard)
    try:
        await ready
    finally:
        loop.remove_reader(listener)
