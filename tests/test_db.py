"""SQLite writers queue on blocking locks (threads and processes), and a killed writer frees the queue."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import text

from careops.db import Database

WRITER = """
import sys, time
from sqlalchemy import text
from careops.db import Database
db = Database(sys.argv[1])
for _ in range(int(sys.argv[2])):
    with db.writer() as connection:
        started = time.monotonic()
        connection.execute(text("INSERT INTO span (pid, started) VALUES (:pid, :started)"),
                           {"pid": sys.argv[3], "started": started})
        time.sleep(0.002)
        connection.execute(text("UPDATE span SET ended = :ended WHERE pid = :pid AND started = :started"),
                           {"pid": sys.argv[3], "started": started, "ended": time.monotonic()})
db.dispose()
"""


PROBE = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("free")
except BlockingIOError:
    print("busy")
"""


def test_writers_in_several_processes_take_turns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    db = Database(url)
    with db.writer() as connection:
        connection.execute(text("CREATE TABLE span (pid TEXT, started REAL, ended REAL)"))
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, url, "60", str(i)], stderr=subprocess.PIPE)
        for i in range(3)
    ]
    assert [w.wait(60) for w in writers] == [0, 0, 0], [w.stderr.read() for w in writers if w.stderr]
    with db.engine.connect() as connection:
        spans = connection.execute(text("SELECT started, ended FROM span ORDER BY started")).all()
    db.dispose()
    assert len(spans) == 180 and all(ended is not None for _, ended in spans)
    assert all(earlier.ended <= later.started for earlier, later in itertools.pairwise(spans))


def test_a_writer_holds_the_file_lock_for_its_whole_transaction(tmp_path: Path) -> None:
    path = tmp_path / "held.db"
    db = Database(f"sqlite:///{path}")
    with db.writer() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER)"))
        probe = subprocess.run(
            [sys.executable, "-c", PROBE, f"{path}.writelock"], capture_output=True, text=True, check=True
        )
        assert probe.stdout.strip() == "busy"
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, f"{path}.writelock"], capture_output=True, text=True, check=True
    )
    assert probe.stdout.strip() == "free"
    db.dispose()


def test_a_writer_killed_mid_transaction_frees_the_queue(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'killed.db'}"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom careops.db import Database\n"
            "with Database(sys.argv[1]).writer():\n    print('held', flush=True)\n    time.sleep(600)",
            url,
        ],
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
    holder.kill()
    holder.wait(10)
    db = Database(url)
    started = time.monotonic()
    with db.writer() as connection:
        connection.execute(text("CREATE TABLE after_kill (x INTEGER)"))
    db.dispose()
    assert time.monotonic() - started < 2.0
