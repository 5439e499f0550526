"""Every inbound channel of one process, built once over the same database and catalogue."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from careops.db import Database
from careops.integrations.inbound.email_channel import EmailChannel
from careops.integrations.inbound.fhir_channel import FhirChannel
from careops.integrations.inbound.hl7_channel import Hl7Channel
from careops.integrations.inbound.mllp import start_mllp, tls_context
from careops.integrations.inbound.smtp import start_smtp
from careops.integrations.inbound.webform import WebForm
from careops.orchestration.intake import CatalogueCache
from careops.settings import Settings

if TYPE_CHECKING:
    from careops.orchestration.worker import Listening


@dataclass(frozen=True)
class Inbound:
    hl7: Hl7Channel
    fhir: FhirChannel
    email: EmailChannel
    form: WebForm

    @classmethod
    def build(cls, db: Database, settings: Settings, catalogue: CatalogueCache) -> Inbound:
        return cls(
            Hl7Channel(db, settings, catalogue),
            FhirChannel(db, settings, catalogue),
            EmailChannel(db, settings, catalogue),
            WebForm(db, settings, catalogue),
        )

    async def listen(self, settings: Settings) -> list[Listening]:
        """The network listeners the settings ask for (MLLP, SMTP), on this process's loop."""
        servers: list[Listening] = []
        if settings.mllp_port is not None:
            servers.append(
                await start_mllp(
                    self.hl7,
                    settings.mllp_host,
                    settings.mllp_port,
                    settings.mllp_max_bytes,
                    settings.mllp_allowed_peers,
                    tls_context(settings.mllp_tls_cert, settings.mllp_tls_key, settings.mllp_tls_client_ca),
                )
            )
        if settings.smtp_port is not None:
            servers.append(
                await start_smtp(self.email, settings.smtp_host, settings.smtp_port, settings.smtp_max_bytes)
            )
        return servers
