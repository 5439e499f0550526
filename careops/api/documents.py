"""/api/v1/intake/{id}/documents and /api/v1/documents/{id}: files that came with intake items."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response

from careops.api.deps import DbDep, RecordId, require
from careops.db import in_thread
from careops.governance.principal import Principal
from careops.orchestration.documents import get_document, list_documents

router = APIRouter(prefix="/api/v1", tags=["documents"])
Reader = Annotated[Principal, Depends(require("exceptions:read"))]


@router.get("/intake/{item_id}/documents", summary="The documents of an intake item (no content)")
async def documents(db: DbDep, item_id: RecordId, principal: Reader) -> dict[str, Any]:
    return {"items": await in_thread(list_documents, db, item_id, principal)}


@router.get(
    "/documents/{document_id}/content",
    summary="A document's file, as it arrived",
    response_class=Response,
    responses={"200": {"description": "The file, in its own media type", "content": {"*/*": {}}}},
)
async def document_content(db: DbDep, document_id: RecordId, principal: Reader) -> Response:
    document, _ = await in_thread(get_document, db, document_id, principal)
    safe = "".join(c for c in document.filename if c.isalnum() or c in "._- ")[:100] or "document"
    headers = {"Content-Disposition": f'attachment; filename="{safe}"'}
    return Response(document.content, media_type=document.content_type, headers=headers)


@router.get(
    "/documents/{document_id}/text",
    summary="A document's extracted text (PDF, text)",
    response_class=Response,
    responses={
        "200": {"description": "The text", "content": {"text/plain": {"schema": {"type": "string"}}}},
        "204": {"description": "No text could be extracted"},
    },
)
async def document_text(db: DbDep, document_id: RecordId, principal: Reader) -> Response:
    _, text = await in_thread(get_document, db, document_id, principal)
    return Response(text or "", media_type="text/plain; charset=utf-8", status_code=200 if text else 204)
