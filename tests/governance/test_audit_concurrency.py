"""4 processes write 10,000 audited events at once on PostgreSQL while 2 sealers race: one whole chain."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from careops.db import Database
from careops.governance.audit import seal_all, verify
from careops.migrate import upgrade
from tests.conftest import PostgresDatabases

KEY = "k" * 40
WRITER = """
import sys
from careops.db import Database
from careops.domain.events import Event, EventType, record_events
db = Database(sys.argv[1])
for batch in range(250):
    with db.writer() as connection:
        record_events(connection, *(
            Event(EventType.CASE_TRANSITIONED, "case", f"{sys.argv[2]}-{batch}-{i}", actor="writer")
            for i in range(10)
        ))
db.dispose()
"""
SEALER = """
import sys, time
from careops.db import Database
from careops.governance.audit import seal
db = Database(sys.argv[1])
deadline = time.monotonic() + 120
while time.monotonic() < deadline and open(sys.argv[2]).read() != "stop":
    seal(db, sys.argv[3], limit=500)
db.dispose()
"""


@pytest.mark.postgres
@pytest.mark.slow
def test_concurrent_writers_and_sealers_keep_one_whole_chain(
    postgres_databases: PostgresDatabases, tmp_path: Path
) -> None:
    url = postgres_databases.create()
    upgrade(url)
    flag = tmp_path / "flag"
    flag.write_text("run")
    sealers = [subprocess.Popen([sys.executable, "-c", SEALER, url, str(flag), KEY]) for _ in range(2)]
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, url, str(n)]) for n in range(4)]
    assert [w.wait(180) for w in writers] == [0, 0, 0, 0]
    flag.write_text("stop")
    assert [s.wait(60) for s in sealers] == [0, 0]
    db = Database(url)
    seal_all(db, KEY)
    report = verify(db, KEY)
    db.dispose()
    assert report.findings == []
    assert report.entries == 10_000 and report.head_seq == 10_000 and report.unsealed == 0
    assert report.checkpoints >= 2
