"""Who is calling: a token or a logged-in user, with its permissions, locations and PHI policy."""

from __future__ import annotations

from dataclasses import dataclass, field

from careops.governance.masking import CLEAR, MaskingPolicy
from careops.governance.permissions import DEFAULT_MASKING, PHI_READ, grants
from careops.governance.scoping import EVERYWHERE, LocationScope


@dataclass(frozen=True)
class Principal:
    """``id`` is what business events record as the actor; ``user_id`` the person behind it (a
    console user, or a personal token's user), None for a system's token."""

    id: str
    name: str
    permissions: frozenset[str]
    scope: LocationScope = EVERYWHERE
    masking: MaskingPolicy = field(default_factory=lambda: MaskingPolicy(dict(DEFAULT_MASKING)))
    requester: str | None = None
    user_id: str | None = None

    def can(self, permission: str) -> bool:
        return grants(self.permissions, permission)


def token_masking(scopes: frozenset[str]) -> MaskingPolicy:
    """A token sees PHI in clear only with ``phi:read``; otherwise the default partial policy."""
    return CLEAR if PHI_READ in scopes else MaskingPolicy(dict(DEFAULT_MASKING))
