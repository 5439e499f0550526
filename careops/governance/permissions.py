"""The permission catalogue and the shipped roles.

A permission names one kind of action (``cases:read``); a token carries permissions directly as
its scopes, a user gets them through roles. The shipped roles below are defaults: an
administrator can change any of them, or add roles, and the change is stored in the ``role``
table (``careops role set``), which then wins over the default.

Each role also says how much PHI it sees (``masking``): for each PHI category, ``clear``,
``partial`` or ``hidden`` (see ``governance.masking``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from careops.domain.phi import PhiCategory

ADMIN = "admin"
PHI_READ = "phi:read"
PHI_REVEAL = "phi:reveal"

PERMISSIONS: dict[str, str] = {
    "intake:write": "submit referrals (JSON, HL7, FHIR)",
    "cases:read": "read cases and their timelines",
    "cases:transition": "move cases through their states and record triage",
    "exceptions:read": "read the exception queues",
    "exceptions:resolve": "resolve exception items",
    "quarantine:read": "read quarantined payloads",
    "quarantine:replay": "replay or discard quarantined payloads",
    "approvals:decide": "decide approvals (never one's own request)",
    "approvals:request": "ask for, resubmit and withdraw approvals (workflows do, on a record's behalf)",
    "approvals:read": "read approval requests, their traces, policies and metrics; export them",
    "workflows:read": "read workflow templates, their versions, effective workflows and rule runs",
    "workflows:manage": "activate and deactivate workflow template versions (audited, with a reason)",
    "billing:approve": "check billing readiness, request, approve, send and settle invoices",
    "inventory:adjust": "adjust stock and replenishment",
    "staff:reassign": "reassign staff and shifts",
    "integrations:manage": "manage connectors, webhooks and their secrets",
    "reference:read": "read master data (locations, services, payers, referrers) and code mappings",
    "reference:write": "change master data: add, edit, retire, import files, field owners",
    "mappings:write": "map a sender's codes onto master data (and release what waited on them)",
    "audit:read": "read and export the audit log",
    "metrics:read": "read the Prometheus metrics and the KPI dashboard",
    PHI_REVEAL: "reveal masked PHI of one record, with a stated reason (audited)",
    PHI_READ: "see PHI in clear without revealing (integrations that pass records on; audited)",
    ADMIN: "every permission except phi:read; manage users and roles",
}

# What ``admin`` does not include: seeing PHI in clear stays a separate, deliberate grant.
NOT_IN_ADMIN = frozenset({PHI_READ})


class Visibility(StrEnum):
    CLEAR = "clear"
    PARTIAL = "partial"
    HIDDEN = "hidden"


Masking = dict[PhiCategory, Visibility]

C, P, H = Visibility.CLEAR, Visibility.PARTIAL, Visibility.HIDDEN


def masking(*visibilities: Visibility) -> Masking:
    """Visibilities in PhiCategory order: name, birth date, phone, email, identifier, note, attachment."""
    return dict(zip(PhiCategory, visibilities, strict=True))


# Whoever has no role that says otherwise: partial demographics, no notes or files.
DEFAULT_MASKING = masking(P, P, P, P, P, H, H)
CLEAR_MASKING = masking(C, C, C, C, C, C, C)


@dataclass(frozen=True)
class RoleSpec:
    description: str
    permissions: frozenset[str]
    masking: Masking = field(default_factory=lambda: dict(DEFAULT_MASKING))


def _role(description: str, permissions: str, mask: Masking) -> RoleSpec:
    return RoleSpec(description, frozenset(permissions.split()), mask)


SHIPPED_ROLES: dict[str, RoleSpec] = {
    "intake_coordinator": _role(
        "works the intake and exception queues",
        "intake:write cases:read cases:transition exceptions:read exceptions:resolve quarantine:read "
        "reference:read mappings:write approvals:request",
        masking(C, C, C, C, P, C, C),
    ),
    "scheduler": _role(
        "turns approved cases into appointments",
        "cases:read cases:transition exceptions:read approvals:request",
        masking(C, P, C, C, H, H, H),
    ),
    "authorisation_reviewer": _role(
        "decides prior-authorisation approvals",
        "cases:read exceptions:read approvals:decide approvals:read",
        masking(C, C, H, H, P, C, C),
    ),
    "finance": _role(
        "billing readiness, invoice approval, discrepancies",
        "cases:read billing:approve exceptions:read exceptions:resolve approvals:request approvals:decide "
        "approvals:read",
        masking(C, P, P, P, C, H, H),
    ),
    "procurement": _role(
        "replenishment requests and approvals",
        "inventory:adjust approvals:request approvals:decide approvals:read",
        masking(H, H, H, H, H, H, H),
    ),
    "field_supervisor": _role(
        "staffing conflicts and reassignments",
        "cases:read staff:reassign approvals:request approvals:decide approvals:read",
        masking(C, H, C, H, H, H, H),
    ),
    "operations_manager": _role(
        "dashboards and queues across the organisation",
        "cases:read exceptions:read metrics:read reference:read workflows:read approvals:decide "
        "approvals:read",
        masking(P, P, H, H, H, H, H),
    ),
    "integration_engineer": _role(
        "connectors, tokens, quarantine and replay",
        "integrations:manage quarantine:read quarantine:replay exceptions:read metrics:read "
        "reference:read reference:write mappings:write workflows:read workflows:manage",
        masking(P, P, P, P, P, H, H),
    ),
    "compliance_officer": _role(
        "audit log, PHI access, approval traceability",
        "audit:read cases:read exceptions:read phi:reveal approvals:read",
        masking(P, P, P, P, P, H, H),
    ),
    "administrator": _role("users, roles, tokens and settings", ADMIN, masking(P, P, P, P, P, H, H)),
}


def grants(permissions: frozenset[str], wanted: str) -> bool:
    """Whether a holder of ``permissions`` may do ``wanted`` (``admin`` covers all but NOT_IN_ADMIN)."""
    return wanted in permissions or (ADMIN in permissions and wanted not in NOT_IN_ADMIN)


def most_open(maskings: list[Masking]) -> Masking:
    """Per category, the most open visibility among several roles' (clear > partial > hidden)."""
    order = [Visibility.HIDDEN, Visibility.PARTIAL, Visibility.CLEAR]
    if not maskings:
        return dict(DEFAULT_MASKING)
    return {
        category: max((m.get(category, Visibility.HIDDEN) for m in maskings), key=order.index)
        for category in PhiCategory
    }
