"""Which fields hold protected health information (PHI), and of what kind.

Columns are tagged where they are declared (``info={"phi": PhiCategory.NAME}``), so that a new
PHI column is tagged in the same line that adds it; ``phi_fields`` reads the tags back.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import inspect


class PhiCategory(StrEnum):
    NAME = "name"
    BIRTH_DATE = "birth_date"
    PHONE = "phone"
    EMAIL = "email"
    IDENTIFIER = "identifier"
    CLINICAL_NOTE = "clinical_note"
    ATTACHMENT = "attachment"


def phi(category: PhiCategory) -> dict[str, Any]:
    """The ``info`` of a PHI column."""
    return {"phi": category}


def phi_fields(model: type[Any]) -> dict[str, PhiCategory]:
    """Attribute name → category for every tagged column of ``model``."""
    return {
        attribute.key: attribute.columns[0].info["phi"]
        for attribute in inspect(model).column_attrs
        if "phi" in attribute.columns[0].info
    }
