"""The FHIR R4 channel: ServiceRequests (alone or in a transaction/batch Bundle) into the one intake.

Each ServiceRequest becomes an intake item (its id is the ServiceRequest's id here) and goes
through the same intake as ``POST /api/v1/referrals``; the resources it references travel with it
as its raw payload (a collection Bundle). ``If-None-Exist: identifier=[system|]value`` makes a
create conditional; a request sent again unchanged gets its first answer. Whatever is refused is
kept in quarantine and answered with an OperationOutcome.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from pydantic_core import to_json
from sqlalchemy import select

from careops.db import Database
from careops.domain.models import ExceptionItem, IntakeItem, ServiceCase, find, is_id
from careops.domain.referrals import normalise_code
from careops.errors import Forbidden
from careops.governance.phi_access import record_phi_read
from careops.governance.principal import Principal
from careops.governance.scoping import EVERYWHERE, LocationScope
from careops.integrations.inbound import fhir_r4
from careops.integrations.inbound.channel_metrics import measured
from careops.integrations.inbound.document_text import extract_text
from careops.integrations.inbound.facilities import location_for
from careops.orchestration.intake import Attachment, CatalogueCache, IntakeRequest, accept_referral
from careops.orchestration.quarantine import quarantine
from careops.orchestration.results import ResultNotice, record_result
from careops.settings import Settings

PRINCIPAL = "fhir"
_TASK_STATUS = {
    "received": "accepted",
    "validated": "accepted",
    "awaiting_authorisation": "accepted",
    "ready_to_schedule": "accepted",
    "scheduled": "in-progress",
    "completed": "completed",
    "billing_ready": "completed",
    "invoiced": "completed",
    "closed": "completed",
    "on_hold": "on-hold",
    "cancelled": "rejected",
}


@dataclass
class FhirAnswer:
    status: int
    body: dict[str, Any]
    location: str | None = None
    # A batch's entries refused as invalid (400), each with its OperationOutcome in ``body``: the
    # batch is kept in quarantine for them.
    invalid: list[tuple[fhir_r4.FhirError, dict[str, Any]]] = field(default_factory=list)


class FhirChannel:
    def __init__(self, db: Database, settings: Settings, catalogue: CatalogueCache) -> None:
        self.db = db
        self.settings = settings
        self.catalogue = catalogue

    # -- writes ---------------------------------------------------------------------------------

    def create(
        self, raw: bytes, if_none_exist: str | None, actor: str, scope: LocationScope = EVERYWHERE
    ) -> FhirAnswer:
        """``POST /ServiceRequest``: 201 created, 200 when ``If-None-Exist`` matched, or an error."""
        return self._measured(raw, actor, lambda: self._create(raw, if_none_exist, scope))

    def bundle(self, raw: bytes, actor: str, scope: LocationScope = EVERYWHERE) -> FhirAnswer:
        """``POST /`` with a transaction or batch Bundle: its response Bundle, or an error."""
        return self._measured(raw, actor, lambda: self._bundle(raw, scope))

    def report(self, raw: bytes, actor: str, scope: LocationScope = EVERYWHERE) -> FhirAnswer:
        """``POST /DiagnosticReport``: a result, kept on its case or waiting for a person (201 both)."""
        return self._measured(raw, actor, lambda: self._report(raw, scope))

    def _report(self, raw: bytes, scope: LocationScope) -> FhirAnswer:
        resource = fhir_r4.parse_json(raw)
        if resource.get("resourceType") != "DiagnosticReport":
            raise fhir_r4.FhirError(400, "invalid", "this endpoint takes a DiagnosticReport", "resourceType")
        fhir_r4.validate(resource, "DiagnosticReport", fhir_r4.may_hold_null(raw))
        report = fhir_r4.diagnostic_report(resource, self._order_number)
        slugs = self.catalogue.get(self.db).locations
        names = [str((resource.get("performer") or [{}])[0].get("display") or "")]
        location = location_for([n for n in names if n], self.settings, slugs)
        request = IntakeRequest(
            raw=raw,
            content_type=fhir_r4.FHIR_JSON,
            channel="fhir",
            principal_id=PRINCIPAL,
            content_key="fhir-report",
            scope=scope,
        )
        notice = ResultNotice(
            report.order_numbers, report.service_code, report.status, report.observed_at, report.text
        )
        try:
            answer = record_result(self.db, request, report.patient, location, notice, self.catalogue)
        except Forbidden as exc:
            raise fhir_r4.FhirError(403, "forbidden", exc.detail, "DiagnosticReport") from exc
        item_id = answer.body["intake_item_id"]
        text = (
            f"result kept on case {answer.body['case_id']}"
            if "case_id" in answer.body
            else (f"no case matches: waiting for a person ({', '.join(answer.body.get('reason_codes', []))})")
        )
        body = {**_informational(text), "id": item_id}
        # A report sent again is answered as before and changes nothing (its earlier answer has no events).
        return FhirAnswer(201 if answer.events else 200, body, f"DiagnosticReport/{item_id}")

    def _order_number(self, service_request_id: str) -> str | None:
        """The order number of the case a ServiceRequest received here became, if any."""
        with self.db.sessions() as session:
            item = session.get(IntakeItem, service_request_id) if is_id(service_request_id) else None
            case = session.get(ServiceCase, item.case_id) if item is not None and item.case_id else None
            return case.order_number if case is not None else None

    def other(self, raw: bytes, resource_type: str, actor: str) -> FhirAnswer:
        """``POST /{type}`` for a type careops does not take: 400 naming what is invalid in it,
        else 404 not-supported; kept in quarantine either way."""
        return self._measured(raw, actor, lambda: self._other(raw, resource_type))

    def _other(self, raw: bytes, resource_type: str) -> FhirAnswer:
        fhir_r4.validate(fhir_r4.parse_json(raw), resource_type, fhir_r4.may_hold_null(raw))
        detail = f"careops takes ServiceRequest (alone or in a Bundle at /fhir/r4), not {resource_type}"
        raise fhir_r4.FhirError(404, "not-supported", detail, resource_type)

    def accept(self, raw: bytes, scope: LocationScope = EVERYWHERE) -> FhirAnswer:
        """Replay: a quarantined resource or Bundle through the channel again (FhirError if refused,
        or if an entry of a batch still is)."""
        document = fhir_r4.parse_json(raw)
        if document.get("resourceType") == "DiagnosticReport":
            return self._report(raw, scope)
        if document.get("resourceType") != "Bundle":
            return self._create(raw, None, scope)
        answer = self._bundle(raw, scope)
        if answer.invalid:
            raise answer.invalid[0][0]
        return answer

    def _measured(self, raw: bytes, actor: str, work: Any) -> FhirAnswer:
        with measured("fhir") as seen:
            try:
                answer: FhirAnswer = work()
            except fhir_r4.FhirError as error:
                seen.quarantined = True
                return self.refuse(raw, error, actor)
            seen.accepted = True
            if answer.invalid:
                seen.quarantined = True
                self._keep(raw, answer.invalid, actor)
            return answer

    def refuse(self, raw: bytes, error: fhir_r4.FhirError, actor: str) -> FhirAnswer:
        """Keep the payload whole in quarantine; the OperationOutcome names the quarantine id."""
        outcome = error.outcome()
        self._keep(raw, [(error, outcome)], actor)
        return FhirAnswer(error.status, outcome)

    def _keep(self, raw: bytes, refused: list[tuple[fhir_r4.FhirError, dict[str, Any]]], actor: str) -> None:
        """Quarantine the payload for these errors; each one's OperationOutcome names the id."""
        quarantine_id = quarantine(
            self.db,
            raw=raw[: self.settings.quarantine_max_bytes],
            content_type=fhir_r4.FHIR_JSON,
            channel="fhir",
            reasons=[error.reason for error, _ in refused],
            actor=actor,
        )
        for _, outcome in refused:
            outcome["issue"][0]["diagnostics"] += f" (quarantine {quarantine_id})"

    def _create(self, raw: bytes, if_none_exist: str | None, scope: LocationScope) -> FhirAnswer:
        resource = fhir_r4.parse_json(raw)
        if resource.get("resourceType") != "ServiceRequest":
            raise fhir_r4.FhirError(400, "invalid", "this endpoint takes a ServiceRequest", "resourceType")
        fhir_r4.validate(resource, "ServiceRequest", fhir_r4.may_hold_null(raw))
        bundle = fhir_r4.Bundle(
            "batch", [fhir_r4.Entry(0, None, resource, "POST", "ServiceRequest", if_none_exist, alone=True)]
        )
        entry = bundle.entries[0]
        fhir_r4.check_references(entry, bundle)
        return self._submit(entry, bundle, _drawn_on(entry, bundle), scope, if_none_exist)

    def _bundle(self, raw: bytes, scope: LocationScope) -> FhirAnswer:
        bundle = fhir_r4.read_bundle(fhir_r4.parse_json(raw), fhir_r4.may_hold_null(raw))
        drawn_on = {e.index: _drawn_on(e, bundle) for e in bundle.entries if e.type == "ServiceRequest"}
        referenced = {entry.index for entries in drawn_on.values() for entry in entries}
        problems = {entry.index: self._entry_problem(entry, bundle, referenced) for entry in bundle.entries}
        for index, entries in drawn_on.items():
            # A request is read with what it draws on: an invalid Patient, Practitioner or
            # document makes the request invalid too (a batch keeps it in quarantine).
            broken = next((e for e in entries if _invalid(problems[e.index])), None)
            if problems[index] is None and broken is not None:
                detail = f"the request draws on {broken.path}, which is invalid"
                problems[index] = fhir_r4.FhirError(400, "invalid", detail, broken.resource_path)
        if bundle.kind == "transaction":
            found = [p for p in problems.values() if p is not None]
            if found:  # a transaction is all or nothing: nothing was written; invalid content first
                raise min(found, key=lambda p: p.status != 400)
        responses = []
        invalid = []
        # One answer object for every entry used as context (nothing changes it once made).
        context = {"response": {"status": "200 OK", "outcome": _informational("used as context")}}
        for entry in bundle.entries:
            problem = problems[entry.index]
            if problem is None and entry.type == "ServiceRequest":
                try:
                    answer = self._submit(entry, bundle, drawn_on[entry.index], scope, entry.if_none_exist)
                except fhir_r4.FhirError as error:
                    if bundle.kind == "transaction":
                        raise
                    problem = error
                else:
                    responses.append(_entry_response(answer))
                    continue
            if problem is None:
                responses.append(context)
                continue
            outcome = problem.outcome()
            responses.append({"response": {"status": str(problem.status), "outcome": outcome}})
            if _invalid(problem):
                invalid.append((problem, outcome))
        kind = f"{bundle.kind}-response"
        return FhirAnswer(200, {"resourceType": "Bundle", "type": kind, "entry": responses}, invalid=invalid)

    @staticmethod
    def _entry_problem(
        entry: fhir_r4.Entry, bundle: fhir_r4.Bundle, referenced: set[int]
    ) -> fhir_r4.FhirError | None:
        """Why an entry cannot be taken, or None: careops creates referrals, it is no FHIR store."""
        if not entry.method:
            detail = "a transaction or batch entry needs a request (method and url)"
            return fhir_r4.FhirError(400, "required", detail, f"{entry.path}.request")
        try:
            fhir_r4.validate(entry.resource, entry.resource_path, bundle.nulls, bundle.checked)
            fhir_r4.check_references(entry, bundle)
        except fhir_r4.FhirError as error:
            return error
        if entry.method not in ("POST", "PUT"):
            detail = f"only POST and PUT entries are taken, not {entry.method or 'none'}"
            return fhir_r4.FhirError(422, "not-supported", detail, f"{entry.path}.request.method")
        if entry.type not in fhir_r4.ACCEPTED_TYPES:
            detail = f"careops does not take {entry.type} resources"
            return fhir_r4.FhirError(422, "not-supported", detail, entry.resource_path)
        if entry.type != "ServiceRequest" and entry.index not in referenced:
            detail = f"careops takes a {entry.type} only as context of a ServiceRequest in the Bundle"
            return fhir_r4.FhirError(422, "not-supported", detail, entry.resource_path)
        return None

    def _submit(
        self,
        entry: fhir_r4.Entry,
        bundle: fhir_r4.Bundle,
        drawn_on: list[fhir_r4.Entry],
        scope: LocationScope,
        if_none_exist: str | None,
    ) -> FhirAnswer:
        resource = entry.resource
        snapshot = self.catalogue.get(self.db)
        location = location_for(fhir_r4.location_names(resource, bundle), self.settings, snapshot.locations)
        requester = (resource.get("requester") or {}).get("display")
        known = {code for (_, code) in snapshot.services}

        def known_service(code: str) -> bool:
            return normalise_code(code) in known or snapshot.mapped("service", code, requester) is not None

        referral = fhir_r4.referral(resource, bundle, location, known_service)
        # Kept as received: elements in the order sent (a resend is the same bytes, the same digest).
        raw = to_json(_collection(resource, drawn_on))
        conditional_key = _conditional_key(if_none_exist, None if entry.alone else entry.path)
        request = IntakeRequest(
            raw=raw,
            content_type=fhir_r4.FHIR_JSON,
            channel="fhir",
            principal_id=PRINCIPAL,
            idempotency_key=conditional_key,
            content_key=None if conditional_key else "fhir",
            correlation_id=referral.external_id,
            scope=scope,
            sender=requester or referral.referrer.code,
            conditional=conditional_key is not None,
            attachments=_documents(drawn_on),
        )
        try:
            answer = accept_referral(self.db, request, referral, self.settings, self.catalogue)
        except Forbidden as exc:
            raise fhir_r4.FhirError(403, "forbidden", exc.detail, entry.resource_path) from exc
        item_id = answer.body["intake_item_id"]
        created = bool(answer.events)  # an earlier answer (same request or identifier) has none
        stored = {**resource, "id": item_id}
        return FhirAnswer(201 if created else 200, stored, f"ServiceRequest/{item_id}")

    # -- reads ----------------------------------------------------------------------------------

    def read(self, service_request_id: str, reader: Principal) -> dict[str, Any]:
        """The ServiceRequest as received, redacted unless the reader sees PHI in clear (audited)."""
        item = self._item(service_request_id, reader.scope)
        collection = json.loads(item.raw_payload)
        resource = reader.masking.fhir_resource({**collection["entry"][0]["resource"], "id": item.id})
        if reader.masking.all_clear:
            record_phi_read(self.db, reader, "intake_item", [resource])
        return resource

    def task(self, based_on: str, scope: LocationScope) -> dict[str, Any]:
        """``Task?based-on=ServiceRequest/{id}``: a searchset with the referral's processing Task."""
        service_request_id = based_on.removeprefix("ServiceRequest/")
        try:
            item = self._item(service_request_id, scope)
        except fhir_r4.FhirError:
            return {"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": []}
        with self.db.sessions() as session:
            case = session.get(ServiceCase, item.case_id) if item.case_id else None
            exception = session.scalars(
                select(ExceptionItem).where(ExceptionItem.intake_item_id == item.id)
            ).first()
        if case is not None:
            status, business = _TASK_STATUS.get(case.status, "accepted"), f"case {case.id}: {case.status}"
            modified = case.updated_at or case.created_at
        elif exception is not None:
            status = "requested"
            business = "waiting for review: " + ", ".join(exception.reason_codes)
            modified = exception.created_at
        else:
            status, business, modified = "requested", item.status, item.received_at
        resource = fhir_r4.task(item.id, status, business, modified.isoformat())
        return {"resourceType": "Bundle", "type": "searchset", "total": 1, "entry": [{"resource": resource}]}

    def _item(self, service_request_id: str, scope: LocationScope) -> IntakeItem:
        with self.db.sessions() as session:
            item = find(session, IntakeItem, service_request_id)
        hidden = item is not None and item.location_id is not None and not scope.allows(item.location_id)
        if item is None or item.channel != "fhir" or hidden:
            raise fhir_r4.FhirError(404, "not-found", "no ServiceRequest with this id")
        return item


