"""`careops serve --workers 2 --mllp-port`: the HTTP workers share one MLLP listening socket and
take turns by load, so an interface engine's connections are spread over them (with a socket
each, the kernel's hash put three or four of four connections on one worker two times in three);
they take their HTTP connections by load in the same way (careops.accepting)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.messages import orders
from careops.integrations.inbound.mllp import END_BLOCK, frame
from tests.e2e.test_crash_recovery import CAREOPS, cli, free_port, wait_for_health

_LISTEN, _ESTABLISHED = "0A", "01"


def _sockets(port: int) -> dict[str, str]:
    """Inode → TCP state of every socket whose local port is ``port`` (IPv4 and IPv6)."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                found[fields[9]] = fields[3]
    return found


def _held(pid: int, inodes: dict[str, str], state: str) -> int:
    """How many of the sockets in ``state`` process ``pid`` holds."""
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inode = target[8:-1]
            if inodes.get(inode) == state:
                held.add(inode)
    return len(held)


def _polling(pid: int, port: int) -> bool:
    """Whether process ``pid`` waits for connections on its listening socket on ``port`` (its event
    loop has the socket in its epoll set): a worker holds the socket from birth, but serves it only
    once its application has started."""
    inodes = {inode for inode, state in _sockets(port).items() if state == _LISTEN}
    listening = set()
    polled = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
            info = (Path(f"/proc/{pid}/fdinfo") / fd.name).read_text()
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            listening.add(int(fd.name))
        polled |= {int(line.split()[1]) for line in info.splitlines() if line.startswith("tfd:")}
    return bool(listening & polled)


def _workers(server: int) -> list[int]:
    children = Path(f"/proc/{server}/task/{server}/children").read_text().split()
    return [int(pid) for pid in children]


@contextmanager
def _serving(env: dict[str, str], tmp_path: Path, *options: str) -> Iterator[tuple[int, list[socket.socket]]]:
    """``careops serve --workers 2 --no-embedded-worker`` with ``options``, until the end: its pid,
    and a list for the connections opened to it, which are closed before it is stopped."""
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [CAREOPS, "serve", "--workers", "2", "--no-embedded-worker", *options],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    connections: list[socket.socket] = []
    try:
        yield server.pid, connections
    finally:
        for connection in connections:
            connection.close()
        server.terminate()
        server.wait(30)
        log.close()
    assert server.returncode == 0


def _ack(connection: socket.socket) -> bytes:
    answer = b""
    while not answer.endswith(END_BLOCK):
        chunk = connection.recv(65536)
        assert chunk, "the listener closed the connection"
        answer += chunk
    return answer


def test_mllp_connections_are_spread_over_the_http_workers(database_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "CAREOPS_DATABASE_URL": database_url}
    cli(env, "migrate")
    cli(env, "seed", "--demo")
    port, mllp = free_port(), free_port()
    with _serving(env, tmp_path, "--port", str(port), "--mllp-port", str(mllp)) as (server, connections):
        wait_for_health(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 30  # both HTTP workers hold the shared listening socket
        while len(workers := [p for p in _workers(server) if _held(p, _sockets(mllp), _LISTEN)]) < 2:
            assert time.monotonic() < deadline, "the HTTP workers did not take the MLLP listener"
            time.sleep(0.1)
        environ = Path(f"/proc/{workers[0]}/environ").read_bytes().split(b"\0")
        lender = Path(
            next(v for v in environ if v.startswith(b"CAREOPS_MLLP_SHARED_LISTENER="))
            .decode()
            .split("=", 1)[1]
        )
        assert lender.is_socket() and (lender.parent.stat().st_mode & 0o777) == 0o700
        for message in orders(4, 11):
            connection = socket.create_connection(("127.0.0.1", mllp), timeout=30)
            connections.append(connection)
            connection.sendall(frame(message))
            assert b"MSA|AA|" in _ack(connection)
        held = sorted(_held(pid, _sockets(mllp), _ESTABLISHED) for pid in workers)
        assert held == [2, 2]
        # Each connection goes on working where it is: a second message on each, ACKed after commit.
        for connection, message in zip(connections, orders(4, 12), strict=True):
            connection.sendall(frame(message))
            assert b"MSA|AA|" in _ack(connection)
    assert not lender.parent.exists()  # the lending socket's directory is removed on the way out


def test_http_connections_opened_together_are_spread_over_the_workers(
    database_url: str, tmp_path: Path
) -> None:
    """Four keep-alive connections opened at once (as a load balancer or an engine's pool opens
    them) land two on each HTTP worker: asyncio's accept loop gave them all to the first worker
    that woke, most of the time."""
    env = {**os.environ, "CAREOPS_DATABASE_URL": database_url}
    cli(env, "migrate")
    port = free_port()
    with _serving(env, tmp_path, "--port", str(port)) as (server, connections):
        wait_for_health(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        while len(workers := [p for p in _workers(server) if _polling(p, port)]) < 2:
            assert time.monotonic() < deadline, "the HTTP workers did not start serving"
            time.sleep(0.1)
        for _ in range(3):  # the old accept loop passed this about one time in three
            connections[:] = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(4)]
            for connection in connections:
                connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: careops\r\n\r\n")
            for connection in connections:
                assert connection.recv(65536).startswith(b"HTTP/1.1 200")
            held = sorted(_held(pid, _sockets(port), _ESTABLISHED) for pid in workers)
            assert held == [2, 2]
            for connection in connections:
                connection.close()
            while any(_held(pid, _sockets(port), _ESTABLISHED) for pid in workers):
                assert time.monotonic() < deadline + 30, "the workers kept closed connections"
                time.sleep(0.05)
