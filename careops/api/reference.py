"""/api/v1/reference: master data by kind (list and search, read, add or change, retire) and code
mappings (save one: what waited on the code is released). Each change is a business event with
who and why."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from careops.api.contract import answers
from careops.api.deps import DbDep, SettingsDep, require
from careops.db import in_thread
from careops.domain.master_data import KINDS, MappingRecord, Record
from careops.domain.models import PLAIN_TEXT
from careops.errors import NotFound, ValidationFailed
from careops.governance.principal import Principal
from careops.orchestration.mappings import save_mapping
from careops.orchestration.reference_files import get_record, list_records, put_record, retire_record

router = APIRouter(prefix="/api/v1/reference", tags=["reference data"])
Reader = Annotated[Principal, Depends(require("reference:read"))]
Writer = Annotated[Principal, Depends(require("reference:write"))]
KindName = Literal["locations", "services", "payers", "referrers", "mappings", "field_owners"]
Key = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")]
Reason = Annotated[str, Query(max_length=500, pattern=PLAIN_TEXT, description="Why: recorded on the event.")]
EDITABLE = ("locations", "services", "payers", "referrers")


class MappingIn(MappingRecord):
    suggested: str | None = Field(
        None, max_length=64, description="The suggestion the person saw first (acceptance is measured)."
    )


class Saved(BaseModel):
    changed: list[str] = Field(description="What changed, as `action kind key (fields)`.")
    held: list[str] = Field(
        description="Changes of fields another system owns, held in the master_data queue."
    )


@router.get("/{kind}", summary="Records of a kind, by key; `q` searches keys and names")
async def records(
    db: DbDep,
    kind: KindName,
    _: Reader,
    q: str = Query("", max_length=100, pattern=PLAIN_TEXT),
    retired: bool = Query(False, description="Include retired records (and earlier mapping versions)."),
    limit: int = Query(100, ge=1, le=500),
    offset: int = Query(0, ge=0, le=1_000_000),
) -> dict[str, Any]:
    return {
        "items": await in_thread(
            lambda: list_records(db, kind, q, retired=retired, limit=limit, offset=offset)
        )
    }


def _editable(kind: str) -> None:
    if kind not in EDITABLE:
        raise NotFound(f"{kind} are read by key elsewhere: GET /api/v1/reference/{kind}")


@router.get("/{kind}/{key}", summary="One record (a retired one too)", responses=answers(404))
async def record(db: DbDep, kind: KindName, key: Key, _: Reader) -> dict[str, Any]:
    _editable(kind)
    return await in_thread(get_record, db, kind, (key,))


def _put(kind: str, schema: type[Record]) -> Callable[..., Awaitable[Saved]]:
    async def put(db: DbDep, key: Key, body: Record, principal: Writer, reason: Reason = "") -> Saved:
        data = body.model_dump()
        if data[KINDS[kind].key[0]] != key:
            raise ValidationFailed(f"the body's {KINDS[kind].key[0]} is not the one in the path")
        applied = await in_thread(
            lambda: put_record(db, kind, data, actor=principal.id, reason=reason or "changed through the API")
        )
        return Saved(changed=[c.describe() for c in applied.changes], held=applied.held)

    put.__annotations__["body"] = schema  # the kind's record, which no global name holds
    return put


for _kind in EDITABLE:
    router.add_api_route(
        f"/{_kind}/{{key}}",
        _put(_kind, KINDS[_kind].record),
        methods=["PUT"],
        summary=f"Add, change or restore one of the {_kind}",
        responses=answers(422, s422="Invalid, or the key in the body is not the one in the path."),
        name=f"put_{_kind}",
    )


@router.delete("/{kind}/{key}", summary="Retire a record (kept for what names it; intake stops resolving it)",
               responses=answers(404))  # fmt: skip
async def retire(db: DbDep, kind: KindName, key: Key, principal: Writer, reason: Reason = "") -> Saved:
    _editable(kind)
    applied = await in_thread(
        lambda: retire_record(
            db, kind, (key,), actor=principal.id, reason=reason or "retired through the API"
        )
    )
    return Saved(changed=[c.describe() for c in applied.changes], held=applied.held)


class Released(BaseModel):
    mapping_id: str
    version: int
    released_cases: list[str] = Field(description="Cases made from items that waited on this code.")
    still_waiting: int = Field(description="Items of this code still waiting on something else.")


@router.post(
    "/mappings",
    summary="Map a sender's code onto a record; what waited on it leaves the queue",
    responses=answers(422, s422="Invalid, or the target is not a live record of the kind."),
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