def _drawn_on(request: fhir_r4.Entry, bundle: fhir_r4.Bundle) -> list[fhir_r4.Entry]:
    """The entries a ServiceRequest draws on: what it references, directly or through them (a
    PractitionerRole's practitioner, a Coverage's payor), then the documents that reference it."""
    seen = {request.index}
    found: list[fhir_r4.Entry] = []
    pending = [request]
    while pending:
        for hit in bundle.linked(pending.pop()):
            if hit.index not in seen:
                seen.add(hit.index)
                found.append(hit)
                pending.append(hit)
    documents = [
        entry
        for entry in bundle.referrers(request)
        if entry.type == "DocumentReference" and entry.index not in seen
    ]
    return [*found, *documents]


def _invalid(problem: fhir_r4.FhirError | None) -> bool:
    return problem is not None and problem.status == 400


def _documents(drawn_on: list[fhir_r4.Entry]) -> tuple[Attachment, ...]:
    """The files of the request's DocumentReferences, stored as documents of its intake item (as
    an email's attachments are), with their text for triage."""
    return tuple(
        Attachment(name, kind, data, extract_text(kind, data))
        for entry in drawn_on
        if entry.type == "DocumentReference"
        for name, kind, data in fhir_r4.inline_files(entry.resource)
    )


def _collection(request: dict[str, Any], drawn_on: list[fhir_r4.Entry]) -> dict[str, Any]:
    """The ServiceRequest and what it draws on, as kept on its intake item (its raw payload)."""
    context = [{"fullUrl": entry.full_url, "resource": entry.resource} for entry in drawn_on]
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": request}, *context]}


