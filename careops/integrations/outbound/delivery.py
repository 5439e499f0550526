"""Sending deliveries: each claimed delivery becomes one request to its connector, concurrently,
then the outcomes are settled in one transaction (orchestration.deliveries keeps the books).

What a connector receives is the event's envelope (its id, type, time, subject, case, location)
and, of its payload, only the fields the connector declares (data minimisation), with the
delivery's id as the idempotency key (``Idempotency-Key`` header, ``delivery_id`` in the body,
the e-mail's ``Message-ID``): a retry after a timeout is recognised downstream.

- ``webhook`` and ``n8n``: a JSON POST to the outbound connector's URL, signed with its live
  secrets (governance.signing: ``X-Careops-Timestamp``, ``X-Careops-Signature``); 2xx is delivered,
  anything else (or no answer within the timeout) is a failure to retry.
- ``email``: a plain-text message over SMTP to the subscription's addresses.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import smtplib
import time
import xmlrpc.client
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from typing import Any

import httpx
from sqlalchemy import select

from careops.db import Database
from careops.domain.models import BusinessEvent, Location
from careops.governance.signing import Outbound, outbound
from careops.integrations.outbound.odoo import ACTIONS as ODOO_ACTIONS
from careops.integrations.outbound.odoo import Json2Client, OdooClient, OdooError, XmlRpcClient
from careops.integrations.outbound.subscriptions import Subscription
from careops.orchestration.deliveries import Claimed, Outcome, claim, plan, settle


class Deliverer:
    """Plans, claims, sends and settles deliveries for a set of subscriptions."""

    def __init__(
        self,
        db: Database,
        subscriptions: list[Subscription],
        timeout: float = 10.0,
        threads: int = 16,
        lease_seconds: float = 60.0,
    ):
        self.db = db
        self.lease = dt.timedelta(seconds=max(lease_seconds, 2 * timeout))
        self.subscriptions = {s.name: s for s in subscriptions}
        self.timeout = timeout
        self.client = httpx.Client(timeout=timeout)
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="delivery")

    def close(self) -> None:
        self.client.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def run_once(self, limit: int = 200) -> int:
        """One round: new events planned, due deliveries sent; how many were sent."""
        plan(self.db, self.subscriptions.values())
        claimed = claim(self.db, self.subscriptions.values(), limit, lease=self.lease)
        if not claimed:
            return 0
        bodies = self._bodies(claimed)
        targets = {
            name: outbound(self.db, name)
            for name in {c.connector for c in claimed}
            if self.subscriptions[name].kind in ("webhook", "n8n")
        }
        outcomes = list(
            self.pool.map(lambda c: self._attempt(c, bodies[c.id], targets.get(c.connector)), claimed)
        )
        settle(self.db, dict(self.subscriptions), outcomes)
        return len(claimed)

    def _bodies(self, claimed: list[Claimed]) -> dict[str, dict[str, Any]]:
        with self.db.sessions() as session:
            events = {
                e.id: e
                for e in session.scalars(
                    select(BusinessEvent).where(BusinessEvent.id.in_({c.event_id for c in claimed}))
                )
            }
            slugs = {id_: slug for id_, slug in session.execute(select(Location.id, Location.slug))}
        bodies = {}
        for c in claimed:
            event = events[c.event_id]
            fields = self.subscriptions[c.connector].fields
            bodies[c.id] = {
                "delivery_id": c.id,
                "event": {
                    "id": event.id,
                    "type": event.type,
                    "occurred_at": event.occurred_at.isoformat(),
                    "subject_type": event.subject_type,
                    "subject_id": event.subject_id,
                    "case_id": event.case_id,
                    "location": slugs.get(event.location_id or ""),
                },
                "data": {k: event.payload[k] for k in fields if k in event.payload},
            }
        return bodies

    def _attempt(self, claimed: Claimed, body: dict[str, Any], target: Outbound | None) -> Outcome:
        subscription = self.subscriptions[claimed.connector]
        began = time.perf_counter()
        try:
            if subscription.kind == "odoo":
                self._odoo(subscription, body)
                status = None
            elif target is None:
                self._email(subscription, claimed.id, body)
                status = None
            else:
                status = self._post(target, subscription.name, claimed.id, body)
        except (httpx.HTTPError, OSError, smtplib.SMTPException, OdooError, xmlrpc.client.Error) as exc:
            return Outcome(claimed.id, f"{type(exc).__name__}: {exc}"[:500], None, _ms(began))
        except Refused as exc:
            return Outcome(claimed.id, str(exc), exc.status, _ms(began))
        return Outcome(claimed.id, None, status, _ms(began))

    def _post(self, target: Outbound, name: str, key: str, body: dict[str, Any]) -> int:
        raw = json.dumps(body, separators=(",", ":"), default=str).encode()
        headers = {**target.headers(raw), "Content-Type": "application/json", "Idempotency-Key": key}
        answer = self.client.post(target.url, content=raw, headers=headers)
        if not answer.is_success:
            raise Refused(f"{name} answered {answer.status_code}", answer.status_code)
        return answer.status_code

    def _email(self, subscription: Subscription, key: str, body: dict[str, Any]) -> None:
        spec = subscription.email
        assert spec is not None
        message = EmailMessage()
        message["From"], message["To"] = spec.sender, ", ".join(spec.to)
        message["Subject"] = f"careops: {body['event']['type']}"
        message["Message-ID"] = f"<{key}@careops>"
        lines = [f"{k}: {v}" for k, v in body["event"].items()] + [
            f"{k}: {v}" for k, v in body["data"].items()
        ]
        message.set_content("\n".join(lines) + "\n")
        with smtplib.SMTP(spec.host, spec.port, timeout=self.timeout) as smtp:
            smtp.send_message(message)

    def _odoo(self, subscription: Subscription, body: dict[str, Any]) -> None:
        """The event's record made in Odoo (found first by its external reference)."""
        spec = subscription.odoo
        assert spec is not None
        key = os.environ.get(spec.api_key_env)
        if not key:
            raise OdooError(f"set {spec.api_key_env} to the Odoo API key")
        client: OdooClient = (
            Json2Client(spec.url, key, spec.database, self.client)
            if spec.protocol == "json2"
            else XmlRpcClient(spec.url, spec.database or "", spec.login or "", key, self.timeout)
        )
        with self.db.sessions() as session:
            ODOO_ACTIONS[body["event"]["type"]](client, session, body["event"]["subject_id"])


class Refused(Exception):
    """The target answered, but not with success."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _ms(began: float) -> float:
    return round((time.perf_counter() - began) * 1000, 2)
