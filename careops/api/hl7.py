"""/api/v1/hl7: one HL7 v2 message (ER7 text) in, its ACK out.

The HTTP status says whether the message reached careops (200, or 401/403/413/415); the ACK says
what became of it (MSA-1 AA, AE or AR), as an interface engine expects. A body refused as too
large or of another media type is answered with an AR and kept in quarantine.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from careops.api.contract import answers
from careops.api.deps import OversizedBody, SettingsDep, read_body, require
from careops.db import in_thread
from careops.governance.principal import Principal
from careops.integrations.inbound.hl7_channel import ACCEPTED_CONTENT_TYPES, CONTENT_TYPE, Hl7Channel

router = APIRouter(prefix="/api/v1", tags=["hl7"])
_ACK = {"schema": {"type": "string"}}
_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            media: {"schema": {"type": "string"}, "example": "MSH|^~\\&|EHR|GHH|CAREOPS|NORTH|...\rPID|..."}
            for media in sorted(ACCEPTED_CONTENT_TYPES)
        },
    },
    "responses": {
        "200": {"description": "The ACK (MSA-1 AA, AE or AR)", "content": {CONTENT_TYPE: _ACK}},
        **answers(413, 415, media=CONTENT_TYPE),
    },
}


@router.post("/hl7", summary="Submit one HL7 v2 message; the answer is its ACK", openapi_extra=_BODY)
async def submit_hl7(
    request: Request, settings: SettingsDep, principal: Annotated[Principal, Depends(require("intake:write"))]
) -> Response:
    channel: Hl7Channel = request.app.state.inbound.hl7
    try:
        raw = await read_body(request, settings)
    except OversizedBody as exc:
        result = await in_thread(channel.refuse, exc.raw, "http", "hl7:too_large", exc.detail)
        return Response(result.ack, media_type=CONTENT_TYPE, status_code=413)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in ACCEPTED_CONTENT_TYPES:
        detail = f"send the message as one of: {', '.join(sorted(ACCEPTED_CONTENT_TYPES))}"
        result = await in_thread(channel.refuse, raw, "http", "hl7:unsupported_media_type", detail)
        return Response(result.ack, media_type=CONTENT_TYPE, status_code=415)
    result = await in_thread(channel.handle, raw, "http", principal.id, principal.scope)
    return Response(result.ack, media_type=CONTENT_TYPE)
