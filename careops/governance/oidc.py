"""OpenID Connect login (authorization code flow with PKCE) for organisations with an identity
provider. Local login keeps working beside it.

The provider proves who the person is; careops still decides what they may do: the person must
exist as a careops user (``careops user create NAME --roles ... --sso``) whose username equals the
ID token's ``oidc_username_claim``, and gets that user's roles and locations. The ID token is
checked with joserfc (the JOSE implementation of the authlib project): signature against the provider's JWKS,
issuer, audience, expiry and the nonce of this login.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from careops.errors import ConfigurationError, Unauthorised
from careops.governance.abuse import Signer
from careops.settings import Settings

DISCOVERY_CACHE_SECONDS = 3600
_PURPOSE = "careops-oidc"  # the login cookie's signing key


@dataclass(frozen=True)
class LoginRequest:
    """Where to send the browser, and what to keep (in a signed cookie) until it comes back."""

    url: str
    state: str
    nonce: str
    verifier: str


def seal(login: LoginRequest, secret_key: str) -> str:
    """The cookie that carries a login's state, nonce and PKCE verifier to the callback, signed."""
    body = f"{login.state}.{login.nonce}.{login.verifier}.{int(time.time())}"
    return f"{body}.{Signer(secret_key, _PURPOSE).sign(body)}"


def unseal(cookie: str | None, state: str, secret_key: str, max_age: float = 600) -> tuple[str, str]:
    """The nonce and verifier of the login this callback belongs to; Unauthorised otherwise."""
    parts = (cookie or "").split(".")
    if len(parts) != 5 or not Signer(secret_key, _PURPOSE).verify(".".join(parts[:4]), parts[4]):
        raise Unauthorised("this login was not started here or has expired: start again")
    kept_state, nonce, verifier, issued = parts[:4]
    if not hmac.compare_digest(kept_state, state) or time.time() - int(issued) > max_age:
        raise Unauthorised("this login was not started here or has expired: start again")
    return nonce, verifier


class OidcClient:
    """The relying party: discovery and keys cached, one login at a time stateless."""

    def __init__(self, settings: Settings) -> None:
        if not (settings.oidc_issuer and settings.oidc_client_id):
            raise ConfigurationError("OpenID Connect needs oidc_issuer and oidc_client_id")
        self.settings = settings
        self._metadata: tuple[dict[str, Any], float] | None = None

    def metadata(self) -> dict[str, Any]:
        if self._metadata is None or self._metadata[1] < time.monotonic():
            url = str(self.settings.oidc_issuer).rstrip("/") + "/.well-known/openid-configuration"
            try:
                answer = httpx.get(url, timeout=10)
                answer.raise_for_status()
                document = answer.json()
                keys = httpx.get(document["jwks_uri"], timeout=10).json()
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                raise Unauthorised(f"the identity provider cannot be reached ({type(exc).__name__})") from exc
            document["_keys"] = keys
            self._metadata = (document, time.monotonic() + DISCOVERY_CACHE_SECONDS)
        return self._metadata[0]

    def start(self, redirect_uri: str) -> LoginRequest:
        state, nonce, verifier = (secrets.token_urlsafe(24) for _ in range(3))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        query = {
            "response_type": "code",
            "client_id": self.settings.oidc_client_id,
            "redirect_uri": redirect_uri,
            "scope": "openid profile email",
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        return LoginRequest(
            f"{self.metadata()['authorization_endpoint']}?{urlencode(query)}", state, nonce, verifier
        )

    def finish(self, code: str, redirect_uri: str, nonce: str, verifier: str) -> str:
        """The username the provider vouches for, or Unauthorised saying what did not check out."""
        metadata = self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": self.settings.oidc_client_id,
            "client_secret": self.settings.oidc_client_secret or "",
            "code_verifier": verifier,
        }
        try:
            answer = httpx.post(metadata["token_endpoint"], data=form, timeout=10)
            answer.raise_for_status()
            id_token = answer.json()["id_token"]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise Unauthorised("the identity provider did not give an ID token for this login") from exc
        try:
            token = jwt.decode(
                id_token, KeySet.import_key_set(metadata["_keys"]), algorithms=["RS256", "ES256"]
            )
            jwt.JWTClaimsRegistry(
                leeway=60,
                iss={"essential": True, "value": metadata["issuer"]},
                aud={"essential": True, "value": str(self.settings.oidc_client_id)},
                exp={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(token.claims)
        except (JoseError, ValueError) as exc:
            raise Unauthorised(f"the ID token was refused ({type(exc).__name__})") from exc
        username = token.claims.get(self.settings.oidc_username_claim)
        if not isinstance(username, str) or not username:
            raise Unauthorised(f"the ID token has no {self.settings.oidc_username_claim!r} claim")
        return username.strip().lower()
