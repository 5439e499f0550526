"""The command line as a user runs it: real subprocesses, real databases."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CAREOPS = str(Path(sys.executable).parent / "careops")


def careops(database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "CAREOPS_DATABASE_URL": database_url, **env}
    return subprocess.run([CAREOPS, *args], env=environment, capture_output=True, text=True, timeout=120)


def test_serve_refuses_an_unmigrated_database_and_names_the_fix(database_url: str) -> None:
    result = careops(database_url, "serve", "--port", "1")
    assert result.returncode == 1
    assert "run `careops migrate`" in result.stderr


def test_production_refuses_the_default_secret(database_url: str) -> None:
    result = careops(database_url, "serve", CAREOPS_MODE="production")
    assert result.returncode == 1 and "CAREOPS_SECRET_KEY" in result.stderr


def test_production_refuses_sqlite_with_several_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    result = careops(url, "serve", "--workers", "2", CAREOPS_MODE="production", CAREOPS_SECRET_KEY="s" * 40)
    assert result.returncode == 1 and "SQLite serves one process only" in result.stderr


def test_token_create_prints_only_the_token_on_stdout(database_url: str) -> None:
    assert careops(database_url, "migrate").returncode == 0
    created = careops(database_url, "token", "create", "--name", "bot", "--scopes", "intake:write,cases:read")
    assert created.returncode == 0
    assert created.stdout.startswith("cop_") and len(created.stdout.strip().splitlines()) == 1
    assert "intake:write" in created.stderr
    listed = careops(database_url, "token", "list")
    assert "bot" in listed.stdout and created.stdout.strip() not in listed.stdout
    assert careops(database_url, "token", "revoke", "bot").returncode == 0
    bad = careops(database_url, "token", "create", "--name", "x", "--scopes", "everything")
    assert bad.returncode == 1 and "unknown scopes: everything" in bad.stderr


def test_seed_demo_is_repeatable(database_url: str) -> None:
    assert careops(database_url, "migrate").returncode == 0
    assert "created" in careops(database_url, "seed", "--demo").stderr
    assert "already present" in careops(database_url, "seed", "--demo").stderr


def test_users_and_roles_are_managed_from_the_command_line(database_url: str) -> None:
    assert careops(database_url, "migrate").returncode == 0
    assert careops(database_url, "seed", "--demo").returncode == 0
    weak = careops(
        database_url, "user", "create", "ana", "--roles", "scheduler", CAREOPS_NEW_PASSWORD="short"
    )
    assert weak.returncode == 1 and "at least 12 characters" in weak.stderr
    made = careops(
        database_url, "user", "create", "ana", "--roles", "scheduler", "--locations", "north",
        CAREOPS_NEW_PASSWORD="a long enough passphrase",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "a long enough passphrase" not in made.stdout + made.stderr
    listed = careops(database_url, "user", "list").stdout
    assert "ana" in listed and "scheduler" in listed and "north" in listed and "active" in listed
    unknown = careops(database_url, "user", "set-roles", "ana", "wizard")
    assert unknown.returncode == 1 and "unknown roles: wizard" in unknown.stderr
    assert careops(database_url, "user", "set-roles", "ana", "scheduler,finance").returncode == 0
    changed = careops(
        database_url, "role", "set", "finance", "--permissions", "cases:read,billing:approve,audit:read",
        "--masking", "clinical_note=partial",
    )  # fmt: skip
    assert changed.returncode == 0, changed.stderr
    roles = careops(database_url, "role", "list").stdout
    assert "audit:read" in roles and "compliance_officer" in roles
    assert careops(database_url, "user", "disable", "ana").returncode == 0
    assert "disabled" in careops(database_url, "user", "list").stdout


def test_serve_checks_the_mllp_tls_files_before_it_starts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    assert careops(url, "migrate").returncode == 0
    missing_key = careops(url, "serve", "--mllp-port", "2599", CAREOPS_MLLP_TLS_CERT=str(tmp_path / "c.pem"))
    assert missing_key.returncode == 1 and "CAREOPS_MLLP_TLS_KEY" in missing_key.stderr
    unreadable = careops(
        url,
        "worker",
        "--mllp-port",
        "2599",
        CAREOPS_MLLP_TLS_CERT=str(tmp_path / "c.pem"),
        CAREOPS_MLLP_TLS_KEY=str(tmp_path / "k.pem"),
    )
    assert unreadable.returncode == 1 and "MLLP TLS: cannot load" in unreadable.stderr
