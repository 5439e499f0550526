"""Reference data at size: file imports, HL7 intake with 10,000 code mappings loaded against none,
and how often the mapping suggestions are right.

    .venv/bin/python -m bench.reference [--referrers 50000] [--services 5000] [--messages 300]
                                        [--rounds 3] [--backends postgres,sqlite]

Per backend, on a fresh migrated database with the demo organisation:

1. *Import*: a CSV of ``--referrers`` referrers and a YAML of ``--services`` services, each read
   and validated, compared with what is live (the dry run), then applied in one transaction; and a
   second dry run of the same files (nothing to change). The reference is the fastest honest way to
   load the same rows: a plain multi-row INSERT of them, without validation, diff or events.
2. *Intake with mappings*: the same HL7 ORM^O01 messages through the HL7 channel (as the HTTP and
   MLLP listeners call it), in interleaved rounds against two databases: one with no mappings,
   whose messages carry careops' own codes, and one with 10,000 live mappings, whose messages
   carry a sender's codes that only the mappings resolve. Issue 26's target: ≤ 5% slower.
3. *Suggestions*: a generated catalogue of services (each modality and body part on two sides)
   and, for each, the names a sender might use (written out, other word order, extra words, a
   typo, no side at all); top-1 and top-3 accuracy of ``suggest``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import time
import uuid
from pathlib import Path
from statistics import median
from typing import Any

from rich.table import Table
from sqlalchemy import insert, select

from bench.intake import console, drop_database, fresh_database
from careops.db import Database
from careops.demo.seed import seed_demo
from careops.domain.master_data import MappingRecord
from careops.domain.models import Base, CodeMapping, Organisation, Referrer, new_id, utcnow
from careops.governance.keys import load_field_keys
from careops.integrations.inbound.hl7_channel import Hl7Channel
from careops.migrate import upgrade
from careops.orchestration.intake import CatalogueCache
from careops.orchestration.mappings import suggest
from careops.orchestration.reference_files import apply_file, diff, read_reference_file, to_csv, to_yaml
from careops.settings import Settings

WORDS = (
    "knee",
    "hip",
    "shoulder",
    "spine",
    "head",
    "chest",
    "abdomen",
    "pelvis",
    "wrist",
    "ankle",
    "neck",
    "brain",
    "heart",
    "liver",
    "kidney",
    "thyroid",
    "breast",
    "foot",
    "hand",
    "elbow",
)
MODALITIES = (
    ("CT", "computed tomography"),
    ("MRI", "magnetic resonance"),
    ("US", "ultrasound"),
    ("XR", "radiograph"),
)
SIDES = ("", "left", "right", "bilateral")


def _prepared(url: str) -> tuple[Database, Settings]:
    settings = Settings(database_url=url, reference_cache_seconds=5)
    upgrade(url)
    db = Database(url)
    load_field_keys(db, settings)
    seed_demo(db)
    return db, settings


def _timed(work: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def bench_import(db: Database, referrers: int, services: int, workdir: Path) -> list[tuple[str, str, str]]:
    people = [
        {"code": f"R{n:06d}", "name": f"Dr Referrer {n}", "organisation": f"Practice {n % 900}"}
        for n in range(referrers)
    ]
    catalogue = [
        {
            "code": f"S{n:05d}",
            "name": f"Service {n}",
            "aliases": [f"A{n:05d}"],
            "duration_minutes": 15 + n % 60,
            "prices": {"NHS": 50 + n % 300},
        }
        for n in range(services)
    ]
    csv_path = workdir / "referrers.csv"
    csv_path.write_text(to_csv("referrers", people))
    yaml_path = workdir / "services.yaml"
    yaml_path.write_text(to_yaml({"services": catalogue}))
    rows = []
    for path, count in ((csv_path, referrers), (yaml_path, services)):
        read_s, read = _timed(lambda p=path: read_reference_file(p))
        assert not read.problems, read.problems[:3]
        diff_s, changes = _timed(lambda r=read: diff(db, r))
        apply_s, _ = _timed(lambda r=read: apply_file(db, r, actor="bench", reason="bench import"))
        again_s, again = _timed(lambda r=read: diff(db, r))
        assert again == [], again[:3]
        rows += [
            (f"{path.name}: read + validate {count:,}", f"{read_s:.2f} s", f"{count / read_s:,.0f}/s"),
            (f"{path.name}: dry run ({len(changes):,} changes)", f"{diff_s:.2f} s", ""),
            (f"{path.name}: apply in one transaction", f"{apply_s:.2f} s", f"{count / apply_s:,.0f}/s"),
            (f"{path.name}: dry run again (0 changes)", f"{again_s:.2f} s", ""),
        ]
    reference = [
        {"id": new_id(), "organisation_id": _organisation(db), **p, "code": f"X{p['code']}"} for p in people
    ]
    plain_s, _ = _timed(lambda: _plain_insert(db, reference))
    rows.append(
        (
            f"reference: plain INSERT of {referrers:,} referrers",
            f"{plain_s:.2f} s",
            f"{referrers / plain_s:,.0f}/s",
        )
    )
    return rows


def _organisation(db: Database) -> str:
    with db.sessions() as session:
        return session.scalars(select(Organisation.id)).one()


def _plain_insert(db: Database, rows: list[dict[str, Any]]) -> None:
    table = Base.metadata.tables[Referrer.__tablename__]
    with db.writer() as connection:
        for start in range(0, len(rows), 5_000):
            connection.execute(insert(table), rows[start : start + 5_000])


def _orm(control_id: str, service: str, facility: str, provider: str) -> bytes:
    segments = [
        f"MSH|^~\\&|LAB|{facility}|CAREOPS|{facility}|20261201120000||ORM^O01|{control_id}|P|2.5",
        f"PID|1||MRN-{control_id}^^^{facility}^MR||Doe^Jane||19710203|F|||1 Main St^^Leeds||020 7946 0999",
        f"PV1|1|O|^^^{facility}",
        f"ORC|NW|ORD-{control_id}|||||||||||{provider}^ORDER^PAT",
        f"OBR|1|ORD-{control_id}||{service}^Service",
    ]
    return "\r".join(segments).encode()


def _mapped_database(url: str, mappings: int) -> tuple[Database, Settings]:
    """10,000 live mappings of sender codes (``SND-<n>``), among them the ones the messages use."""
    db, settings = _prepared(url)
    rows = [
        {
            "id": new_id(),
            "sender": f"HOSP{n % 50}",
            "kind": "service",
            "code": f"SND-{n}",
            "target": "XRAY-CHEST",
            "version": 1,
            "created_by": "bench",
            "created_at": utcnow(),
        }
        for n in range(mappings - 3)
    ]
    table = Base.metadata.tables[CodeMapping.__tablename__]
    with db.writer() as connection:
        connection.execute(insert(table), rows)
    for record in (
        MappingRecord(sender="MAPPED-SITE", kind="location", code="MAPPED-SITE", target="north"),
        MappingRecord(sender="MAPPED-SITE", kind="service", code="CXR-LOCAL", target="XRAY-CHEST"),
        MappingRecord(sender="MAPPED-SITE", kind="referrer", code="LOCAL-GP", target="GP-001"),
    ):
        with db.writer() as connection:
            connection.execute(
                insert(table),
                {
                    "id": new_id(),
                    "version": 1,
                    "created_by": "bench",
                    "created_at": utcnow(),
                    **record.model_dump(),
                },
            )
    return db, settings


def bench_intake_mappings(backend: str, messages: int, rounds: int) -> list[dict[str, Any]]:
    plain_url, mapped_url = fresh_database(backend, _workdir()), fresh_database(backend, _workdir())
    try:
        plain_db, plain_settings = _prepared(plain_url)
        mapped_db, mapped_settings = _mapped_database(mapped_url, 10_000)
        plain = Hl7Channel(
            plain_db, plain_settings.model_copy(update={"facility_locations": {}}), CatalogueCache(5)
        )
        mapped = Hl7Channel(mapped_db, mapped_settings, CatalogueCache(5))
        results = []
        for round_ in range(rounds):
            for name, channel, facility, service, provider in (
                ("no mappings", plain, "NORTH", "XRAY-CHEST", "GP-001"),
                ("10,000 mappings", mapped, "MAPPED-SITE", "CXR-LOCAL", "LOCAL-GP"),
            ):
                channel.handle(_orm(uuid.uuid4().hex[:12], service, facility, provider), "http")  # warm
                bodies = [_orm(uuid.uuid4().hex[:12], service, facility, provider) for _ in range(messages)]
                started = time.perf_counter()
                outcomes = [channel.handle(body, "http").outcome for body in bodies]
                elapsed = time.perf_counter() - started
                assert set(outcomes) <= {"case_created", "duplicate"}, set(outcomes)
                results.append(
                    {
                        "backend": backend,
                        "round": round_ + 1,
                        "variant": name,
                        "per_second": messages / elapsed,
                    }
                )
        return results
    finally:
        for url in (plain_url, mapped_url):
            drop_database(url)


def suggestion_accuracy(db: Database) -> tuple[int, float, float]:
    """Top-1 and top-3 accuracy over generated services and the names a sender might give them."""
    rng = random.Random(11)
    catalogue = []
    for short, _ in MODALITIES:
        for word in WORDS:  # two sides of each: a sender that names no side is ambiguous
            for side in rng.sample(SIDES, 2):
                catalogue.append(
                    {
                        "code": f"{short}-{word}-{side or 'any'}".upper(),
                        "name": f"{short} {word}{' ' + side if side else ''}",
                    }
                )
    read = read_reference_file(_write_yaml({"services": catalogue}))
    assert not read.problems, read.problems[:3]
    apply_file(db, read, actor="bench", reason="suggestion catalogue")
    trials = top1 = top3 = 0
    for entry in catalogue:
        short, word, *rest = entry["name"].split()
        long_ = dict(MODALITIES)[short]
        side = rest[0] if rest else ""
        for text in (
            f"{long_} of {side} {word}".replace("  ", " "),
            f"{word.upper()} {short} {side}".strip(),
            f"{short} {word} {side} without contrast".replace("  ", " "),
            f"{long_} {word[:-1] + word[-1] * 2} {side}".strip(),  # a typo: a doubled last letter
            f"{short} {word}",  # no side: ambiguous where the catalogue has two
        ):
            found = [s.target for s in suggest(db, "service", f"LOCAL-{trials}", text)]
            trials += 1
            top1 += found[:1] == [entry["code"]]
            top3 += entry["code"] in found[:3]
    return trials, top1 / trials, top3 / trials


def _workdir() -> Path:
    path = Path(__file__).parent / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_yaml(document: dict[str, Any]) -> Path:
    path = _workdir() / f"suggestions-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(to_yaml(document))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--referrers", type=int, default=50_000)
    parser.add_argument("--services", type=int, default=5_000)
    parser.add_argument("--messages", type=int, default=300, help="HL7 messages per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default="postgres,sqlite")
    args = parser.parse_args()
    imports: list[tuple[str, str, str, str]] = []
    intake: list[dict[str, Any]] = []
    accuracy: list[tuple[str, int, float, float]] = []
    for backend in args.backends.split(","):
        console.print(f"benchmarking on {backend} …")
        url = fresh_database(backend, _workdir())
        try:
            db, _ = _prepared(url)
            imports += [
                (backend, *row) for row in bench_import(db, args.referrers, args.services, _workdir())
            ]
            accuracy.append((backend, *suggestion_accuracy(db)))
            db.dispose()
        finally:
            drop_database(url)
        intake += bench_intake_mappings(backend, args.messages, args.rounds)
    table = Table(title=f"reference data imports — {dt.date.today()}")
    for column in ("db", "step", "time", "rate"):
        table.add_column(column)
    for row in imports:
        table.add_row(*row)
    console.print(table)
    table = Table(title="HL7 intake: 10,000 mappings against none (messages/s)")
    for column in ("db", "round", "no mappings", "10,000 mappings", "mapped / plain"):
        table.add_column(column, justify="right")
    for backend in dict.fromkeys(r["backend"] for r in intake):
        ratios = []
        for round_ in sorted({r["round"] for r in intake if r["backend"] == backend}):
            pair = {
                r["variant"]: r["per_second"]
                for r in intake
                if r["backend"] == backend and r["round"] == round_
            }
            ratio = pair["10,000 mappings"] / pair["no mappings"]
            ratios.append(ratio)
            table.add_row(
                backend,
                str(round_),
                f"{pair['no mappings']:,.0f}",
                f"{pair['10,000 mappings']:,.0f}",
                f"{ratio:.1%}",
            )
        table.add_row(backend, "median", "", "", f"{median(ratios):.1%} (target ≥ 95%)")
    console.print(table)
    for backend, trials, top1, top3 in accuracy:
        console.print(
            f"{backend}: suggestions over {trials} sender names: top-1 {top1:.1%}, top-3 {top3:.1%}"
        )
    out = _workdir() / f"reference-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps({"imports": imports, "intake": intake, "accuracy": accuracy}, indent=2))


if __name__ == "__main__":
    main()
