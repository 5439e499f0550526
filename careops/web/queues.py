"""/console work queues: my work (each queue's count, oldest age and items past their service
level), the exception queues (filter, resolve an intake item by completing its fields) and the
quarantine (show masked, replay, discard with a reason).

Each page is one route and one template (see ``careops.web.pages``); each action posts a form
with the session's CSRF token and answers with the page that shows its result.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError

from careops.db import in_thread
from careops.domain.master_data import MappingRecord
from careops.errors import CareopsError
from careops.governance.users import ConsoleUser, list_users
from careops.integrations.inbound.replay import discard, replay
from careops.orchestration.exception_queue import (
    assign_exceptions,
    fields_to_complete,
    get_exception,
    list_exceptions,
    queue_summary,
    resolve_intake_exception,
)
from careops.orchestration.mappings import save_mapping, waiting_codes
from careops.orchestration.quarantine import count_quarantined, get_quarantined, list_quarantined
from careops.web.pages import QueryText, go, member, posted_form, refused_page, render

router = APIRouter(prefix="/console", tags=["console"], include_in_schema=False)
Anyone = Annotated[ConsoleUser, Depends(member())]
ExceptionReader = Annotated[ConsoleUser, Depends(member("exceptions:read"))]
Resolver = Annotated[ConsoleUser, Depends(member("exceptions:resolve"))]
Mapper = Annotated[ConsoleUser, Depends(member("mappings:write"))]
QuarantineReader = Annotated[ConsoleUser, Depends(member("quarantine:read"))]
QuarantineReplayer = Annotated[ConsoleUser, Depends(member("quarantine:replay"))]
MAX_PAGE = 200
AGES = {"": None, "1h": 3600, "4h": 4 * 3600, "1d": 86400, "7d": 7 * 86400}


@router.get("/work")
async def my_work(request: Request, user: Anyone) -> Response:
    db, principal = request.app.state.db, user.principal
    queues = await in_thread(queue_summary, db, principal.scope) if principal.can("exceptions:read") else []
    quarantined = (
        await in_thread(count_quarantined, db, principal.scope) if principal.can("quarantine:read") else None
    )
    return render("work.html", user, title="My work", queues=queues, quarantined=quarantined)


@router.get("/exceptions")
async def exceptions(
    request: Request,
    user: ExceptionReader,
    queue: QueryText = "intake",
    reason: QueryText = "",
    age: QueryText = "",
    status: QueryText = "open",
    assigned: QueryText = "",
) -> Response:
    """The queue, refreshed in place every few seconds while it is open (htmx), so that new items
    appear without a reload; checked items can be claimed or assigned together."""
    status = status if status in ("open", "resolved") else "open"
    assignee = {"me": user.principal.name, "nobody": ""}.get(assigned)
    db = request.app.state.db
    items = await in_thread(
        lambda: list_exceptions(
            db,
            queue or None,
            status,
            MAX_PAGE,
            user.principal.scope,
            reason=reason or None,
            older_than_seconds=AGES.get(age),
            assignee=assignee,
        )
    )
    can_assign = user.principal.can("exceptions:resolve")
    users = (
        [u.username for u in await in_thread(list_users, db) if u.disabled_at is None] if can_assign else []
    )
    filters = {"queue": queue, "reason": reason, "age": age, "status": status, "assigned": assigned}
    return render(
        "exceptions.html",
        user,
        title="Exceptions",
        items=items,
        filters=filters,
        ages=list(AGES),
        can_assign=can_assign,
        users=users,
        query=request.url.query,
    )


@router.post("/exceptions/assign")
async def assign(request: Request, user: Resolver) -> Response:
    """The checked items (``item-{id}``) to the chosen user (``assignee``: a name, ``-`` for back to
    the queue); the queue again."""
    form = await posted_form(request, user, max_fields=MAX_PAGE + 5)
    ids = [name.removeprefix("item-") for name in form if name.startswith("item-")]
    chosen = form.get("assignee", "") or user.principal.name
    try:
        await in_thread(
            lambda: assign_exceptions(
                request.app.state.db,
                ids,
                None if chosen == "-" else chosen,
                actor=user.principal.id,
                scope=user.principal.scope,
            )
        )
    except CareopsError as exc:
        return refused_page(user, exc)
    return go(f"/console/exceptions?{form.get('back', '')}" if form.get("back") else "/console/exceptions")


async def _exception_page(
    request: Request, user: ConsoleUser, exception_id: str, status: int = 200, **more: Any
) -> Response:
    try:
        item = await in_thread(get_exception, request.app.state.db, exception_id, user.principal.scope)
    except CareopsError as exc:
        return refused_page(user, exc)
    fields = fields_to_complete(item["reason_codes"]) if item["queue"] == "intake" else []
    can_work = user.principal.can("exceptions:resolve") and item["status"] == "open"
    can_resolve = can_work and bool(fields)
    more["can_claim"] = can_work and item["assignee"] != user.principal.name
    if item["queue"] == "intake" and item["status"] == "open":
        more["codes"] = await in_thread(
            waiting_codes, request.app.state.db, exception_id, user.principal.scope
        )
        more["can_map"] = user.principal.can("mappings:write")
    title = f"Exception {exception_id[-8:]}"
    return render(
        "exception.html", user, status, title=title, item=item, fields=fields, can_resolve=can_resolve, **more
    )


@router.get("/exceptions/{exception_id}")
async def exception(request: Request, exception_id: str, user: ExceptionReader) -> Response:
    return await _exception_page(request, user, exception_id)


@router.post("/exceptions/{exception_id}/claim")
async def claim(request: Request, exception_id: str, user: Resolver) -> Response:
    await posted_form(request, user)
    db, principal = request.app.state.db, user.principal
    try:
        await in_thread(
            lambda: assign_exceptions(
                db, [exception_id], principal.name, actor=principal.id, scope=principal.scope
            )
        )
    except CareopsError as exc:
        return refused_page(user, exc)
    return go(f"/console/exceptions/{exception_id}")


@router.post("/exceptions/{exception_id}/resolve")
async def resolve(request: Request, exception_id: str, user: Resolver) -> Response:
    """The missing fields as the form gives them; the case, created once, or the form again with
    what is still wrong."""
    form = await posted_form(request, user)
    values = {name: value.strip() for name, value in form.items() if value.strip()}
    app = request.app
    try:
        outcome = await in_thread(
            lambda: resolve_intake_exception(
                app.state.db,
                exception_id,
                values,
                actor=user.principal.id,
                settings=app.state.settings,
                catalogue=app.state.catalogue,
                scope=user.principal.scope,
            )
        )
    except CareopsError as exc:
        return await _exception_page(
            request, user, exception_id, exc.status, problem=exc.detail, values=values
        )
    return go(f"/console/cases/{outcome['case_id']}" if outcome.get("case_id") else "/console/exceptions")


@router.post("/exceptions/{exception_id}/map")
async def map_code(request: Request, exception_id: str, user: Mapper) -> Response:
    """Save the mapping of one unknown code the item waits on; every item waiting on it (this one
    included) is re-evaluated. To the case when this item became one, else back to the item."""
    form = await posted_form(request, user)
    app = request.app
    try:
        record = MappingRecord.model_validate(
            {name: form.get(name, "").strip() for name in ("sender", "kind", "code", "target")}
        )
    except ValidationError as exc:
        fields = ", ".join(str(error["loc"][0]) for error in exc.errors())
        return await _exception_page(
            request, user, exception_id, 422, problem=f"check the mapping's {fields}"
        )
    try:
        released = await in_thread(
            lambda: save_mapping(
                app.state.db,
                app.state.settings,
                app.state.catalogue,
                record,
                actor=user.principal.id,
                suggested=form.get("suggested") or None,
            )
        )
        item = await in_thread(get_exception, app.state.db, exception_id, user.principal.scope)
    except CareopsError as exc:
        return await _exception_page(request, user, exception_id, exc.status, problem=exc.detail)
    if item["status"] == "resolved" and item["case_id"]:
        return go(f"/console/cases/{item['case_id']}")
    notice = (
        f"Mapped {record.code} to {record.target} for {record.sender}: "
        f"{len(released.cases)} waiting item(s) became cases, "
        f"{released.still_waiting} still wait on something else."
    )
    return await _exception_page(request, user, exception_id, notice=notice)


@router.get("/quarantine")
async def quarantine(request: Request, user: QuarantineReader) -> Response:
    items = await in_thread(list_quarantined, request.app.state.db, MAX_PAGE, user.principal.scope)
    return render("quarantine.html", user, title="Quarantine", items=items)


async def _quarantined_page(
    request: Request, user: ConsoleUser, item_id: str, status: int = 200, **more: Any
) -> Response:
    try:
        item = await in_thread(get_quarantined, request.app.state.db, item_id, user.principal)
    except CareopsError as exc:
        return refused_page(user, exc)
    can_replay = user.principal.can("quarantine:replay")
    title = f"Quarantined {item_id[-8:]}"
    return render("quarantined.html", user, status, title=title, item=item, can_replay=can_replay, **more)


@router.get("/quarantine/{item_id}")
async def quarantined(request: Request, item_id: str, user: QuarantineReader) -> Response:
    return await _quarantined_page(request, user, item_id)


@router.post("/quarantine/{item_id}/replay")
async def replay_item(request: Request, item_id: str, user: QuarantineReplayer) -> Response:
    await posted_form(request, user)
    inbound = request.app.state.inbound
    try:
        outcome = await in_thread(
            lambda: replay(inbound, item_id, actor=user.principal.id, scope=user.principal.scope)
        )
    except CareopsError as exc:
        return await _quarantined_page(request, user, item_id, exc.status, problem=exc.detail)
    if outcome.get("case_id"):
        return go(f"/console/cases/{outcome['case_id']}")
    if outcome.get("exception_id"):
        return go(f"/console/exceptions/{outcome['exception_id']}")
    return go("/console/quarantine")


@router.post("/quarantine/{item_id}/discard")
async def discard_item(request: Request, item_id: str, user: QuarantineReplayer) -> Response:
    form = await posted_form(request, user)
    db = request.app.state.db
    reason = form.get("reason", "")
    try:
        await in_thread(
            lambda: discard(db, item_id, reason, actor=user.principal.id, scope=user.principal.scope)
        )
    except CareopsError as exc:
        return await _quarantined_page(request, user, item_id, exc.status, problem=exc.detail)
    return go("/console/quarantine")
