"""Policy what-if: the recorded requests of a period replayed through a proposed policy, side by
side with the versions that routed them. Nothing is written.

For each request, the chain it got (its pinned version, as effective at its location, and the
rules that matched) and the chain the proposal would give on the same facts; then how many would
change chain, how many the proposal covers by no rule, the approver load per role (steps each
would get) and the expected cycle time: the sum over a chain's steps of the median time that
kind of step took in the period (its time limit where there is no history).
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from careops.approvals.policies import Policy, Step, effective, load_text
from careops.approvals.requests import chain_of
from careops.approvals.tables import NoRule, choose
from careops.db import Database
from careops.domain.approvals import ApprovalPolicyVersion, ApprovalRequest, ApprovalStep
from careops.domain.models import Location

Progress = Callable[[int, int], None]
BATCH = 2_000


def _shape(chain: list[Step]) -> tuple[tuple[str, str], ...]:
    return tuple((step.who.describe(), str(step.quorum)) for step in chain)


class _Places:
    """Each location's slug and groups, and each policy's effective version there, worked out once."""

    def __init__(self, db: Database) -> None:
        with db.sessions() as session:
            self.places = {
                loc.id: (loc.slug, list(loc.groups or [])) for loc in session.scalars(select(Location))
            }
        self._cache: dict[tuple[str, str], Policy] = {}

    def at(self, policy: Policy, location_id: str) -> Policy:
        key = (policy.content_hash, location_id)
        if key not in self._cache:
            slug, groups = self.places.get(location_id, ("", []))
            self._cache[key] = effective(policy, slug, groups)
        return self._cache[key]


def simulate(
    db: Database, proposed: Policy, since: dt.datetime, until: dt.datetime, progress: Progress | None = None
) -> dict[str, Any]:
    places = _Places(db)
    with db.sessions() as session:
        versions = {
            row.content_hash: load_text(row.content, row.name)
            for row in session.scalars(
                select(ApprovalPolicyVersion).where(ApprovalPolicyVersion.name == proposed.name)
            )
        }
        period = (
            ApprovalRequest.policy == proposed.name,
            ApprovalRequest.requested_at >= since,
            ApprovalRequest.requested_at < until,
        )
        total = session.query(ApprovalRequest.id).filter(*period).count()
        durations: dict[str, list[float]] = defaultdict(list)
        for who, started, finished in session.execute(
            select(ApprovalStep.spec["who"].as_string(), ApprovalStep.started_at, ApprovalStep.finished_at)
            .join(ApprovalRequest, ApprovalRequest.id == ApprovalStep.request_id)
            .where(*period, ApprovalStep.finished_at.is_not(None), ApprovalStep.status == "approved")
        ):
            durations[str(who)].append((finished - started).total_seconds())
        medians = {who: statistics.median(values) for who, values in durations.items()}

        def expected(chain: list[Step]) -> float:
            return sum(medians.get(step.who.describe(), step.within_seconds) for step in chain)

        load: dict[str, Counter[str]] = {"current": Counter(), "proposed": Counter()}
        cycle: dict[str, list[float]] = {"current": [], "proposed": []}
        changed = uncovered = done = 0
        rows = session.execute(
            select(ApprovalRequest.policy_hash, ApprovalRequest.location_id, ApprovalRequest.matched,
                   ApprovalRequest.facts).where(*period).execution_options(yield_per=BATCH)
        )  # fmt: skip
        for policy_hash, location_id, matched, facts in rows:
            version = versions.get(policy_hash)
            now_chain = chain_of(places.at(version, location_id), matched) if version else []
            try:
                new_chain = [
                    s for rule in choose(places.at(proposed, location_id), facts) for s in rule.chain
                ]
            except NoRule:
                new_chain, uncovered = [], uncovered + 1
            changed += _shape(now_chain) != _shape(new_chain)
            for name, chain in (("current", now_chain), ("proposed", new_chain)):
                load[name].update(step.who.describe() for step in chain)
                if chain:
                    cycle[name].append(expected(chain))
            done += 1
            if progress is not None and done % BATCH == 0:
                progress(done, total)
    if progress is not None:
        progress(done, total)
    return {
        "policy": proposed.name,
        "from": since.isoformat(),
        "to": until.isoformat(),
        "requests": done,
        "changed_chain": changed,
        "uncovered": uncovered,
        "load": {
            who: {"current": load["current"][who], "proposed": load["proposed"][who]}
            for who in sorted(set(load["current"]) | set(load["proposed"]))
        },
        "expected_cycle_seconds": {
            name: {"mean": statistics.fmean(v) if v else None, "p50": statistics.median(v) if v else None}
            for name, v in cycle.items()
        },
        "step_medians_seconds": medians,
    }
