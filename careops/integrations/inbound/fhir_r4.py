"""FHIR R4 resources in: validation (fhir.resources), references, mapping to the intake model, and
the FHIR shapes careops answers with (OperationOutcome, Task, CapabilityStatement).

Validation uses the R4B models of ``fhir.resources`` (R4B differs from R4 4.0.1 in none of the
elements read here). Nothing in this module touches the database; ``fhir_channel`` does.
"""

from __future__ import annotations

import base64
import mimetypes
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError
from pydantic_core import from_json

from careops.domain.referrals import PatientIn, ReferralIn, ReferrerIn
from careops.integrations.inbound import fhir_precheck

FHIR_JSON = "application/fhir+json"
# What a referral Bundle may hold: the request and what it points at.
CONTEXT_TYPES = frozenset(
    {"Patient", "Practitioner", "PractitionerRole", "Organization", "Coverage", "Location"}
)
ACCEPTED_TYPES = frozenset({"ServiceRequest", "DocumentReference", *CONTEXT_TYPES})
_PRIORITY = {"routine": "routine", "urgent": "urgent", "asap": "urgent", "stat": "stat"}
_GENDER = {"male": "male", "female": "female", "other": "other", "unknown": "unknown"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_REFERENCE = re.compile(
    r"^(?:(?P<base>https?://\S+?)/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})$"
)


class FhirError(Exception):
    """A request careops refuses, as an OperationOutcome: HTTP status, issue code, where, and why."""

    def __init__(
        self,
        status: int,
        code: str,
        diagnostics: str,
        expression: str | None = None,
        more: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics
        # An expression can name the client's own keys: no control character goes on from it (a
        # NUL cannot even be stored in PostgreSQL, where the quarantine keeps the reason).
        self.expression = _printable(expression) if expression else expression
        self.more = [(text, _printable(where)) for text, where in more or []]  # further issues

    def outcome(self) -> dict[str, Any]:
        outcome = operation_outcome("error", self.code, self.diagnostics, self.expression)
        outcome["issue"] += [
            {"severity": "error", "code": self.code, "diagnostics": text, "expression": [where]}
            for text, where in self.more
        ]
        return outcome

    @property
    def reason(self) -> str:
        where = f":{self.expression}" if self.expression else ""
        return f"fhir:{self.code}{where}"[:200]


def _printable(text: str) -> str:
    return _CONTROL.sub("?", text)


def operation_outcome(
    severity: str, code: str, diagnostics: str, expression: str | None = None
) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def parse_json(raw: bytes) -> dict[str, Any]:
    """The JSON document ``raw`` (UTF-8, a byte order mark allowed); 400 ``structure`` naming where
    it stops being JSON. pydantic-core's parser: JSON's grammar only (no ``NaN`` or ``Infinity``,
    which Python's takes), valid Unicode only (no lone surrogate), nesting up to 200 deep, at about
    two thirds of ``json.loads``'s time."""
    try:
        document = from_json(raw.removeprefix(_BOM), allow_inf_nan=False)
    except ValueError as exc:  # the message says where, never what (no PHI)
        raise FhirError(400, "structure", f"the body is not JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("resourceType"), str):
        raise FhirError(400, "structure", "the body is not a FHIR resource (no resourceType)", "resourceType")
    return document


_BOM = b"\xef\xbb\xbf"


def may_hold_null(raw: bytes) -> bool:
    """False when the JSON text ``raw`` has no ``null`` anywhere, so that no element of what it
    parses to is null (JSON spells null one way only): the walk looking for them can be skipped."""
    return b"null" in raw


def validate(resource: dict[str, Any], path: str, nulls: bool = True, checked: bool = False) -> None:
    """Check a resource against its FHIR R4 model and required code bindings; 400 naming every
    offending element (the first in ``expression``, the others as further issues). ``nulls``:
    whether the resource may hold null elements (``may_hold_null`` of its JSON text);
    ``checked``: whether ``fhir_precheck`` has accepted it already (with its Bundle).

    ``fhir_precheck`` answers for the model in one pass when it can be sure the resource is
    valid; otherwise the model itself is asked, and its errors are the ones reported."""
    issues = _code_issues(resource, path) + _date_issues(resource, path)
    issues += _null_elements(resource, path) if nulls else []
    if not checked:
        issues += _model_issues(resource, path)
    if issues:
        (first, where), more = issues[0], issues[1:]
        raise FhirError(400, "invalid", first, where, more)


def _model_issues(resource: dict[str, Any], path: str) -> list[tuple[str, str]]:
    resource_type = resource.get("resourceType")
    try:
        model = get_fhir_model_class(str(resource_type))
    except (KeyError, ValueError) as exc:
        raise FhirError(
            400, "not-supported", f"unknown resource type {resource_type!r}", f"{path}.resourceType"
        ) from exc
    issues: list[tuple[str, str]] = []
    if not fhir_precheck.accepts(resource):
        try:
            model.model_validate(resource)
        except ValidationError as exc:
            issues += [
                (str(e.get("msg", "invalid")), _expression(path, e.get("loc", ()))) for e in exc.errors()[:20]
            ]
        except (AttributeError, TypeError) as exc:
            # fhir.resources fails this way on some wrong shapes, e.g. a primitive's
            # ``_element`` given as a JSON string of a number
            issues.append((f"an element does not have its FHIR type ({type(exc).__name__})", path))
    return issues


def request_schema(resource_type: str) -> dict[str, Any]:
    """What the OpenAPI document says a route takes: the resource's type and required elements,
    with their codes where the binding is required. FHIR's data types and invariants go beyond
    JSON Schema: ``validate`` checks those, and a request within this schema may still be a 400
    naming the element."""
    codes = _REQUIRED_CODES.get(resource_type, {})
    required = {"ServiceRequest": ["status", "intent", "subject"], "Bundle": ["type"]}.get(resource_type, [])
    properties: dict[str, Any] = {"resourceType": {"const": resource_type}}
    properties.update({name: {"enum": sorted(codes[name])} for name in required if name in codes})
    if resource_type == "ServiceRequest":
        properties["subject"] = {"type": "object", "description": "Reference(Patient)"}
    if resource_type == "Bundle":
        properties["type"] = {"enum": ["batch", "transaction"]}
        properties["entry"] = {"type": "array", "items": {"type": "object"}}
    return {
        "type": "object",
        "required": ["resourceType", *required],
        "properties": properties,
        "description": f"A FHIR R4 {resource_type} (JSON).",
    }


def prepare_validation() -> None:
    """Compile ``fhir_precheck`` for every type ``validate`` is asked about in a referral Bundle."""
    fhir_precheck.warm(sorted(ACCEPTED_TYPES | {"Bundle"}), bundle_of=ACCEPTED_TYPES)


# Elements with a required binding that the models do not check (R4 4.0.1 value sets), by type.
_GENDERS = frozenset({"male", "female", "other", "unknown"})
_REQUIRED_CODES: dict[str, dict[str, frozenset[str]]] = {
    "ServiceRequest": {
        "status": frozenset(
            {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"}
        ),
        "intent": frozenset(
            {
                "proposal",
                "plan",
                "directive",
                "order",
                "original-order",
                "reflex-order",
                "filler-order",
                "instance-order",
                "option",
            }
        ),
        "priority": frozenset({"routine", "urgent", "asap", "stat"}),
    },
    "Observation": {
        "status": frozenset(
            {
                "registered",
                "preliminary",
                "final",
                "amended",
                "corrected",
                "cancelled",
                "entered-in-error",
                "unknown",
            }
        )
    },
    "DocumentReference": {"status": frozenset({"current", "superseded", "entered-in-error"})},
    "Coverage": {"status": frozenset({"active", "cancelled", "draft", "entered-in-error"})},
    "Patient": {"gender": _GENDERS},
    "Practitioner": {"gender": _GENDERS},
}


def _code_issues(resource: dict[str, Any], path: str) -> list[tuple[str, str]]:
    kind = str(resource.get("resourceType"))
    issues = []
    for element, codes in _REQUIRED_CODES.get(kind, {}).items():
        value = resource.get(element)
        # Not a string at all: the model says so (a list or an object cannot be looked up here).
        if isinstance(value, str) and value not in codes:
            # The value itself is not repeated: an error message never carries what could be PHI.
            allowed = ", ".join(sorted(codes))
            issues.append((f"{kind}.{element} is not one of its codes ({allowed})", f"{path}.{element}"))
    return issues


# A resource's own date and time elements: FHIR JSON writes them as strings, but the models let a
# number through (``birthDate: 0``), which the mapping then could not take (a 500).
_DATE_ELEMENTS = frozenset(
    {"birthDate", "authoredOn", "occurrenceDateTime", "issued", "effectiveDateTime", "recorded", "date",
     "deceasedDateTime", "start", "end", "created"}
)  # fmt: skip


def _date_issues(resource: dict[str, Any], path: str) -> list[tuple[str, str]]:
    kind = str(resource.get("resourceType"))
    return [
        (f"{kind}.{key} is a date or time, written as a string (e.g. 1980-04-12)", f"{path}.{key}")
        for key in _DATE_ELEMENTS.intersection(resource)
        if resource[key] is not None and not isinstance(resource[key], str)
    ]


# A tuple, not ``dict | list``: that expression builds a union object at every call (~5x slower).
_CONTAINERS = (dict, list)


def _null_elements(node: Any, path: str) -> list[tuple[str, str]]:
    """Elements given as JSON null, which FHIR JSON does not allow (an element is left out
    instead); the models let them pass. A null inside a primitive array stays: it lines a value up
    with its extension."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if value is None:
                found.append(
                    ("an element is null: FHIR JSON leaves out an element without a value", f"{path}.{key}")
                )
            elif isinstance(value, _CONTAINERS):
                found += _null_elements(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            if isinstance(value, _CONTAINERS):
                found += _null_elements(value, f"{path}[{i}]")
    return found


def _expression(path: str, location: tuple[Any, ...]) -> str:
    """A pydantic error location as a FHIRPath-like expression: ``Bundle.entry[1].resource.status``."""
    expression = path
    for part in location:
        if isinstance(part, int):
            expression += f"[{part}]"
        elif not str(part).startswith("function-"):
            expression += f".{part}"
    return expression


@dataclass
class Entry:
    index: int
    full_url: str | None
    resource: dict[str, Any]
    method: str
    url: str
    if_none_exist: str | None
    alone: bool = False  # posted by itself (POST /ServiceRequest), not in a Bundle
    type: str = field(init=False)  # the resource's resourceType
    # Worked out on first use (not functools.cached_property: Python 3.11's takes a lock each time).
    _references: list[str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.type = str(self.resource.get("resourceType"))

    @property
    def path(self) -> str:
        return f"Bundle.entry[{self.index}]"

    @property
    def resource_path(self) -> str:
        """Where the resource is, for error expressions: in its entry, or itself when posted alone."""
        return self.type if self.alone else f"{self.path}.resource"

    @property
    def references(self) -> list[str]:
        """Every reference in the resource (contained resources aside), walked once per request."""
        if self._references is None:
            self._references = []
            _collect_references(self.resource, self._references)
        return self._references

    def where(self, target: str) -> str:
        """Where the resource references ``target`` first, as an expression (for an error)."""
        return _place_of(self.resource, target, self.resource_path) or self.resource_path


@dataclass
class Bundle:
    kind: str  # transaction | batch
    entries: list[Entry]
    nulls: bool = True  # whether its resources may hold null elements (``may_hold_null``)
    checked: bool = False  # whether fhir_precheck accepted it with every entry's resource
    _index: dict[str, Entry] = field(default_factory=dict)
    _links: dict[int, list[Entry]] = field(default_factory=dict)
    _referrers: dict[int, list[Entry]] | None = None

    def __post_init__(self) -> None:
        for entry in self.entries:
            if entry.full_url:
                self._index[entry.full_url] = entry
            if entry.resource.get("id"):
                self._index[f"{entry.type}/{entry.resource['id']}"] = entry

    def resolve(
        self, reference: dict[str, Any] | None, resource: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """The resource a Reference points at: a contained one (#id), an entry by fullUrl or Type/id."""
        if not reference or not isinstance(reference.get("reference"), str):
            return None
        return self.find(reference["reference"], resource)

    def find(self, target: str, resource: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The resource a reference string names (``resolve`` of a Reference with it)."""
        if target.startswith("#"):
            contained = resource.get("contained", []) if resource is not None else []
            return next((c for c in contained if c.get("id") == target[1:]), None)
        found = self._entry(target)
        return found.resource if found else None

    def linked(self, entry: Entry) -> list[Entry]:
        """The entries ``entry``'s resource references (contained resources aside), each once, in
        the order of its references; worked out once per entry."""
        links = self._links.get(entry.index)
        if links is None:
            links = self._links[entry.index] = []
            for target in entry.references:
                found = None if target.startswith("#") else self._entry(target)
                if found is not None and all(found is not link for link in links):
                    links.append(found)
        return links

    def referrers(self, entry: Entry) -> list[Entry]:
        """The entries whose resources reference ``entry``'s, in Bundle order."""
        if self._referrers is None:
            self._referrers = {}
            for source in self.entries:
                for target in self.linked(source):
                    self._referrers.setdefault(target.index, []).append(source)
        return self._referrers.get(entry.index, [])

    def _entry(self, target: str) -> Entry | None:
        found = self._index.get(target)
        if found is None:
            match = _REFERENCE.match(target)
            found = self._index.get(f"{match['type']}/{match['id']}") if match else None
        return found


def read_bundle(document: dict[str, Any], nulls: bool = True) -> Bundle:
    """A transaction or batch Bundle; its shell is validated here, each entry's resource by itself
    later (validating them one by one with the models costs a third of validating them inside the
    Bundle), unless ``fhir_precheck`` accepts the Bundle with them all in one pass first (what it
    does for a valid referral). ``nulls``: whether the document may hold null elements
    (``may_hold_null`` of its JSON text)."""
    checked = fhir_precheck.accepts_bundle(document, ACCEPTED_TYPES)
    if not checked or nulls:  # checked and without nulls, the shell has nothing left to check
        shell = dict(document)
        if isinstance(document.get("entry"), list):
            shell["entry"] = [
                {k: v for k, v in e.items() if k != "resource"} if isinstance(e, dict) else e
                for e in document["entry"]
            ]
        validate(shell, "Bundle", nulls, checked)
    kind = document.get("type")
    if kind not in ("transaction", "batch"):
        raise FhirError(400, "invalid", "the Bundle's type must be transaction or batch", "Bundle.type")
    entries = []
    for index, raw_entry in enumerate(document.get("entry") or []):
        if not isinstance(raw_entry, dict):
            raise FhirError(400, "structure", "a Bundle entry must be an object", f"Bundle.entry[{index}]")
        resource = raw_entry.get("resource")
        request = raw_entry.get("request") or {}
        path = f"Bundle.entry[{index}]"
        method = str(request.get("method", "")).upper()
        if not isinstance(resource, dict):
            if method in ("POST", "PUT"):
                raise FhirError(400, "required", f"a {method} entry needs a resource", f"{path}.resource")
            resource = {"resourceType": str(request.get("url", "")).split("/")[0].split("?")[0] or "(none)"}
        entries.append(
            Entry(
                index,
                raw_entry.get("fullUrl"),
                resource,
                method,
                str(request.get("url", "")),
                request.get("ifNoneExist"),
            )
        )
    return Bundle(kind, entries, nulls=nulls, checked=checked)


def check_references(entry: Entry, bundle: Bundle) -> None:
    """400 for a reference of ``entry`` that cannot be right: a local one (``urn:uuid:``,
    ``urn:oid:``, ``#id``) that ``Bundle.resolve`` finds nowhere, or one that is neither
    ``Type/id`` nor ``Type?search`` of a real type."""
    for target in entry.references:
        if target.startswith(("#", "urn:uuid:", "urn:oid:")):
            # "#" alone is the container itself
            if target != "#" and bundle.find(target, entry.resource) is None:
                detail = "the reference names no entry of the Bundle (fullUrl) or contained resource (#id)"
                raise FhirError(400, "invalid", detail, entry.where(target))
            continue
        if _REFERENCE.match(target):
            continue
        type_name = target.split("?", 1)[0]
        try:
            get_fhir_model_class(type_name)
        except (KeyError, ValueError) as exc:
            raise FhirError(
                400,
                "invalid",
                "the reference names no resource type (Type/id, or a fullUrl in the Bundle)",
                entry.where(target),
            ) from exc


def _collect_references(node: dict[str, Any], found: list[str]) -> None:
    """Append every ``reference`` string under ``node`` to ``found``: an element's own before
    those inside it, elements in document order (contained resources aside; FHIR JSON has no
    array directly in an array)."""
    reference = node.get("reference")
    if type(reference) is str:
        found.append(reference)
    for key, value in node.items():
        if type(value) is dict and key != "contained":
            _collect_references(value, found)
        elif type(value) is list and key != "contained":
            for item in value:
                if type(item) is dict:
                    _collect_references(item, found)


def _place_of(node: dict[str, Any], target: str, path: str) -> str | None:
    """Where under ``node`` (at ``path``) the first ``reference`` to ``target`` is, in the order
    ``_collect_references`` finds them; None if nowhere."""
    if node.get("reference") == target:
        return f"{path}.reference"
    for key, value in node.items():
        if key == "contained":
            continue
        if type(value) is dict and (place := _place_of(value, target, f"{path}.{key}")):
            return place
        if type(value) is list:
            for i, item in enumerate(value):
                if type(item) is dict and (place := _place_of(item, target, f"{path}.{key}[{i}]")):
                    return place
    return None


def referral(
    request: dict[str, Any],
    bundle: Bundle,
    location: str | None,
    known_service: Callable[[str], bool] | None = None,
) -> ReferralIn:
    """A ServiceRequest (with what it references) as a referral for ``location``: the service is
    the first of its codes, ``system|code`` pairs and text that ``known_service`` knows (a code of
    the catalogue or of the sender's mappings), else its first ``system|code`` pair (what a
    mapping then names), else its first code or text."""
    patient_resource = bundle.resolve(request.get("subject"), request)
    codings = [c for c in (request.get("code") or {}).get("coding", []) if c.get("code")]
    codes = [c["code"] for c in codings]
    qualified = [f"{c['system']}|{c['code']}" for c in codings if c.get("system")]
    text = (request.get("code") or {}).get("text")
    pairs = [q for q in qualified if len(q) <= 64]
    candidates = [*codes, *pairs, *([text] if text else [])]
    service = next((c for c in candidates if known_service and known_service(c)), None)
    service = service or next(iter([*pairs, *candidates]), None)
    coverages = (bundle.resolve(ref, request) for ref in request.get("insurance", []))
    coverage = next((found for found in coverages if found), None)
    notes = [n.get("text", "") for n in request.get("note", [])] + [
        r.get("text", "") for r in request.get("reasonCode", [])
    ]
    names = [c.get("display") for c in codings if c.get("display")] + ([text] if text else [])
    return ReferralIn(
        location=location,
        service_code=service[:64] if service else None,
        service_text=names[0][:200] if names else None,
        priority=_PRIORITY.get(str(request.get("priority", "routine"))),
        patient=patient(patient_resource) if patient_resource else PatientIn(),
        referrer=_referrer(bundle.resolve(request.get("requester"), request), bundle),
        payer_code=_payer(coverage, bundle, request),
        member_id=_member_id(coverage),
        external_id=_first_identifier(request),
        clinical_notes="\n".join(n for n in notes if n)[:20_000] or None,
    )


def patient(resource: dict[str, Any]) -> PatientIn:
    names = resource.get("name") or [{}]
    name = next((n for n in names if n.get("use") == "official"), names[0])
    telecom = resource.get("telecom") or []
    phone = next((t.get("value") for t in telecom if t.get("system") == "phone" and t.get("value")), None)
    email = next((t.get("value") for t in telecom if t.get("system") == "email" and t.get("value")), None)
    return PatientIn(
        mrn=_medical_record_number(resource),
        given_name=" ".join(_given(name))[:200] or None,
        family_name=(name.get("family") or "")[:200] or None,
        birth_date=resource.get("birthDate"),
        sex=_GENDER.get(str(resource.get("gender"))),
        phone=phone[:64] if phone else None,
        email=email[:200] if email else None,
    )


def _given(name: dict[str, Any]) -> list[str]:
    """A HumanName's given names; a null among them (kept for an ``_given`` extension) is skipped."""
    return [given for given in name.get("given") or [] if isinstance(given, str)]


def _medical_record_number(resource: dict[str, Any]) -> str | None:
    identifiers = [i for i in resource.get("identifier") or [] if i.get("value")]
    typed = [
        i for i in identifiers if any(c.get("code") == "MR" for c in (i.get("type") or {}).get("coding", []))
    ]
    chosen = (typed or identifiers or [None])[0]
    return str(chosen["value"])[:64] if chosen else None


# DiagnosticReport.status to a result's status.
_REPORT_STATUS = {"final": "final", "amended": "corrected", "corrected": "corrected", "appended": "corrected",
                  "cancelled": "cancelled", "entered-in-error": "cancelled"}  # fmt: skip


@dataclass(frozen=True)
class Report:
    """A DiagnosticReport as a result: its patient, the orders it answers, service, status, text."""

    patient: PatientIn
    order_numbers: tuple[str, ...]
    service_code: str | None
    status: str
    observed_at: str | None
    text: str


def diagnostic_report(resource: dict[str, Any], order_of: Callable[[str], str | None]) -> Report:
    """Read a (validated) DiagnosticReport. Its patient is a contained Patient the subject points to,
    else the subject's identifier as MRN; its orders are ``basedOn`` identifiers and, through
    ``order_of``, the order numbers of the ServiceRequests it references here."""
    subject = resource.get("subject") or {}
    contained = {
        f"#{c.get('id')}": c for c in resource.get("contained") or [] if c.get("resourceType") == "Patient"
    }
    if subject.get("reference") in contained:
        found = patient(contained[subject["reference"]])
    else:
        mrn = (subject.get("identifier") or {}).get("value")
        found = PatientIn(mrn=str(mrn)[:64] if mrn else None)
    if not found.mrn:
        raise FhirError(
            422, "required", "the report's subject names no patient identifier", "DiagnosticReport.subject"
        )
    orders: list[str] = []
    for based_on in resource.get("basedOn") or []:
        number = (based_on.get("identifier") or {}).get("value")
        reference = str(based_on.get("reference") or "")
        if not number and reference.startswith("ServiceRequest/"):
            number = order_of(reference.removeprefix("ServiceRequest/"))
        if number and str(number)[:64] not in orders:
            orders.append(str(number)[:64])
    codings = (resource.get("code") or {}).get("coding") or []
    lines = [resource.get("conclusion") or ""]
    for form in resource.get("presentedForm") or []:
        if str(form.get("contentType", "")).startswith("text/") and form.get("data"):
            try:
                lines.append(base64.b64decode(form["data"]).decode("utf-8", errors="replace"))
            except ValueError:
                raise FhirError(
                    400, "invalid", "presentedForm.data is not base64", "DiagnosticReport.presentedForm"
                ) from None
    return Report(
        patient=found,
        order_numbers=tuple(orders),
        service_code=str(codings[0].get("code"))[:64] if codings and codings[0].get("code") else None,
        status=_REPORT_STATUS.get(str(resource.get("status")), "preliminary"),
        observed_at=resource.get("effectiveDateTime") or resource.get("issued"),
        text="\n".join(line for line in lines if line)[:100_000],
    )


def _first_identifier(resource: dict[str, Any] | None) -> str | None:
    if not resource:
        return None
    value = next((i.get("value") for i in resource.get("identifier") or [] if i.get("value")), None)
    return str(value)[:64] if value else None


def _referrer(requester: dict[str, Any] | None, bundle: Bundle) -> ReferrerIn:
    if requester and requester.get("resourceType") == "PractitionerRole":
        requester = bundle.resolve(requester.get("practitioner"), requester) or requester
    if not requester:
        return ReferrerIn()
    names = requester.get("name") or []
    name = names[0] if isinstance(names, list) and names else {}
    person = " ".join([*_given(name), name.get("family") or ""]).strip()
    display = names if isinstance(names, str) else person  # an Organization's name is a string
    return ReferrerIn(code=_first_identifier(requester), name=display[:200] or None)


def _payer(coverage: dict[str, Any] | None, bundle: Bundle, request: dict[str, Any]) -> str | None:
    if not coverage:
        return None
    for payor in coverage.get("payor") or []:
        organisation = bundle.resolve(payor, coverage)
        code = _first_identifier(organisation) or (payor.get("identifier") or {}).get("value")
        if code:
            return str(code)[:64]
    return None


def _member_id(coverage: dict[str, Any] | None) -> str | None:
    if not coverage:
        return None
    value = coverage.get("subscriberId") or _first_identifier(coverage)
    return str(value)[:64] if value else None


def inline_files(document: dict[str, Any]) -> list[tuple[str, str, bytes]]:
    """The files a validated DocumentReference carries inline (``content.attachment.data``): name,
    media type and bytes. One given by ``url`` only is not fetched (it stays in the kept resource)."""
    files = []
    for number, content in enumerate(document.get("content") or [], start=1):
        attachment = content.get("attachment") or {}
        data = attachment.get("data")
        if not isinstance(data, str):
            continue
        decoded = base64.b64decode(data)  # as validation did (which refused what this cannot decode)
        kind = str(attachment.get("contentType") or "application/octet-stream").split(";")[0].strip()
        title = attachment.get("title") or document.get("description")
        name = str(title) if title else f"DocumentReference-{number}{mimetypes.guess_extension(kind) or ''}"
        files.append((name, kind, decoded))
    return files


def location_names(request: dict[str, Any], bundle: Bundle) -> list[str]:
    """Where a request is for, most specific first: its Location, performer, then the patient's
    managing organisation (names and identifiers, to match against slugs and the mapping)."""
    names: list[str] = []
    candidates = [
        *(bundle.resolve(ref, request) for ref in request.get("locationReference", [])),
        *(bundle.resolve(ref, request) for ref in request.get("performer", [])),
    ]
    subject = bundle.resolve(request.get("subject"), request)
    if subject:
        candidates.append(bundle.resolve(subject.get("managingOrganization"), subject))
    for resource in candidates:
        if resource:
            names += [
                v for v in (_first_identifier(resource), resource.get("name")) if isinstance(v, str) and v
            ]
    for ref in [*request.get("locationReference", []), *request.get("performer", [])]:
        if isinstance(ref.get("display"), str):
            names.append(ref["display"])
    return names


def task(service_request_id: str, status: str, business_status: str, last_modified: str) -> dict[str, Any]:
    """The processing status of a referral as a FHIR Task based on its ServiceRequest."""
    return {
        "resourceType": "Task",
        "id": service_request_id,
        "status": status,
        "intent": "order",
        "basedOn": [{"reference": f"ServiceRequest/{service_request_id}"}],
        "focus": {"reference": f"ServiceRequest/{service_request_id}"},
        "businessStatus": {"text": business_status},
        "lastModified": last_modified,
    }


def capability_statement(version: str) -> dict[str, Any]:
    """Exactly what careops's FHIR endpoint supports."""
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-12-01",
        "kind": "instance",
        "software": {"name": "careops", "version": version},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "security": {"description": "Bearer API token (careops token create)"},
                "interaction": [{"code": "transaction"}, {"code": "batch"}],
                "resource": [
                    {
                        "type": "ServiceRequest",
                        "interaction": [{"code": "create"}, {"code": "read"}],
                        "conditionalCreate": True,
                        "documentation": "A referral: becomes a case, an exception item or a duplicate link.",
                    },
                    {
                        "type": "DiagnosticReport",
                        "interaction": [{"code": "create"}],
                        "documentation": "A result: matched to its case by basedOn, else by patient and "
                        "service; an unmatched one waits for a person.",
                    },
                    {
                        "type": "Task",
                        "interaction": [{"code": "search-type"}],
                        "searchParam": [{"name": "based-on", "type": "reference"}],
                        "documentation": "The processing status of a referral (read-only).",
                    },
                    *(
                        {
                            "type": name,
                            "documentation": "Accepted in a Bundle as context of a ServiceRequest.",
                        }
                        for name in sorted(CONTEXT_TYPES | {"DocumentReference"})
                    ),
                ],
            }
        ],
    }
