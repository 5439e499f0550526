"""Approvers of the demo organisation and the shipped policies, for the approval tests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from careops.approvals.store import activate_directory, shipped_directory
from careops.db import Database
from careops.domain.models import User
from careops.governance.principal import Principal
from careops.governance.users import create_user, user_principal
from careops.settings import Settings

PASSWORD = "correct horse battery staple"
PEOPLE = {
    "bea": ["procurement"],
    "bo": ["procurement"],
    "max": ["operations_manager"],
    "fin": ["finance"],
    "rita": ["authorisation_reviewer"],
    "zed": ["procurement"],  # sees the north only
    "mo": ["procurement", "operations_manager"],
}


@dataclass
class People:
    db: Database
    ids: dict[str, str]

    def principal(self, name: str) -> Principal:
        with self.db.sessions() as session:
            user = session.get(User, self.ids[name])
            assert user is not None
            return user_principal(session, user)


@pytest.fixture
def people(db: Database, settings: Settings) -> People:
    activate_directory(db, shipped_directory(), actor="test", reason="the shipped policies")
    ids = {}
    for name, roles in PEOPLE.items():
        user = create_user(
            db, settings, name, PASSWORD, roles, actor="test", locations=["north"] if name == "zed" else None
        )
        ids[name] = user.id
    return People(db, ids)
