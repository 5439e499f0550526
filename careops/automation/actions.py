"""Server actions: the typed library a rule's steps choose from, each with the permission the
workflow's ``run_as`` role must hold, its arguments (checked when a template loads) and what it
does, in the engine's transaction (a savepoint per rule run: a failed action undoes only its own
rule's work). String arguments are rendered (sandboxed Jinja2) with the facts first.

Actions that wait (``wait``) or start another workflow (``start_workflow``) are carried out by the
engine with a durable timer; the others change records through the service functions, each
change with its business event, written by ``automation:RUN_ID`` (the run that made it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careops.approvals.requests import request_in
from careops.automation.conditions import ConditionError, Facts
from careops.automation.rendering import check_syntax, render_value
from careops.domain.automation import QueuedMessage
from careops.domain.cases import CaseAction, transition
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import ExceptionItem, Location, ServiceCase, Task, new_id
from careops.orchestration.billing import check_readiness, invoice_case
from careops.orchestration.exception_queue import open_exception
from careops.orchestration.replenishment import draft_in
from careops.orchestration.staffing import candidates_in
from careops.yamldoc import parse_duration

CHANNELS = ("email", "sms", "console")
SETTABLE: dict[tuple[str, str], tuple[str, ...]] = {("case", "priority"): ("routine", "urgent", "stat")}


class ActionFailed(Exception):
    """An action that cannot be carried out for this record (the run fails, the others go on)."""


@dataclass
class ActionContext:
    """What an action works on: the engine's session, the facts, the subject and who acts."""

    session: Session
    facts: Facts
    actor: str  # automation:RUN_ID
    subject_type: str | None
    subject_id: str | None
    location_id: str | None
    case: ServiceCase | None
    workflow: str
    rule: str
    made: dict[str, Any] = field(default_factory=dict)  # step name -> what it made, earlier in the run

    def need_case(self) -> ServiceCase:
        if self.case is None:
            raise ActionFailed("this action needs a case, and the trigger is not about one")
        return self.case


Checker = Callable[[dict[str, Any], tuple[str | int, ...]], None]


@dataclass(frozen=True)
class ActionSpec:
    name: str
    permission: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    description: str
    run: Callable[[ActionContext, dict[str, Any]], dict[str, Any]] | None  # None: the engine's own
    writes: tuple[str, ...] = ()  # the events it may write (what another rule may be triggered by)
    checks: Checker | None = None  # what its arguments must be, beyond their names

    def check(self, args: dict[str, Any], at: tuple[str | int, ...]) -> None:
        missing = [a for a in self.required if a not in args]
        if missing:
            raise ConditionError(f"{self.name} needs {', '.join(missing)}", at)
        unknown = [a for a in args if a not in self.required + self.optional]
        if unknown:
            known = ", ".join(self.required + self.optional) or "nothing"
            raise ConditionError(f"{self.name} takes {known}, not {', '.join(unknown)}", at)
        for key, value in args.items():
            if isinstance(value, str) and "{{" in value and (problem := check_syntax(value)):
                raise ConditionError(f"template text does not parse: {problem}", (*at, key))
        if self.checks is not None:
            self.checks(args, at)


def _check_duration(key: str) -> Checker:
    def check(args: dict[str, Any], at: tuple[str | int, ...]) -> None:
        value = args.get(key)
        if value is not None and not (isinstance(value, str) and "{{" in value):
            parse_duration(value, (*at, key))

    return check


def _check_choice(key: str, choices: tuple[str, ...]) -> Checker:
    def check(args: dict[str, Any], at: tuple[str | int, ...]) -> None:
        value = args.get(key)
        if value is not None and not (isinstance(value, str) and "{{" in value) and value not in choices:
            raise ConditionError(f"{key} is one of {', '.join(choices)}", (*at, key))

    return check


def _check_wait(args: dict[str, Any], at: tuple[str | int, ...]) -> None:
    _check_duration("timeout")(args, at)
    _check_choice("on_event", ("stop", "continue"))(args, at)


def _check_set_field(args: dict[str, Any], at: tuple[str | int, ...]) -> None:
    key = (str(args.get("record")), str(args.get("field")))
    if key not in SETTABLE:
        known = ", ".join(f"{r}.{f}" for r, f in SETTABLE)
        raise ConditionError(f"{key[0]}.{key[1]} cannot be set by a rule; settable: {known}", at)


