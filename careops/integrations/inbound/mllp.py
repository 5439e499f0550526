"""The MLLP listener (HL7 v2 over TCP): ``<VT> message <FS><CR>`` in, the ACK framed the same way out.

Each connection is read frame by frame; a frame's ACK is written only after the message (or its
quarantine record) is committed, so a sender that gets no ACK sends again and MSH-10 makes that
harmless. Bytes before a start block, a frame without one, an oversized frame and a frame cut off
by the peer are all kept in quarantine (the last one cannot be answered). Many connections are
served at once; a broken connection never stops the listener.

Connections are accepted on the event loop and each is served by a thread of its own with a
blocking socket: an interface engine keeps a few connections open for hours and sends one message
at a time on each, so a thread per connection costs little, and a message then needs no hand-off
between the loop and a database thread (a fifth of the listener's CPU a message when it did).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address
from pathlib import Path
from typing import Any

from opentelemetry.trace import SpanKind

from careops.accepting import accept_by_load
from careops.errors import ConfigurationError
from careops.integrations.inbound.hl7_channel import Hl7Channel, Hl7Result
from careops.observability import tracing
from careops.observability.logs import get_logger

# Set by ``shared_listener`` in ``careops serve`` for its HTTP workers: where each gets the
# listening socket they share.
SHARED_LISTENER = "CAREOPS_MLLP_SHARED_LISTENER"
# A TLS client has this long to finish its handshake.
_HANDSHAKE_SECONDS = 10.0
# A frame once begun must end within this long: a peer that stalls inside one is cut off (what it
# sent is kept in quarantine), so that it cannot hold its connection's thread for ever. Between
# frames a connection may stay idle as long as the peer likes.
FRAME_SECONDS = 30.0
START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
_READ_SIZE = 64 * 1024
# What may stand between frames (not bytes.strip()'s default: that takes the start block, VT, too).
_BETWEEN_FRAMES = b"\r\n\t "
log = get_logger("careops.mllp")


@dataclass
class Frame:
    data: bytes  # the bytes up to the end block (a well-formed frame starts with the start block)
    oversized: bool = False
    complete: bool = True


def frame(message: bytes) -> bytes:
    return START_BLOCK + message + END_BLOCK


def read_frames(recv: Callable[[int, bool], bytes], max_bytes: int) -> Iterator[Frame]:
    """Frames as ``recv(size, inside_a_frame)`` delivers them; an oversized one keeps its first
    ``max_bytes`` and is read to its end. ``recv`` raising TimeoutError ends the connection as
    the peer closing it would."""
    buffer = bytearray()
    head: bytes | None = None  # the first bytes of a frame that outgrew max_bytes, kept for quarantine
    while True:
        end = buffer.find(END_BLOCK)
        if end >= 0:
            if head is None and end > max_bytes:
                head = bytes(buffer[:max_bytes])
            yield Frame(head if head is not None else bytes(buffer[:end]), oversized=head is not None)
            del buffer[: end + len(END_BLOCK)]
            head = None
            continue
        if head is None and len(buffer) > max_bytes:
            head = bytes(buffer[:max_bytes])
        if head is not None:
            del buffer[:-1]  # the last byte may be the first half of the end block
        try:
            chunk = recv(_READ_SIZE, head is not None or bool(buffer.strip(_BETWEEN_FRAMES)))
        except TimeoutError:
            chunk = b""
        if not chunk:
            rest = head if head is not None else bytes(buffer)
            if rest.strip(_BETWEEN_FRAMES):
                yield Frame(rest, oversized=head is not None, complete=False)
            return
        buffer += chunk


def answer(channel: Hl7Channel, received: Frame, max_bytes: int) -> Hl7Result | None:
    """The ACK for one frame (None for a frame cut off by the peer: kept, but nobody to answer)."""
    data = received.data.lstrip(_BETWEEN_FRAMES)
    if not received.complete:
        detail = "the connection closed or stalled inside a frame"
        channel.refuse(data, "mllp", "mllp:incomplete_frame", detail)
        return None
    if received.oversized:
        detail = f"the frame is larger than {max_bytes} bytes"
        return channel.refuse(data.removeprefix(START_BLOCK), "mllp", "mllp:frame_too_large", detail)
    if not data.startswith(START_BLOCK):
        return channel.refuse(
            data, "mllp", "mllp:missing_start_block", "the frame does not start with <VT> (0x0B)"
        )
    payload = data[1:]
    try:
        return channel.handle(payload, "mllp")
    except Exception as exc:  # the database is unreachable, ...: nothing committed, say so
        log.error("mllp.message_failed", error=type(exc).__name__)
        return channel.failure(payload, exc)


@dataclass(frozen=True)
class _Service:
    """What every connection of one listener is served with."""

    channel: Hl7Channel
    max_bytes: int
    allowed_peers: Sequence[IPv4Network | IPv6Network]
    tls: ssl.SSLContext | None
    frame_seconds: float

    def wrap(self, connection: socket.socket) -> socket.socket:
        """The socket a connection is served on: inside TLS when the listener has it (the
        handshake waits for ``serve``)."""
        if self.tls is None:
            return connection
        return self.tls.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)

    def serve(self, connection: socket.socket) -> None:
        """One connection (as ``wrap`` gave it), to its end, in the calling thread."""
        try:
            peer = connection.getpeername()
            if self.allowed_peers and not _allowed(peer, self.allowed_peers):
                log.warning("mllp.peer_refused", peer=str(peer[0]))
                return
            connection.setblocking(True)
            if isinstance(connection, ssl.SSLSocket):
                connection.settimeout(_HANDSHAKE_SECONDS)
                connection.do_handshake()
                connection.settimeout(None)
            with self.channel.db.pinned():

                def receive(size: int, inside_a_frame: bool) -> bytes:
                    connection.settimeout(self.frame_seconds if inside_a_frame else None)
                    return connection.recv(size)

                for received in read_frames(receive, self.max_bytes):
                    with tracing.span("MLLP message", kind=SpanKind.SERVER):
                        tracing.bind_correlation(None)  # until the message's MSH-10 is read
                        result = answer(self.channel, received, self.max_bytes)
                    if result is None:
                        break
                    connection.sendall(frame(result.ack.encode()))
        except OSError:  # the peer left, a failed TLS handshake, or the listener is closing
            pass
        except Exception:
            log.exception("mllp.connection_failed")
        finally:
            connection.close()


async def start_mllp(
    channel: Hl7Channel,
    host: str,
    port: int,
    max_bytes: int,
    allowed_peers: Sequence[IPv4Network | IPv6Network] = (),
    tls: ssl.SSLContext | None = None,
    frame_seconds: float = FRAME_SECONDS,
) -> MllpListener:
    """Listen on ``host:port``; the caller closes the returned listener. With ``allowed_peers``, a
    connection from any other address is closed before a byte is read (and logged); with ``tls``
    (``tls_context``), MLLP runs inside TLS. A peer that stalls inside a frame for
    ``frame_seconds`` is cut off, its partial frame kept in quarantine.

    The port is shared (``SO_REUSEPORT``) by every process that listens on it: any ``careops
    worker --mllp-port`` and ``careops serve``. The HTTP workers of one ``careops serve`` share
    one listening socket (``shared_listener``) and take turns by load: the kernel spreads
    ``SO_REUSEPORT`` connections by a hash of their addresses, which put three or all four of an
    interface engine's connections on one of two workers about two times in three.
    """
    service = _Service(channel, max_bytes, allowed_peers, tls, frame_seconds)
    shared = os.environ.get(SHARED_LISTENER)
    if shared:
        return MllpListener(_borrow_listener(shared), service, shared=True)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host, port), family=family, backlog=128, reuse_port=True)
    return MllpListener(listener, service, shared=False)


class MllpListener:
    """Accepts on the event loop, one connection at a time, and serves each in a thread of its own.

    On a listening socket other processes accept on too (``shared``), it takes turns with them by
    load (``accept_by_load``).
    """

    def __init__(self, listener: socket.socket, service: _Service, shared: bool) -> None:
        self.sockets = (listener,)
        self._service, self._shared = service, shared
        self._lock = threading.Lock()
        self._connections: dict[threading.Thread, socket.socket] = {}  # while each is open
        self._accepting = asyncio.get_running_loop().create_task(
            accept_by_load(listener, self._serving, self._take)
        )

    def _serving(self) -> int:
        return len(self._connections) if self._shared else 0

    def _take(self, connection: socket.socket) -> None:
        try:
            connection = self._service.wrap(connection)
        except OSError:  # the peer is gone already
            connection.close()
            return
        thread = threading.Thread(
            target=self._connection, args=(connection,), name="careops-mllp", daemon=True
        )
        with self._lock:
            self._connections[thread] = connection
        thread.start()

    def _connection(self, connection: socket.socket) -> None:
        try:
            self._service.serve(connection)
        finally:
            with self._lock:
                self._connections.pop(threading.current_thread(), None)

    def close(self) -> None:
        """Stop accepting and end every connection (a message being stored is committed first)."""
        self._accepting.cancel()
        self.sockets[0].close()
        with self._lock:
            open_now = list(self._connections.values())
        for connection in open_now:
            with suppress(OSError):  # closed already
                connection.shutdown(socket.SHUT_RDWR)

    async def wait_closed(self) -> None:
        """Until every connection's thread has ended (after ``close``)."""
        with self._lock:
            threads = list(self._connections)
        for thread in threads:
            await asyncio.to_thread(thread.join, 5.0)


