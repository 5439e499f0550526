"""Documents of intake items (attachments, uploads): listed without content, fetched one by one."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from careops.db import Database
from careops.domain.models import Document, IntakeItem, find
from careops.domain.phi import PhiCategory, phi_fields
from careops.errors import Forbidden, NotFound
from careops.governance.masking import MaskingPolicy
from careops.governance.permissions import Visibility
from careops.governance.phi_access import record_phi_read
from careops.governance.principal import Principal

DOCUMENT_PHI = phi_fields(Document)


def _view(document: Document, masking: MaskingPolicy) -> dict[str, Any]:
    view = {
        "id": document.id,
        "intake_item_id": document.intake_item_id,
        "filename": document.filename,
        "content_type": document.content_type,
        "size_bytes": document.size_bytes,
        "sha256": document.sha256,
        "has_text": document.text is not None,
        "links": {"content": f"/api/v1/documents/{document.id}/content"},
    }
    return masking.view(view, DOCUMENT_PHI)


def list_documents(db: Database, item_id: str, reader: Principal) -> list[dict[str, Any]]:
    with db.sessions() as session:
        item = find(session, IntakeItem, item_id)
        if item is None:
            raise NotFound("no intake item with this id")
        reader.scope.check(item.location_id, "intake item")
        rows = session.scalars(
            select(Document).where(Document.intake_item_id == item_id).order_by(Document.id)
        )
        return [_view(d, reader.masking) for d in rows]


def get_document(db: Database, document_id: str, reader: Principal) -> tuple[Document, str | None]:
    """A document with its content and extracted text (404 outside the reader's locations), for a
    reader whose policy shows attachments in clear; audited as ``phi.read``."""
    with db.sessions() as session:
        document = find(session, Document, document_id)
        item = session.get(IntakeItem, document.intake_item_id) if document else None
        if document is None or item is None:
            raise NotFound("no document with this id")
        reader.scope.check(item.location_id, "document")
    if reader.masking.sees(PhiCategory.ATTACHMENT) is not Visibility.CLEAR:
        raise Forbidden(
            "your roles do not show attachments in clear (they need phi:read or a role that does)"
        )
    record_phi_read(db, reader, "document", [{"id": document.id}])
    return document, document.text