# --- the actions ------------------------------------------------------------------------------


def _set_field(ctx: ActionContext, args: dict[str, Any]) -> dict[str, Any]:
    case = ctx.need_case()
    allowed = SETTABLE[("case", args["field"])]
    if args["value"] not in allowed:
        raise ActionFailed(f"{args['field']} is one of {', '.join(allowed)}")
    before = getattr(case, args["field"])
    if before == args["value"]:
        return {"unchanged": True}
    setattr(case, args["field"], args["value"])
    payload = {"field": args["field"], "from": before, "to": args["value"]}
    record_events(
        ctx.session, Event.about_case(EventType.RECORD_FIELD_SET, case, actor=ctx.actor, payload=payload)
    )
    return {"case_id": case.id}


def _transition(ctx: ActionContext, args: dict[str, Any]) -> dict[str, Any]:
    case = ctx.need_case()
    transition(ctx.session, case, CaseAction(args["action"]), actor=ctx.actor, reason_code=args.get("reason"))
    return {"case_id": case.id, "status": case.status}


def _create_task(ctx: ActionContext, args: dict[str, Any]) -> dict[str, Any]:
    case = ctx.need_case()
    due = ctx.facts.now + parse_duration(args["due_in"], ()) if args.get("due_in") else None
    task = Task(
        id=new_id(), case_id=case.id, kind=str(args["kind"])[:64], assignee=args.get("assignee"), due_at=due
    )
    ctx.session.add(task)
    ctx.session.flush()
    payload = {"task_id": task.id, "kind": task.kind, "assignee": task.assignee}
    record_events(
        ctx.session, Event.about_case(EventType.TASK_CREATED, case, actor=ctx.actor, payload=payload)
    )
    return {"task_id": task.id}


def _dedupe_key(ctx: ActionContext, reason: str) -> str:
    return f"{reason}:{ctx.subject_id}"[:128]


def _open_exception(ctx: ActionContext, args: dict[str, Any]) -> dict[str, Any]:
    reason = str(args["reason"])
    item = open_exception(
        ctx.session,
        str(args["queue"]),
        [reason],
        actor=ctx.actor,
        case=ctx.case,
        location_id=ctx.location_id,
        dedupe_key=_dedupe_key(ctx, reason),
    )
    return {"exception_id": item.id}


def _assign(ctx: ActionContext, args: dict[str, Any]) -> dict[str, Any]:
    """Give the subject's open items in ``queue`` to a role (``role:NAME``) or user (``user:NAME``)."""
    to = str(args["to"])
    if not to.startswith(("role:", "user:")):
        raise ActionFailed("to is role:NAME or user:NAME")
    query = select(ExceptionItem).where(ExceptionItem.status == "open", ExceptionItem.queue == args["queue"])
    query = (
        query.where(ExceptionItem.case_id == ctx.case.id)
        if ctx.case
        else query.where(ExceptionItem.dedupe_key.like(f"%:{ctx.subject_id}"))
    )
    items = [i for i in ctx.session.scalars(query.with_for_update()) if i.assignee != to]
    for item in items:
        item.assignee = to
    record_events(
        ctx.session,
        *(
            Event.about_exception(EventType.EXCEPTION_ASSIGNED, i, actor=ctx.actor, payload={"assignee": to})
            for i in items
        ),
    )
    return {"assigned": len(items)}


# What an action's result names, and the record kind an approval of it decides on.
_MADE_RECORDS = {"replenishment_id": "replenishment", "invoice_id": "invoice", "case_id": "case"}


def _request_approval(ctx: ActionContext, args: dict[str, Any]) -> dict[str, Any]:
    """An approval under a policy of the trigger's record, or of the record an earlier step of
    the run made (``of_step``: its name). The policy routes it; the approvals layer notifies."""
    subject_type, subject_id = ctx.subject_type, ctx.subject_id
    if args.get("of_step"):
        made = ctx.made.get(str(args["of_step"]))
        found = [(kind, made[key]) for key, kind in _MADE_RECORDS.items() if made and made.get(key)]
        if not found:
            raise ActionFailed(f"the step {args['of_step']} made no record an approval can decide on")
        subject_type, subject_id = found[0]
    if subject_type is None or subject_id is None:
        raise ActionFailed(
            "request_approval needs a record: the trigger's, or of_step naming the step that made it"
        )
    request = request_in(
        ctx.session, subject_type, subject_id, str(args["policy"]), actor=ctx.actor, now=ctx.facts.now
    )
    return {"approval_id": request.id, "policy": request.policy, "matched": request.matched}


