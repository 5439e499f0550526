"""/api/v1/reference: master data by kind (list and search, read, add or change, retire) and code
mappings (save one: what waited on the code is released). Each change is a business event with
who and why."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from careops.api.contract import answers
from careops.api.deps import DbDep, SettingsDep, require
from careops.db import in_thread
from careops.domain.master_data import KINDS, MappingRecord, Record
from careops.domain.models import PLAIN_TEXT
from careops.errors import Conflict
from careops.governance.principal import Principal
from careops.orchestration.mappings import save_mapping
from careops.orchestration.reference_files import get_record, list_records, put_record, retire_record

router = APIRouter(prefix="/api/v1/reference", tags=["reference data"])
Reader = Annotated[Principal, Depends(require("reference:read"))]
Writer = Annotated[Principal, Depends(require("reference:write"))]
Key = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")]
Reason = Annotated[str, Query(max_length=500, pattern=PLAIN_TEXT, description="Why: recorded on the event.")]
EDITABLE = ("locations", "services", "payers", "referrers", "resources", "items", "suppliers")


class MappingIn(MappingRecord):
    suggested: str | None = Field(
        None, max_length=64, description="The suggestion the person saw first (acceptance is measured)."
    )


class Saved(BaseModel):
    changed: list[str] = Field(description="What changed, as `action kind key (fields)`.")
    held: list[str] = Field(
        description="Changes of fields another system owns, held in the master_data queue."
    )


class Listing(BaseModel):
    items: list[dict[str, Any]]


def _list(kind: str) -> Callable[..., Awaitable[Listing]]:
    async def records(
        db: DbDep,
        _: Reader,
        q: str = Query("", max_length=100, pattern=PLAIN_TEXT),
        retired: bool = Query(False, description="Include retired records (and earlier mapping versions)."),
        limit: int = Query(100, ge=1, le=500),
        offset: int = Query(0, ge=0, le=1_000_000),
    ) -> Listing:
        found = await in_thread(
            lambda: list_records(db, kind, q, retired=retired, limit=limit, offset=offset)
        )
        return Listing(items=found)

    return records


def _get(kind: str) -> Callable[..., Awaitable[dict[str, Any]]]:
    async def record(db: DbDep, key: Key, _: Reader) -> dict[str, Any]:
        return await in_thread(get_record, db, kind, (key,))

    return record


def _put(kind: str, schema: type[Record]) -> Callable[..., Awaitable[Saved]]:
    async def put(db: DbDep, key: Key, body: Record, principal: Writer, reason: Reason = "") -> Saved:
        data = body.model_dump()
        if data[KINDS[kind].key[0]] != key:
            raise Conflict(f"the body's {KINDS[kind].key[0]} is not the one in the path")
        applied = await in_thread(
            lambda: put_record(db, kind, data, actor=principal.id, reason=reason or "changed through the API")
        )
        return Saved(changed=[c.describe() for c in applied.changes], held=applied.held)

    put.__annotations__["body"] = schema  # the kind's record, which no global name holds
    return put


def _retire(kind: str) -> Callable[..., Awaitable[Saved]]:
    async def retire(db: DbDep, key: Key, principal: Writer, reason: Reason = "") -> Saved:
        applied = await in_thread(
            lambda: retire_record(
                db, kind, (key,), actor=principal.id, reason=reason or "retired through the API"
            )
        )
        return Saved(changed=[c.describe() for c in applied.changes], held=applied.held)

    return retire


for _kind in KINDS:
    router.add_api_route(
        f"/{_kind}", _list(_kind), methods=["GET"], name=f"list_{_kind}",
        summary=f"The {_kind}, by key; `q` searches keys and names",
    )  # fmt: skip
for _kind in EDITABLE:
    router.add_api_route(
        f"/{_kind}/{{key}}", _get(_kind), methods=["GET"], name=f"get_{_kind}",
        summary=f"One of the {_kind} (a retired one too)", responses=answers(404),
    )  # fmt: skip
    router.add_api_route(
        f"/{_kind}/{{key}}", _put(_kind, KINDS[_kind].record), methods=["PUT"], name=f"put_{_kind}",
        summary=f"Add, change or restore one of the {_kind}",
        responses=answers(409, s409="The body's key is not the path's, or it names no live record."),
    )  # fmt: skip
    router.add_api_route(
        f"/{_kind}/{{key}}/retire", _retire(_kind), methods=["POST"], name=f"retire_{_kind}",
        summary=f"Retire one of the {_kind}: kept for what names it, no longer resolved by intake",
        responses=answers(404),
    )  # fmt: skip


class Released(BaseModel):
    mapping_id: str
    version: int
    released_cases: list[str] = Field(description="Cases made from items that waited on this code.")
    still_waiting: int = Field(description="Items of this code still waiting on something else.")


@router.post(
    "/mappings",
    summary="Map a sender's code onto a record; what waited on it leaves the queue",
    responses=answers(409, s409="The target is not a live record of the kind."),
)
async def map_code(
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    body: MappingIn,
    principal: Annotated[Principal, Depends(require("mappings:write"))],
) -> Released:
    record = MappingRecord.model_validate(body.model_dump(exclude={"suggested"}))
    saved = await in_thread(
        lambda: save_mapping(
            db, settings, request.app.state.catalogue, record, actor=principal.id, suggested=body.suggested
        )
    )
    return Released(
        mapping_id=saved.mapping_id,
        version=saved.version,
        released_cases=saved.cases,
        still_waiting=saved.still_waiting,
    )