@contextmanager
def shared_listener(host: str, port: int) -> Iterator[None]:
    """For ``careops serve``: listen on ``host:port`` here, and lend the socket to each process
    that asks at a Unix socket (in a directory only this user can enter) named to the HTTP
    workers by ``CAREOPS_MLLP_SHARED_LISTENER``; closed and removed on the way out."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        listener = socket.create_server((host, port), family=family, backlog=128, reuse_port=True)
    except OSError as exc:
        raise ConfigurationError(f"cannot listen for MLLP on {host}:{port}: {exc}") from exc
    directory = tempfile.mkdtemp(prefix="careops-mllp-")
    path = os.path.join(directory, "listener")
    lender = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lender.bind(path)
    lender.listen()

    def lend() -> None:
        while True:
            borrower, _ = lender.accept()
            with borrower:
                socket.send_fds(borrower, [b"mllp"], [listener.fileno()])

    threading.Thread(target=lend, name="mllp-listener-lender", daemon=True).start()
    os.environ[SHARED_LISTENER] = path
    try:
        yield
    finally:
        os.environ.pop(SHARED_LISTENER, None)
        listener.close()
        shutil.rmtree(directory, ignore_errors=True)


def _borrow_listener(path: str) -> socket.socket:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as lender:
        lender.connect(path)
        _, fds, _, _ = socket.recv_fds(lender, 16, 1)
    if not fds:
        raise ConfigurationError(f"no MLLP listening socket came from {path}")
    return socket.socket(fileno=fds[0])


def tls_context(cert: Path | None, key: Path | None, client_ca: Path | None) -> ssl.SSLContext | None:
    """The listener's TLS: its certificate and key; with ``client_ca``, a client certificate
    signed by it is required (mutual TLS, as IHE ATNA asks of HL7 v2 nodes). None without a cert."""
    if cert is None:
        if key is not None or client_ca is not None:
            raise ConfigurationError("MLLP over TLS needs its certificate: set CAREOPS_MLLP_TLS_CERT")
        return None
    if key is None:
        raise ConfigurationError("set CAREOPS_MLLP_TLS_KEY to the private key of CAREOPS_MLLP_TLS_CERT")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
        if client_ca is not None:
            context.load_verify_locations(client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"MLLP TLS: cannot load {cert}, {key} or {client_ca}: {exc}") from exc
    return context


def _allowed(peer: tuple[Any, ...], networks: Sequence[IPv4Network | IPv6Network]) -> bool:
    address = ip_address(peer[0])
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # an IPv4 peer of a dual-stack listener
    return any(address in network for network in networks)
