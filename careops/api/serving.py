"""The HTTP workers' event loop: uvloop's (asyncio's without it), taking the listening socket the
workers of ``careops serve --workers N`` share by load (``careops.accepting``).

uvicorn hands each worker the shared socket through ``loop.create_server(sock=...)``, whose
accept loop takes every waiting connection at once: a client opening four keep-alive
connections together had them all, or three, on one worker (one core) most of the time, while
the other idled; throughput then depended on that draw (bench/RESULTS.md). ``ServingLoop``
serves such a socket with ``SharedSocketServer`` instead; a server on a host and port of its own
(one worker) is asyncio's as before.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from careops.accepting import accept_by_load

try:
    from uvloop import Loop as _EventLoop
except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
    _EventLoop = asyncio.SelectorEventLoop  # type: ignore[assignment,misc]


class ServingLoop(_EventLoop):
    """The loop uvicorn runs each HTTP worker on (``loop="careops.api.serving:ServingLoop"``)."""

    async def create_server(  # type: ignore[override]
        self,
        protocol_factory: Callable[[], asyncio.Protocol],
        host: Any = None,
        port: Any = None,
        *,
        sock: socket.socket | None = None,
        ssl: ssl.SSLContext | None = None,
        **kwargs: Any,
    ) -> Any:
        if sock is None:
            return await super().create_server(protocol_factory, host, port, ssl=ssl, **kwargs)
        return SharedSocketServer(self, sock, protocol_factory, ssl, kwargs.get("backlog", 100))


class SharedSocketServer:
    """What uvicorn needs of an ``asyncio.Server`` (``sockets``, ``close``, ``wait_closed``), over
    a listening socket shared with other processes and accepted on by load."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        listener: socket.socket,
        protocol_factory: Callable[[], asyncio.Protocol],
        tls: ssl.SSLContext | None,
        backlog: int,
    ) -> None:
        self.sockets = (listener,)
        self._loop, self._factory, self._tls = loop, protocol_factory, tls
        self._open: set[asyncio.BaseTransport] = set()
        self._starting: set[asyncio.Task[None]] = set()  # connections being set up (a TLS handshake)
        listener.listen(backlog)  # uvicorn's supervisor binds it; each worker listens, as asyncio does
        self._accepting = loop.create_task(accept_by_load(listener, self._serving, self._take))

    def _serving(self) -> int:
        self._open = {transport for transport in self._open if not transport.is_closing()}
        return len(self._open) + len(self._starting)

    def _take(self, connection: socket.socket) -> None:
        task = self._loop.create_task(self._start(connection))
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def _start(self, connection: socket.socket) -> None:
        try:
            transport, _ = await self._loop.connect_accepted_socket(self._factory, connection, ssl=self._tls)
        except (OSError, ssl.SSLError):  # a failed TLS handshake, a peer gone already
            connection.close()
            return
        self._open.add(transport)

    def close(self) -> None:
        """Stop accepting (uvicorn closes the open connections itself, as they finish)."""
        self._accepting.cancel()

    async def wait_closed(self) -> None:
        with suppress(asyncio.CancelledError):
            await self._accepting
