"""PHI masking: the one place where a caller's policy turns PHI values into what it may see.

API answers, console pages, exports and connector payloads build their views through
``MaskingPolicy.view``; nothing else decides what is shown. Partial forms keep just enough to
recognise a record (``J****``, birth year, last four digits) and never reveal a value's length.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from careops.domain.phi import PhiCategory
from careops.governance.permissions import CLEAR_MASKING, Masking, Visibility

STARS = "****"


def _last_four(value: str) -> str:
    kept = "".join(ch for ch in value if ch.isalnum())[-4:]
    return f"***-**-{kept}" if len(value) > 4 else STARS


def _partial(category: PhiCategory, value: Any) -> Any:
    text = value.isoformat() if isinstance(value, dt.date) else str(value)
    match category:
        case PhiCategory.NAME:
            words = text.split()
            return " ".join([f"{w[0]}." for w in words[:-1]] + [f"{words[-1][0]}{STARS}"]) if words else STARS
        case PhiCategory.BIRTH_DATE:
            return text[:4]
        case PhiCategory.PHONE:
            digits = "".join(ch for ch in text if ch.isdigit())
            return f"***-***-{digits[-4:]}" if len(digits) > 4 else STARS
        case PhiCategory.EMAIL:
            local, _, domain = text.partition("@")
            return f"{local[:1]}{STARS}@{domain}" if domain else STARS
        case PhiCategory.IDENTIFIER:
            return _last_four(text)
        case _:
            return f"[{len(text)} characters masked]"


@dataclass(frozen=True)
class MaskingPolicy:
    """For each PHI category, what the caller sees: clear, partial or hidden (None)."""

    visibility: Masking

    @property
    def all_clear(self) -> bool:
        return all(v is Visibility.CLEAR for v in self.visibility.values())

    def sees(self, category: PhiCategory) -> Visibility:
        return self.visibility.get(category, Visibility.HIDDEN)

    def value(self, category: PhiCategory, value: Any) -> Any:
        if value is None or value == "":
            return value
        match self.sees(category):
            case Visibility.CLEAR:
                return value.isoformat() if isinstance(value, dt.date) else value
            case Visibility.PARTIAL:
                return _partial(category, value)
            case _:
                return None

    def view(self, data: dict[str, Any], tags: dict[str, PhiCategory], prefix: str = "") -> dict[str, Any]:
        """``data`` with each tagged key masked; masked keys (as ``prefix + key``) listed under
        ``masked`` so that a client can offer to reveal them."""
        out = dict(data)
        masked: list[str] = []
        for key, category in tags.items():
            if key not in out:
                continue
            if self.sees(category) is not Visibility.CLEAR and out[key] not in (None, ""):
                masked.append(prefix + key)
            out[key] = self.value(category, out[key])
        if masked:
            out["masked"] = masked
        return out

    def fhir_resource(self, resource: dict[str, Any]) -> dict[str, Any]:
        """A FHIR resource for a reader who does not see everything in clear: without what can hold
        PHI (contained resources, notes, narrative, references' display texts), labelled REDACTED
        in ``meta.security`` as FHIR's security labels say."""
        if self.all_clear:
            return resource
        kept = {k: _without_display(v) for k, v in resource.items() if k not in _FHIR_FREE_TEXT}
        meta = dict(kept.get("meta") or {})
        meta["security"] = [*meta.get("security", []), REDACTED_LABEL]
        return {**kept, "meta": meta}


_FHIR_FREE_TEXT = frozenset({"contained", "note", "text", "supportingInfo", "patientInstruction"})
REDACTED_LABEL = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "REDACTED",
    "display": "redacted",
}


def _without_display(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_display(v) for k, v in value.items() if k != "display"}
    if isinstance(value, list):
        return [_without_display(v) for v in value]
    return value


CLEAR = MaskingPolicy(CLEAR_MASKING)
