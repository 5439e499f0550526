"""/api/v1/approvals and its companions: approval requests (ask, list, the queue of what waits for
the caller, one request, its trace, decide, resubmit, withdraw), policies (the active versions;
activation from YAML, validated and audited), delegations, absences and the approval metrics.

Decisions are a person's: the caller is a console user or a personal token (``careops token
create --user``); a system's token is refused with the reason."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from careops.api.contract import answers
from careops.api.deps import DbDep, RecordId, require
from careops.approvals import delegation
from careops.approvals.metrics import summary
from careops.approvals.policies import SUBJECTS
from careops.approvals.requests import ask as ask_for
from careops.approvals.requests import decide, resubmit, withdraw
from careops.approvals.service import activate_text, detail, list_requests, policies, trace, waiting_for
from careops.db import in_thread
from careops.domain.approvals import OUTCOMES
from careops.domain.models import ID_PATTERN, PLAIN_TEXT
from careops.governance.principal import Principal

router = APIRouter(prefix="/api/v1", tags=["approvals"])
Reader = Annotated[Principal, Depends(require("approvals:read"))]
Requester = Annotated[Principal, Depends(require("approvals:request"))]
Decider = Annotated[Principal, Depends(require("approvals:decide"))]
Manager = Annotated[Principal, Depends(require("workflows:manage"))]
Comment = Annotated[str, Field(max_length=1000, pattern=PLAIN_TEXT)]
Reason = Annotated[str, Field(min_length=1, max_length=500, pattern=PLAIN_TEXT, description="Why (audited).")]
Facts = Annotated[
    dict[str, str | float | int],
    Field(max_length=20, description="Inputs the record does not say (a risk score); the record's own win."),
]


class RequestIn(BaseModel):
    subject_type: Literal[SUBJECTS]  # type: ignore[valid-type]
    subject_id: str = Field(pattern=ID_PATTERN)
    policy: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")
    facts: Facts = Field(default_factory=dict)


class DecisionIn(BaseModel):
    decision: Literal["approve", "reject", "return"]
    comment: Comment | None = Field(None, description="Required when returning: what is missing.")


class ResubmitIn(BaseModel):
    facts: Facts = Field(default_factory=dict)


class WithdrawIn(BaseModel):
    reason: Reason


class PolicyIn(BaseModel):
    content: str = Field(min_length=1, max_length=200_000, description="The policy's YAML.")
    reason: Reason


class DelegationIn(BaseModel):
    to: str = Field(min_length=1, max_length=100, pattern=PLAIN_TEXT, description="The delegate's username.")
    starts_at: dt.datetime
    ends_at: dt.datetime
    reason: Comment | None = None


class AbsenceIn(BaseModel):
    starts_at: dt.datetime
    ends_at: dt.datetime
    username: str | None = Field(
        None, max_length=100, pattern=PLAIN_TEXT, description="Administrators: whose."
    )


@router.get("/approvals", summary="Approval requests, newest first, or those waiting for the caller")
async def approvals(
    db: DbDep,
    principal: Reader,
    status: Annotated[Literal["pending", *OUTCOMES] | None, Query()] = None,  # type: ignore[valid-type]
    waiting_for_me: Annotated[bool, Query(description="Only what the caller may decide now.")] = False,
) -> dict[str, Any]:
    if waiting_for_me:
        return {"items": await in_thread(waiting_for, db, principal)}
    return {"items": await in_thread(list_requests, db, principal, status)}


@router.post(
    "/approvals",
    status_code=201,
    summary="Ask for an approval of a record under a policy (its table chooses the chain)",
    responses=answers(
        404, 422, s422="No rule of the policy covers the record, or the policy is for other records."
    ),
)
async def ask(db: DbDep, principal: Requester, body: RequestIn) -> dict[str, Any]:
    return await in_thread(
        ask_for, db, principal, body.subject_type, body.subject_id, body.policy, dict(body.facts)
    )


@router.get(
    "/approvals/{approval_id}",
    summary="One approval request: its chain, decisions and trace",
    responses=answers(404),
)
async def approval(db: DbDep, principal: Reader, approval_id: RecordId) -> dict[str, Any]:
    return await in_thread(detail, db, approval_id, principal)


@router.get(
    "/approvals/{approval_id}/trace",
    summary="The whole story of a request, with the policy version that chose its chain",
    responses=answers(404),
)
async def approval_trace(db: DbDep, principal: Reader, approval_id: RecordId) -> dict[str, Any]:
    return await in_thread(trace, db, approval_id, principal)


@router.post(
    "/approvals/{approval_id}/decision",
    summary="Approve, reject or return the step waiting for the caller",
    responses=answers(
        403, 404, 409, 422,
        s403="Not an approver of this step (nor a delegate), separation of duties, or not a person.",
        s409="Decided already, or the record changed since the request (resubmit it).",
    ),
)  # fmt: skip
async def decision(db: DbDep, principal: Decider, approval_id: RecordId, body: DecisionIn) -> dict[str, Any]:
    return await in_thread(lambda: decide(db, approval_id, principal, body.decision, body.comment, via="api"))


@router.post(
    "/approvals/{approval_id}/resubmit",
    summary="Route a request again on what its record says now (its chain starts over)",
    responses=answers(404, 409, 422),
)
async def resubmission(
    db: DbDep, principal: Requester, approval_id: RecordId, body: ResubmitIn
) -> dict[str, Any]:
    return await in_thread(resubmit, db, approval_id, principal, dict(body.facts))


@router.post(
    "/approvals/{approval_id}/withdraw",
    summary="Withdraw a pending request (its requester, or an administrator)",
    responses=answers(403, 404, 409),
)
async def withdrawal(
    db: DbDep, principal: Requester, approval_id: RecordId, body: WithdrawIn
) -> dict[str, Any]:
    return await in_thread(withdraw, db, approval_id, principal, body.reason)


@router.get("/approval-policies", summary="The active approval policies with their tables")
async def approval_policies(db: DbDep, principal: Reader) -> dict[str, Any]:
    return {"items": await in_thread(policies, db)}


@router.post(
    "/approval-policies",
    status_code=201,
    summary="Validate a policy (loader and table check) and make it the active version of its name",
    responses=answers(
        422, s422="The policy does not load, has gaps or shadowed rules, or names unknown roles."
    ),
)
async def activate_policy(db: DbDep, principal: Manager, body: PolicyIn) -> dict[str, Any]:
    return await in_thread(activate_text, db, body.content, principal.id, body.reason)


@router.get("/approval-delegations", summary="The delegations the caller gave or received")
async def delegations(db: DbDep, principal: Decider) -> dict[str, Any]:
    return {"items": await in_thread(delegation.delegations, db, principal)}


@router.post(
    "/approval-delegations",
    status_code=201,
    summary="Let someone with the same permission and locations decide in the caller's place for a period",
    responses=answers(403, 404, 422),
)
async def delegate(db: DbDep, principal: Decider, body: DelegationIn) -> dict[str, Any]:
    return await in_thread(
        delegation.delegate, db, principal, body.to, body.starts_at, body.ends_at, body.reason
    )


@router.post(
    "/approval-delegations/{delegation_id}/revoke", summary="Revoke a delegation", responses=answers(404)
)
async def revoke(db: DbDep, principal: Decider, delegation_id: RecordId) -> dict[str, Any]:
    return await in_thread(delegation.revoke, db, principal, delegation_id)


@router.post(
    "/approval-absences",
    status_code=201,
    summary="Record an absence: fallback approvers cover it",
    responses=answers(403, 404, 422),
)
async def absence(db: DbDep, principal: Decider, body: AbsenceIn) -> dict[str, Any]:
    return await in_thread(
        delegation.record_absence, db, principal, body.starts_at, body.ends_at, body.username
    )


@router.get(
    "/approval-metrics", summary="Cycle times (p50, p90) per policy, step and location; pending; rates"
)
async def metrics(db: DbDep, principal: Reader) -> dict[str, Any]:
    return await in_thread(summary, db, principal.scope)