def _send_message(ctx: ActionContext, args: dict[str, Any]) -> dict[str, Any]:
    channel = args.get("channel", "console")
    message = QueuedMessage(
        id=new_id(),
        channel=channel,
        recipient=str(args["to"])[:200],
        subject=str(args["subject"])[:200],
        body=str(args["body"]),
        case_id=ctx.case.id if ctx.case else None,
        location_id=ctx.location_id,
    )
    ctx.session.add(message)  # written with the run's flush
    payload = {"message_id": message.id, "channel": channel, "recipient": message.recipient.split(":")[0]}
    record_events(ctx.session, _about_subject(ctx, EventType.MESSAGE_QUEUED, payload))
    return {"message_id": message.id}


def _about_subject(ctx: ActionContext, kind: EventType, payload: dict[str, Any]) -> Event:
    if ctx.case is not None:
        return Event.about_case(kind, ctx.case, actor=ctx.actor, payload=payload)
    return Event(
        kind,
        ctx.subject_type or "workflow",
        ctx.subject_id or ctx.workflow,
        ctx.actor,
        location_id=ctx.location_id,
        payload=payload,
    )


def _call_connector(ctx: ActionContext, args: dict[str, Any]) -> dict[str, Any]:
    """``connector.call_queued``: delivered to the named connector (when the connectors file
    subscribes it) like any event, retried, dead-lettered, replayable (integrations.md)."""
    payload = {"connector": args["connector"], "message": args.get("message", "")}
    record_events(ctx.session, _about_subject(ctx, EventType.CONNECTOR_CALL_QUEUED, payload))
    return {"connector": args["connector"]}


def _ask_ai(ctx: ActionContext, args: dict[str, Any]) -> dict[str, Any]:
    """The seam for the AI capability: a recommendation asked for, as an open task on the case."""
    case = ctx.need_case()
    task = Task(id=new_id(), case_id=case.id, kind=f"ai:{args['task']}"[:64])
    ctx.session.add(task)
    ctx.session.flush()
    payload = {"task_id": task.id, "task": args["task"]}
    record_events(
        ctx.session,
        Event.about_case(EventType.AI_RECOMMENDATION_REQUESTED, case, actor=ctx.actor, payload=payload),
    )
    return {"task_id": task.id}


def _check_billing(ctx: ActionContext, args: dict[str, Any]) -> dict[str, Any]:
    found = check_readiness(ctx.session, ctx.need_case(), actor=ctx.actor)
    return {"discrepancies": found}


def _request_invoice(ctx: ActionContext, args: dict[str, Any]) -> dict[str, Any]:
    return {"invoice_id": invoice_case(ctx.session, ctx.need_case(), actor=ctx.actor).id}


def _request_replenishment(ctx: ActionContext, args: dict[str, Any]) -> dict[str, Any]:
    location = ctx.session.get(Location, ctx.location_id) if ctx.location_id else None
    if location is None:
        raise ActionFailed("the trigger names no location")
    quantity = int(args["quantity"])
    record = draft_in(
        ctx.session,
        location,
        [(str(args["item"]), quantity)],
        actor=ctx.actor,
        urgency=str(args.get("urgency", "routine")),
    )
    return {"replenishment_id": record.id, "value": record.value}


def _propose_candidates(ctx: ActionContext, args: dict[str, Any]) -> dict[str, Any]:
    """The best candidates for a staffing conflict (the subject), written into a message to the
    supervisors (the recipient); the supervisor reassigns."""
    if ctx.subject_type != "staff_conflict" or ctx.subject_id is None:
        raise ActionFailed("propose_candidates works on a staffing conflict")
    found = candidates_in(ctx.session, ctx.subject_id, limit=int(args.get("limit", 3)))
    lines = [f"{c['staff']} (score {c['score']})" for c in found["candidates"]] or [
        "nobody can take these visits"
    ]
    body = (
        f"Conflict {ctx.subject_id} ({found['kind']}, {len(found['visits'])} visits). Candidates: "
        + "; ".join(lines)
    )
    message = {
        "to": args.get("to", "role:field_supervisor"),
        "subject": "Staffing conflict: candidates",
        "body": body,
    }
    _send_message(ctx, message)
    return {"candidates": [c["staff"] for c in found["candidates"]]}