def _conditional_key(if_none_exist: str | None, path: str | None) -> str | None:
    """``identifier=[system|]value`` (URL-encoded or not) as an idempotency key; other searches
    are not supported. The system is part of the identifier: one value under two systems is two
    referrals (``identifier=value`` matches one created without a system)."""
    if if_none_exist is None:
        return None
    criteria = parse_qsl(if_none_exist.removeprefix("?"), keep_blank_values=True)
    if len(criteria) != 1 or criteria[0][0] != "identifier" or not criteria[0][1].rpartition("|")[2]:
        raise fhir_r4.FhirError(
            400,
            "not-supported",
            "If-None-Exist supports only identifier=[system|]value",
            f"{path}.request.ifNoneExist" if path else None,  # the header has no FHIRPath
        )
    system, bar, value = criteria[0][1].rpartition("|")
    key = f"identifier:{system}|{value}" if bar else f"identifier:{value}"
    return key if len(key) <= 255 else f"identifier:{hashlib.sha256(key.encode()).hexdigest()}"


def _entry_response(answer: FhirAnswer) -> dict[str, Any]:
    status = "201 Created" if answer.status == 201 else "200 OK"
    return {"fullUrl": answer.location, "response": {"status": status, "location": answer.location}}


def _informational(text: str) -> dict[str, Any]:
    return fhir_r4.operation_outcome("information", "informational", text)
