"""The SMTP listener for referral emails (aiosmtpd): an email is answered 250 only once stored.

Every HTTP worker of ``careops serve --smtp-port`` listens on the shared port. A refused email
(a sender not on the allowlist, not an RFC 5322 message) is kept in quarantine and answered 550;
one over ``smtp_max_bytes`` is answered 552 by aiosmtpd before its body is taken; a failure to
store is answered 451, so the sending server tries again later. Never a silent drop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from careops.integrations.inbound.email_channel import EmailChannel, EmailRefused
from careops.observability.logs import get_logger

log = get_logger("careops.smtp")


class ReferralMailbox:
    """aiosmtpd handler: every recipient is accepted; DATA decides."""

    def __init__(self, channel: EmailChannel) -> None:
        self.channel = channel

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", errors="surrogateescape")
        sender = envelope.mail_from or None
        recipients = [str(r) for r in envelope.rcpt_tos]
        try:
            answer = await asyncio.to_thread(self.channel.receive, raw, sender, recipients)
        except EmailRefused as refused:
            return f"550 5.7.1 {refused.detail}"
        except Exception as exc:  # the database is unreachable, ...: nothing stored, try later
            log.error("smtp.message_failed", error=type(exc).__name__)
            return "451 4.3.0 not stored; please try again later"
        return f"250 2.0.0 accepted as {answer.body['intake_item_id']}"


class LenientSMTP(SMTP):
    """Takes lines longer than RFC 5321's 1,000 octets: real mailers send them, and an email
    refused for its line length would be lost to the referral it carries."""

    line_length_limit = 1024 * 1024


async def start_smtp(channel: EmailChannel, host: str, port: int, max_bytes: int) -> asyncio.Server:
    """Listen on ``host:port`` (shared between processes); the caller closes the server."""
    loop = asyncio.get_running_loop()
    mailbox = ReferralMailbox(channel)

    def protocol() -> Any:
        return LenientSMTP(mailbox, data_size_limit=max_bytes, enable_SMTPUTF8=True, decode_data=False)

    return await loop.create_server(protocol, host, port, reuse_port=True)
