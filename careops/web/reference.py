"""/console/admin/reference: master data by kind with search (retired ones on demand), an edit form
per record (fields as a reference file's CSV cells: lists `a;b`, mappings `K=V;K2=V2`), retire,
and links to what waits in the intake queue on codes careops does not know (each item's page
suggests the mapping). Every change is the same service call the CLI and API make, audited."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError

from careops.db import in_thread
from careops.domain.master_data import KINDS
from careops.errors import CareopsError
from careops.governance.users import ConsoleUser
from careops.orchestration.mappings import UNKNOWN
from careops.orchestration.reference_files import (
    cell,
    get_record,
    list_records,
    put_record,
    record_from_cells,
    retire_record,
)
from careops.web.pages import QueryText, go, member, posted_form, refused_page, render

router = APIRouter(prefix="/console/admin/reference", tags=["console"], include_in_schema=False)
Reader = Annotated[ConsoleUser, Depends(member("reference:read"))]
Writer = Annotated[ConsoleUser, Depends(member("reference:write"))]
EDITABLE = ("locations", "services", "payers", "referrers", "resources")
PAGE = 50


def _kind(kind: str) -> str:
    return kind if kind in KINDS else "services"


@router.get("")
async def reference(
    request: Request, user: Reader, kind: QueryText = "services", q: QueryText = "", retired: bool = False,
    page: int = 1,
) -> Response:  # fmt: skip
    kind, page = _kind(kind), max(1, min(page, 10_000))
    db = request.app.state.db
    rows = await in_thread(
        lambda: list_records(db, kind, q, retired=retired, limit=PAGE + 1, offset=(page - 1) * PAGE)
    )
    spec = KINDS[kind]
    return render(
        "reference.html",
        user,
        title="Reference data",
        kinds=list(KINDS),
        kind=kind,
        q=q,
        retired=retired,
        page=page,
        more=len(rows) > PAGE,
        rows=[_cells(row) for row in rows[:PAGE]],
        columns=list(spec.fields),
        key=spec.key,
        editable=kind in EDITABLE and user.principal.can("reference:write"),
        unknown=[(kind_, reason) for kind_, (reason, _) in UNKNOWN.items()],
    )  # fmt: skip


def _cells(row: dict[str, Any]) -> dict[str, Any]:
    """A record's fields as form cells, with when it was retired."""
    return {name: cell(value) for name, value in row.items() if name != "retired_at"} | {
        "retired_at": row.get("retired_at")
    }


async def _edit_page(
    request: Request, user: ConsoleUser, kind: str, key: str, status: int = 200, **more: Any
) -> Response:
    record: dict[str, Any] = {}
    if key:
        try:
            record = await in_thread(get_record, request.app.state.db, kind, (key,))
        except CareopsError as exc:
            return refused_page(user, exc)
    cells = more.pop("cells", None) or _cells(record)
    return render(
        "reference_edit.html", user, status, title=f"{kind}: {key or 'new'}", kind=kind, key=key,
        fields=list(KINDS[kind].fields), key_field=KINDS[kind].key[0], cells=cells,
        retired_at=record.get("retired_at"), **more,
    )  # fmt: skip


@router.get("/{kind}/edit")
async def edit(request: Request, kind: str, user: Writer, key: QueryText = "") -> Response:
    if kind not in EDITABLE:
        return go("/console/admin/reference")
    return await _edit_page(request, user, kind, key)


@router.post("/{kind}/edit")
async def save(request: Request, kind: str, user: Writer) -> Response:
    """The record as the form gives it: added, changed or restored; or the form again with what is wrong."""
    if kind not in EDITABLE:
        return go("/console/admin/reference")
    form = await posted_form(request, user)
    cells = {name: form.get(name, "") for name in KINDS[kind].fields}
    key = form.get("original_key", "")
    try:
        record = KINDS[kind].record.model_validate(record_from_cells(KINDS[kind], dict(cells))).model_dump()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return await _edit_page(request, user, kind, key, 422, cells=cells, problem=problems)
    reason = form.get("reason", "").strip()[:500] or "changed in the console"
    try:
        applied = await in_thread(
            lambda: put_record(request.app.state.db, kind, record, actor=user.principal.id, reason=reason)
        )
    except CareopsError as exc:
        return await _edit_page(request, user, kind, key, exc.status, cells=cells, problem=exc.detail)
    request.app.state.catalogue.invalidate()
    notice = "; ".join([c.describe() for c in applied.changes] + applied.held) or "nothing changed"
    return await _edit_page(request, user, kind, str(record[KINDS[kind].key[0]]), notice=notice)


@router.post("/{kind}/retire")
async def retire(request: Request, kind: str, user: Writer) -> Response:
    form = await posted_form(request, user)
    key = form.get("key", "")
    reason = form.get("reason", "").strip()[:500] or "retired in the console"
    try:
        await in_thread(
            lambda: retire_record(request.app.state.db, kind, (key,), actor=user.principal.id, reason=reason)
        )
    except CareopsError as exc:
        return refused_page(user, exc)
    request.app.state.catalogue.invalidate()
    return go(f"/console/admin/reference?kind={kind}")
