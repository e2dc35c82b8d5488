"""Start the test OIDC provider as its own process, and a cookie-keeping HTTP client.

``running_provider`` generates the provider's RSA signing key, picks a free loopback port,
starts ``tests/oidc_provider/serve.py`` there and waits for its discovery document. Nothing
of OpsDash's runs inside it: OpsDash reaches it over HTTP as it would reach Keycloak.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.parse import urlencode, urljoin

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.oidc_provider.serve import PASSWORD, USERS

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 40

__all__ = ["PASSWORD", "USERS", "Client", "Provider", "Response", "running_provider"]


@dataclass(frozen=True)
class Provider:
    url: str
    client_id: str
    client_secret: str
    control_token: str

    @property
    def issuer(self) -> str:
        return f"{self.url}/o"

    def _control(self, path: str, body: dict[str, object]) -> None:
        request = urllib.request.Request(
            f"{self.url}/control/{path}",
            data=json.dumps(body).encode(),
            headers={"X-Control-Token": self.control_token},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def allow_redirect(self, uri: str, *, after_logout: str = "") -> None:
        """Let the provider send users back to ``uri`` (OpsDash's callback on its port), and
        to ``after_logout`` once they sign out there."""
        self._control("redirect-uris/", {"uris": [uri], "after_logout": [after_logout]})

    def set_groups(self, username: str, groups: list[str]) -> None:
        self._control(f"groups/{username}/", {"groups": groups})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_provider(folder: Path) -> Iterator[Provider]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (folder / "rsa.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    port = _free_port()
    provider = Provider(
        url=f"http://127.0.0.1:{port}",
        client_id="opsdash-test",
        client_secret=secrets.token_urlsafe(24),
        control_token=secrets.token_urlsafe(16),
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PROVIDER_DIR": str(folder),
        "PROVIDER_ISSUER": provider.issuer,
        "PROVIDER_CLIENT_ID": provider.client_id,
        "PROVIDER_CLIENT_SECRET": provider.client_secret,
        "PROVIDER_CONTROL_TOKEN": provider.control_token,
    }
    log = (folder / "provider.log").open("w")
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.oidc_provider.serve", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                discovery = f"{provider.issuer}/.well-known/openid-configuration"
                with urllib.request.urlopen(discovery, timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError):
                if child.poll() is not None or time.monotonic() > deadline:
                    output = (folder / "provider.log").read_text()
                    raise AssertionError(
                        f"the test OIDC provider did not start:\n{output}"
                    ) from None
                time.sleep(0.1)
        yield provider
    finally:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(5)
        log.close()


@dataclass(frozen=True)
class Response:
    url: str
    status: int
    body: str
    location: str = ""


class _Stop(urllib.request.HTTPRedirectHandler):
    """Follows redirects, except to a URL starting with ``stop_at`` (which it hands back)."""

    def __init__(self) -> None:
        self.stop_at: str | None = None

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        if self.stop_at and newurl.startswith(self.stop_at):
            return None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class Client:
    """A browser without JavaScript: one cookie jar for OpsDash and the provider."""

    def __init__(self) -> None:
        self.cookies = CookieJar()
        self._redirects = _Stop()
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.cookies), self._redirects
        )

    def open(
        self, url: str, data: dict[str, str] | None = None, *, stop_at: str | None = None
    ) -> Response:
        """GET (or POST ``data``), following redirects until one leads to ``stop_at``."""
        self._redirects.stop_at = stop_at
        body = urlencode(data).encode() if data is not None else None
        try:
            with self._opener.open(url, data=body, timeout=20) as response:
                return Response(response.url, response.status, response.read().decode())
        except urllib.error.HTTPError as error:
            location = urljoin(error.url, error.headers.get("Location", ""))
            return Response(error.url, error.code, error.read().decode(), location)

    def sign_in_at_provider(
        self, page: Response, username: str, *, stop_at: str | None = None
    ) -> Response:
        """Fill in the provider's sign-in form ``page`` and follow where it leads."""
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.body)
        assert token, f"no sign-in form at {page.url}: {page.body[:300]}"
        next_url = re.search(r'name="next" value="([^"]*)"', page.body)
        return self.open(
            page.url,
            {
                "csrfmiddlewaretoken": token.group(1),
                "username": username,
                "password": PASSWORD,
                "next": html.unescape(next_url.group(1)) if next_url else "",
            },
            stop_at=stop_at,
        )
