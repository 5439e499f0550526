"""OpenID Connect login against an identity provider double.

An identity provider cannot run here, so the double below speaks the documented protocol on a
real loopback HTTP server: discovery (/.well-known/openid-configuration), the authorization
endpoint's redirect with code and state, the token endpoint (checking the PKCE S256 verifier and
the client), and a JWKS with an RS256 key that signs the ID tokens.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import RSAKey

from careops.api.app import create_app
from careops.db import Database
from careops.governance.users import create_user
from careops.settings import Settings

CLIENT_ID = "careops-test"
KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"})


class Provider(BaseHTTPRequestHandler):
    issuer = ""
    claims: ClassVar[dict[str, Any]] = {}
    codes: ClassVar[dict[str, dict[str, str]]] = {}

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/.well-known/openid-configuration":
            endpoints = {"authorization_endpoint": "authorize", "token_endpoint": "token", "jwks_uri": "jwks"}
            self._json(
                200, {"issuer": self.issuer, **{k: f"{self.issuer}/{v}" for k, v in endpoints.items()}}
            )
        elif url.path == "/jwks":
            self._json(200, {"keys": [KEY.as_dict(private=False)]})
        elif url.path == "/authorize":
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            code = f"code-{len(self.codes)}"
            self.codes[code] = query
            self.send_response(302)
            self.send_header(
                "Location", f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query['state']})}"
            )
            self.end_headers()
        else:
            self._json(404, {})

    def do_POST(self) -> None:
        form = {
            k: v[0]
            for k, v in parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode()).items()
        }
        asked = self.codes.pop(form.get("code", ""), None)
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        if asked is None or challenge != asked["code_challenge"] or form.get("client_id") != CLIENT_ID:
            self._json(400, {"error": "invalid_grant"})
            return
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 300, "nonce": asked["nonce"],
                  "sub": "u-1", **self.claims}  # fmt: skip
        self._json(
            200, {"id_token": jwt.encode({"alg": "RS256", "kid": "k1"}, claims, KEY), "token_type": "Bearer"}
        )

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def provider() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), Provider)
    Provider.issuer = f"http://127.0.0.1:{server.server_port}"
    Provider.claims = {"preferred_username": "Olivia"}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Provider.issuer
    server.shutdown()


@pytest.fixture
def console(settings: Settings, db: Database, provider: str) -> Iterator[TestClient]:
    sso = settings.model_copy(
        update={"oidc_issuer": provider, "oidc_client_id": CLIENT_ID, "oidc_client_secret": "s"}
    )
    with TestClient(create_app(sso, db), raise_server_exceptions=False) as browser:
        yield browser


def _sign_in(console: TestClient) -> httpx.Response:
    start = console.get("/console/oidc/login", follow_redirects=False)
    assert start.status_code == 303 and "code_challenge_method=S256" in start.headers["location"]
    back = httpx.get(start.headers["location"], follow_redirects=False)  # the browser at the provider
    assert back.status_code == 302
    callback = urlparse(back.headers["location"])
    return console.get(f"{callback.path}?{callback.query}", follow_redirects=False)


def test_a_known_user_signs_in_with_the_provider_and_gets_their_careops_roles(
    console: TestClient, db: Database, settings: Settings
) -> None:
    create_user(db, settings, "olivia", None, ["scheduler"], actor="test")
    assert "Log in with your organisation" in console.get("/console/login").text
    answer = _sign_in(console)
    assert answer.status_code == 303 and answer.headers["location"] == "/console/work"
    page = console.get("/console/cases")
    assert page.status_code == 200 and "olivia (scheduler)" in page.text


def test_tokens_that_do_not_check_out_are_refused(
    console: TestClient, db: Database, settings: Settings
) -> None:
    create_user(db, settings, "olivia", None, ["scheduler"], actor="test")
    for wrong in ({"aud": "someone-else"}, {"iss": "http://evil.example"}, {"exp": int(time.time()) - 3600},
                  {"nonce": "replayed"}, {"preferred_username": "mallory"}):  # fmt: skip
        Provider.claims = {"preferred_username": "olivia", **wrong}
        answer = _sign_in(console)
        assert answer.status_code == 401, wrong
        assert "careops_session" not in console.cookies


def test_a_callback_without_its_login_cookie_is_refused(
    console: TestClient, db: Database, settings: Settings
) -> None:
    create_user(db, settings, "olivia", None, ["scheduler"], actor="test")
    start = console.get("/console/oidc/login", follow_redirects=False)
    back = urlparse(httpx.get(start.headers["location"], follow_redirects=False).headers["location"])
    console.cookies.clear()  # a forged callback from another browser
    assert console.get(f"{back.path}?{back.query}", follow_redirects=False).status_code == 401


def test_sso_only_users_have_no_password(console: TestClient, db: Database, settings: Settings) -> None:
    from tests.governance.test_console_login import login

    create_user(db, settings, "olivia", None, ["scheduler"], actor="test")
    assert login(console, "olivia", "!sso") == 401