ACTIONS: dict[str, ActionSpec] = {
    spec.name: spec
    for spec in (
        ActionSpec(
            "set_field",
            "cases:transition",
            ("record", "field", "value"),
            (),
            "set a settable field of the case (case.priority)",
            _set_field,
            writes=("record.field_set",),
            checks=_check_set_field,
        ),
        ActionSpec(
            "transition",
            "cases:transition",
            ("action",),
            ("reason",),
            "move the case by a case action (hold, resume, cancel, validate, ...)",
            _transition,
            writes=("case.transitioned",),
            checks=_check_choice("action", tuple(CaseAction)),
        ),
        ActionSpec(
            "create_task",
            "cases:transition",
            ("kind",),
            ("assignee", "due_in"),
            "create a task on the case, due after due_in",
            _create_task,
            writes=("task.created",),
            checks=_check_duration("due_in"),
        ),
        ActionSpec(
            "open_exception",
            "exceptions:resolve",
            ("queue", "reason"),
            (),
            "open an item in a queue for the subject (one open item per reason and subject)",
            _open_exception,
            writes=("exception.opened",),
        ),
        ActionSpec(
            "assign",
            "exceptions:resolve",
            ("queue", "to"),
            (),
            "give the subject's open items in a queue to role:NAME or user:NAME",
            _assign,
            writes=("exception.assigned",),
        ),
        ActionSpec(
            "request_approval",
            "approvals:request",
            ("policy",),
            ("of_step",),
            "ask for an approval under a policy: its decision table chooses the chain",
            _request_approval,
            writes=("approval.requested",),
        ),
        ActionSpec(
            "send_message",
            "cases:read",
            ("to", "subject", "body"),
            ("channel",),
            "queue a templated message (masked as for run_as) to a role, user, patient or referrer",
            _send_message,
            writes=("message.queued",),
            checks=_check_choice("channel", CHANNELS),
        ),
        ActionSpec(
            "call_connector",
            "integrations:manage",
            ("connector",),
            ("message",),
            "queue a call of an outbound connector through the outbox",
            _call_connector,
            writes=("connector.call_queued",),
        ),
        ActionSpec(
            "start_workflow",
            "cases:read",
            ("workflow", "rule"),
            (),
            "start another workflow's rule on the same subject (durable: a timer due now)",
            None,
        ),
        ActionSpec(
            "wait",
            "cases:read",
            ("timeout",),
            ("event", "on_event"),
            "wait up to timeout for an event about the subject: on_event stop (default) or continue; "
            "the timeout goes on with the next step",
            None,
            checks=_check_wait,
        ),
        ActionSpec(
            "ask_ai",
            "cases:read",
            ("task",),
            (),
            "ask for an AI recommendation (classify, summarise, triage, draft) as a task",
            _ask_ai,
            writes=("ai.recommendation_requested",),
        ),
        ActionSpec(
            "check_billing_readiness",
            "billing:approve",
            (),
            (),
            "run the billing checklist of a completed case",
            _check_billing,
            writes=("billing.discrepancies_found", "exception.opened", "case.transitioned"),
        ),
        ActionSpec(
            "request_invoice",
            "billing:approve",
            (),
            (),
            "request the invoice of a billing-ready case",
            _request_invoice,
            writes=("invoice.requested",),
        ),
        ActionSpec(
            "request_replenishment",
            "inventory:adjust",
            ("item", "quantity"),
            ("urgency",),
            "draft a replenishment request at the subject's location",
            _request_replenishment,
            writes=("replenishment.drafted",),
        ),
        ActionSpec(
            "propose_candidates",
            "staff:reassign",
            (),
            ("limit", "to"),
            "rank replacements for a staffing conflict and message the supervisors",
            _propose_candidates,
            writes=("message.queued",),
        ),
    )
}


def run_action(name: str, ctx: ActionContext, args: dict[str, Any]) -> dict[str, Any]:
    """Render the arguments with the facts and carry the action out."""
    spec = ACTIONS[name]
    assert spec.run is not None, f"{name} is carried out by the engine"
    return spec.run(ctx, render_value(args, dict(ctx.facts.values)))
