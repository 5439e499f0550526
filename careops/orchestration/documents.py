"""Documents of intake items (attachments, uploads): listed without content, fetched one by one."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from careops.db import Database
from careops.domain.models import Document, IntakeItem
from careops.errors import NotFound
from careops.governance.scoping import LocationScope


def _view(document: Document) -> dict[str, Any]:
    return {
        "id": document.id,
        "intake_item_id": document.intake_item_id,
        "filename": document.filename,
        "content_type": document.content_type,
        "size_bytes": document.size_bytes,
        "sha256": document.sha256,
        "has_text": document.text is not None,
        "links": {"content": f"/api/v1/documents/{document.id}/content"},
    }


def list_documents(db: Database, item_id: str, scope: LocationScope) -> list[dict[str, Any]]:
    with db.sessions() as session:
        item = session.get(IntakeItem, item_id)
        if item is None:
            raise NotFound("no intake item with this id")
        scope.check(item.location_id, "intake item")
        rows = session.scalars(
            select(Document).where(Document.intake_item_id == item_id).order_by(Document.id)
        )
        return [_view(d) for d in rows]


def get_document(db: Database, document_id: str, scope: LocationScope) -> tuple[Document, str | None]:
    """A document with its content, and its extracted text (404 outside the caller's locations)."""
    with db.sessions() as session:
        document = session.get(Document, document_id)
        item = session.get(IntakeItem, document.intake_item_id) if document else None
        if document is None or item is None:
            raise NotFound("no document with this id")
        scope.check(item.location_id, "document")
        return document, document.text
