"""Every inbound channel of one process, built once over the same database and catalogue."""

from __future__ import annotations

from dataclasses import dataclass

from careops.db import Database
from careops.integrations.inbound.fhir_channel import FhirChannel
from careops.integrations.inbound.hl7_channel import Hl7Channel
from careops.orchestration.intake import CatalogueCache
from careops.settings import Settings


@dataclass(frozen=True)
class Inbound:
    hl7: Hl7Channel
    fhir: FhirChannel

    @classmethod
    def build(cls, db: Database, settings: Settings, catalogue: CatalogueCache) -> Inbound:
        return cls(Hl7Channel(db, settings, catalogue), FhirChannel(db, settings, catalogue))
