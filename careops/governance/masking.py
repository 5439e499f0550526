"""PHI masking: the one place where a caller's policy turns PHI values into what it may see.

API answers, console pages, exports and connector payloads build their views through
``MaskingPolicy.view``; nothing else decides what is shown. Partial forms keep just enough to
recognise a record (``J****``, birth year, last four digits) and never reveal a value's length.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from careops.domain.phi import PhiCategory
from careops.governance.permissions import CLEAR_MASKING, Masking, Visibility

STARS = "****"


def _clear(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date) else value


_SEPARATORS = b" -()./+_:#"
_NOT_DIGITS = re.compile(r"\D")
_NOT_ALNUM = re.compile(r"[\W_]")


def _text(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.date) else str(value)


def _name(value: Any) -> str:
    text = str(value).strip()
    if " " not in text:  # the usual case: a given or a family name
        return text[:1] + STARS
    words = text.split()
    return " ".join([f"{w[0]}." for w in words[:-1]] + [f"{words[-1][0]}{STARS}"])


def _year(value: Any) -> str:
    return str(value.year) if isinstance(value, dt.date) else str(value)[:4]


def _phone(value: Any) -> str:
    # the usual separators, quickly (bytes.translate is C all the way); anything else below
    digits = str(value).encode().translate(None, _SEPARATORS).decode(errors="replace")
    if not digits.isdigit():
        digits = _NOT_DIGITS.sub("", digits)
    return f"***-***-{digits[-4:]}" if len(digits) > 4 else STARS


def _email(value: Any) -> str:
    local, _, domain = str(value).partition("@")
    return f"{local[:1]}{STARS}@{domain}" if domain else STARS


def _last_four(value: Any) -> str:
    text = str(value)
    kept = text.encode().translate(None, _SEPARATORS).decode(errors="replace")
    if not kept.isalnum():
        kept = _NOT_ALNUM.sub("", kept)
    return f"***-**-{kept[-4:]}" if len(text) > 4 else STARS


def _length_only(value: Any) -> str:
    return f"[{len(_text(value))} characters masked]"


def _hidden(_: Any) -> None:
    return None


PARTIAL = {
    PhiCategory.NAME: _name,
    PhiCategory.BIRTH_DATE: _year,
    PhiCategory.PHONE: _phone,
    PhiCategory.EMAIL: _email,
    PhiCategory.IDENTIFIER: _last_four,
    PhiCategory.CLINICAL_NOTE: _length_only,
    PhiCategory.ATTACHMENT: _length_only,
}
Plan = dict[str, tuple[Callable[[Any], Any], bool]]  # key -> (masker, whether it masks)


@dataclass(frozen=True)
class MaskingPolicy:
    """For each PHI category, what the caller sees: clear, partial or hidden (None)."""

    visibility: Masking
    _plans: dict[int, Plan] = field(default_factory=dict, compare=False, repr=False)
    _projections: dict[tuple[int, int], Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def all_clear(self) -> bool:
        return all(v is Visibility.CLEAR for v in self.visibility.values())

    def sees(self, category: PhiCategory) -> Visibility:
        return self.visibility.get(category, Visibility.HIDDEN)

    def _masker(self, category: PhiCategory) -> Callable[[Any], Any]:
        match self.sees(category):
            case Visibility.CLEAR:
                return _clear
            case Visibility.PARTIAL:
                return PARTIAL[category]
            case _:
                return _hidden

    def value(self, category: PhiCategory, value: Any) -> Any:
        if value is None or value == "":
            return value
        return self._masker(category)(value)

    def _plan(self, tags: dict[str, PhiCategory]) -> Plan:
        """For each tagged key, its masker and whether it masks: worked out once per tag set."""
        plan = self._plans.get(id(tags))
        if plan is None:
            plan = {key: (self._masker(c), self.sees(c) is not Visibility.CLEAR) for key, c in tags.items()}
            self._plans[id(tags)] = plan
        return plan

    def view(self, data: dict[str, Any], tags: dict[str, PhiCategory], prefix: str = "") -> dict[str, Any]:
        """``data``, masked in place and returned: each tagged key masked; masked keys (as
        ``prefix + key``) listed under ``masked`` so that a client can offer to reveal them.
        ``tags`` are module constants (``phi_fields``), so the plan is cached by their identity."""
        masked: list[str] = []
        for key, (masker, masks) in self._plan(tags).items():
            value = data.get(key)
            if value is None or value == "":
                continue
            data[key] = masker(value)
            if masks:
                masked.append(prefix + key if prefix else key)
        if masked:
            data["masked"] = masked
        return data

    def project(self, source: object, keys: tuple[str, ...], tags: dict[str, PhiCategory]) -> dict[str, Any]:
        """``view`` of ``source``'s attributes ``keys``, masked while they are read (no second
        pass): the untagged ones copied as they are, then each tagged one through its masker."""
        plain, tagged = self._projection(keys, tags)
        out = {key: getattr(source, key) for key in plain}
        masked: list[str] = []
        for key, masker, masks in tagged:
            value = getattr(source, key)
            if value is not None and value != "":
                value = masker(value)
                if masks:
                    masked.append(key)
            out[key] = value
        if masked:
            out["masked"] = masked
        return out

    def _projection(
        self, keys: tuple[str, ...], tags: dict[str, PhiCategory]
    ) -> tuple[tuple[str, ...], tuple[tuple[str, Callable[[Any], Any], bool], ...]]:
        cached = self._projections.get((id(keys), id(tags)))
        if cached is None:
            plan = self._plan(tags)
            tagged = tuple((key, *plan[key]) for key in keys if key in plan)
            cached = (tuple(key for key in keys if key not in plan), tagged)
            self._projections[(id(keys), id(tags))] = cached
        return cached

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
