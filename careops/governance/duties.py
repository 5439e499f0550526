"""Separation of duties as data: who must not perform an action on a record they are party to.

A rule names an action (a permission) and the party to the record that may not perform it:
``subject`` (the record is about the actor, e.g. their own user) or ``requester`` (the actor
asked for it, e.g. submitted the referral or requested the approval). The rules in force are
``separation_of_duties`` in the settings; services call ``check_duties`` with the parties of the
record at hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from pydantic import BaseModel

from careops.errors import Forbidden

Party = Literal["subject", "requester"]


class DutyRule(BaseModel):
    action: str
    not_by: Party
    why: str


DEFAULT_RULES = [
    DutyRule(action="users:set_roles", not_by="subject", why="nobody may change their own roles"),
    DutyRule(
        action="replenishment:approve", not_by="requester", why="nobody approves a purchase they requested"
    ),
]


def check_duties(
    rules: Iterable[DutyRule], action: str, actor: str, parties: Mapping[Party, str | None]
) -> None:
    """Forbidden, saying which rule, when ``actor`` is a party the rules keep from ``action``."""
    for rule in rules:
        if rule.action == action and parties.get(rule.not_by) == actor:
            raise Forbidden(f"separation of duties: {rule.why} (ask a colleague)", rule=rule.action)
