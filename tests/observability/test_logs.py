"""Log lines never carry PHI: keys, free text, exceptions and library messages are redacted."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import logging
from careops.observability.logs import configure_logging, get_logger
configure_logging()
log = get_logger("careops.test")
note = "call 020 7946 0958, jane@x.org, 1980-04-12"
log.info("case.created", given_name="Jane", mrn="MRN-77", case_id="0123abcd", note=note)
try:
    raise ValueError("the value Jane Smith is wrong")
except ValueError:
    log.exception("boom")
    logging.getLogger("sqlalchemy").error("failed %s %r", "Jane Smith", {"name": "Jane"}, exc_info=True)
logging.getLogger("lib").warning("mapping %(who)s", {"who": "Jane Smith"})
logging.getLogger("lib").warning("numbers %d and id %s stay", 42, "0123abcdef")
logging.getLogger("mail.log").info("a line per SMTP command")  # quietened: not written
"""


def test_every_line_is_json_and_redacted() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert len(lines) == 5, result.stderr
    text = result.stderr
    for secret in ("Jane", "MRN-77", "7946", "jane@x.org", "1980-04-12", "Smith"):
        assert secret not in text
    created, boom, library, mapping, numbers = lines
    assert created["given_name"] == created["mrn"] == "[redacted]" and created["case_id"] == "0123abcd"
    assert boom["exception"].startswith("builtins.ValueError at ") and "wrong" not in boom["exception"]
    assert library["logger"] == "sqlalchemy" and "exception" in library
    assert mapping["event"] == "mapping [redacted]"
    assert numbers["event"] == "numbers 42 and id 0123abcdef stay"
    assert "SMTP command" not in text
