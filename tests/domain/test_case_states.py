"""The case state machine: every (status, action) pair is either in the table or refused."""

from __future__ import annotations

import itertools

import pytest

from careops.domain.cases import TRANSITIONS, CaseAction, CaseStatus, allowed_actions, next_status
from careops.errors import InvalidTransition

S, A = CaseStatus, CaseAction

HAPPY_PATH = [
    (S.RECEIVED, A.VALIDATE, S.VALIDATED),
    (S.VALIDATED, A.REQUIRE_AUTHORISATION, S.AWAITING_AUTHORISATION),
    (S.AWAITING_AUTHORISATION, A.AUTHORISE, S.READY_TO_SCHEDULE),
    (S.READY_TO_SCHEDULE, A.SCHEDULE, S.SCHEDULED),
    (S.SCHEDULED, A.COMPLETE, S.COMPLETED),
    (S.COMPLETED, A.MARK_BILLING_READY, S.BILLING_READY),
    (S.BILLING_READY, A.INVOICE, S.INVOICED),
    (S.INVOICED, A.CLOSE, S.CLOSED),
]


@pytest.mark.parametrize(("status", "action", "target"), HAPPY_PATH)
def test_forward_path(status: CaseStatus, action: CaseAction, target: CaseStatus) -> None:
    assert next_status(status, action, None) is target


@pytest.mark.parametrize(("status", "action"), list(itertools.product(CaseStatus, CaseAction)))
def test_every_pair_is_allowed_or_refused_with_the_allowed_actions(
    status: CaseStatus, action: CaseAction
) -> None:
    resumable = status is S.ON_HOLD and action is A.RESUME
    if (status, action) in TRANSITIONS or resumable:
        next_status(status, action, S.SCHEDULED)
        assert action in allowed_actions(status)
        return
    with pytest.raises(InvalidTransition) as refused:
        next_status(status, action, S.SCHEDULED)
    assert refused.value.extra["allowed"] == [str(a) for a in allowed_actions(status)]
    assert action not in allowed_actions(status)


def test_closed_and_cancelled_are_terminal() -> None:
    assert allowed_actions(S.CLOSED) == [] and allowed_actions(S.CANCELLED) == []


def test_hold_returns_to_where_it_was() -> None:
    assert next_status(S.SCHEDULED, A.HOLD, None) is S.ON_HOLD
    assert next_status(S.ON_HOLD, A.RESUME, S.SCHEDULED) is S.SCHEDULED
    assert next_status(S.ON_HOLD, A.CANCEL, S.SCHEDULED) is S.CANCELLED
