"""schemathesis extensions for the contract test (loaded with SCHEMATHESIS_HOOKS).

- HL7 v2 bodies go out as the text schemathesis drew, in the HL7 media types;
- requests to the signed webhook route are signed, as a partner signs them, with the secret of
  the inbound connector the test registered (CAREOPS_CONTRACT_CONNECTOR, _SECRET), over the bytes
  the JSON body goes out as; without this every generated request would stop at the 401 of a
  missing signature and none would reach the intake behind it.
"""

from __future__ import annotations

import json
import os
from typing import Any

import schemathesis

from careops.governance.signing import signed_headers


@schemathesis.serializer("application/hl7-v2", "x-application/hl7-v2+er7")
def hl7_text(ctx: Any, value: Any) -> dict[str, Any]:
    return {"data": value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")}


@schemathesis.auth(refresh_interval=None).apply_to(path_regex="/webhooks/")
class PartnerSignature:
    """Signs each request's body; a body that is not JSON goes out unsigned (and is refused 401)."""

    def get(self, case: Any, ctx: Any) -> str:
        return os.environ["CAREOPS_CONTRACT_SECRET"]

    def set(self, case: Any, secret: str, ctx: Any) -> None:
        connector = os.environ["CAREOPS_CONTRACT_CONNECTOR"]
        case.path_parameters = {**(case.path_parameters or {}), "connector": connector}
        try:  # what requests sends for a JSON body
            sent = json.dumps(case.body, allow_nan=False).encode()
        except (TypeError, ValueError):
            return
        case.headers = {**(case.headers or {}), **signed_headers([secret], sent)}
