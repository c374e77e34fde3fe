"""What every console page needs: its settings (from the environment), its one-line error, and
HTTP calls to the system's services with the model servers' token and a readable refusal."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

import requests

TIMEOUT_S = 60


class ConsoleError(Exception):
    """A readable one-line reason something could not be shown or done."""


@dataclass(frozen=True)
class Settings:
    """From the environment (`python -m console` sets it from its options; the chart from values)."""
    servers: dict[str, str] = field(default_factory=dict)   # model name -> base URL
    tracks: dict[str, dict[str, str]] = field(default_factory=dict)  # model -> track -> base URL
    store: str | None = None
    recorder: str | None = None
    namespace: str | None = None
    kubeconfig: str | None = None
    control: bool = False                                  # rollout buttons enabled
    token_file: str | None = None                          # model servers' bearer token
    recorder_token_file: str | None = None                 # the recorder's write token (else token_file's)

    @classmethod
    def from_env(cls, env=None) -> "Settings":
        env = os.environ if env is None else env
        servers, tracks = parse_endpoints(env.get("DON_CONSOLE_SERVERS", ""))
        return cls(servers=servers, tracks=tracks,
                   store=env.get("DON_CONSOLE_STORE") or None,
                   recorder=env.get("DON_CONSOLE_RECORDER") or None,
                   namespace=env.get("DON_CONSOLE_NAMESPACE") or None,
                   kubeconfig=env.get("DON_CONSOLE_KUBECONFIG") or None,
                   control=env.get("DON_CONSOLE_CONTROL", "").lower() in ("1", "true", "yes"),
                   token_file=env.get("DON_API_TOKEN_FILE") or None,
                   recorder_token_file=env.get("DON_CONSOLE_RECORDER_TOKEN_FILE") or None)

    def token(self) -> str | None:
        if not self.token_file:
            return os.environ.get("DON_API_TOKEN") or None
        return _read_token(self.token_file, "API token file")

    def recorder_token(self) -> str | None:
        """What the console sends with the lab results it imports."""
        if not self.recorder_token_file:
            return self.token()
        return _read_token(self.recorder_token_file, "recorder token file")


def _read_token(path: str, what: str) -> str | None:
    try:
        return open(path).read().strip() or None
    except OSError as exc:
        raise ConsoleError(f"{what} {path}: {exc.strerror or exc}") from None


def parse_endpoints(text: str) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """`NAME=URL` (a model's address, what its callers use) and `NAME@TRACK=URL` (one track of it,
    e.g. the stable or the canary Service), comma-separated; the first model is the default.
    Returns ({model: address}, {model: {track: URL}}); a model given only by tracks gets its
    stable (else first) track as its address."""
    servers: dict[str, str] = {}
    tracks: dict[str, dict[str, str]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, url = item.partition("=")
        name, at, track = (part.strip() for part in key.partition("@"))
        if (not sep or not name or (at and not re.match(r"^[a-z0-9][a-z0-9-]*$", track))
                or not re.match(r"^https?://", url.strip())):
            raise ConsoleError(f"model server {item!r}: expected NAME=http://HOST:PORT or "
                               "NAME@TRACK=http://HOST:PORT (TRACK: stable, canary, ...)")
        url = url.strip().rstrip("/")
        if at:
            tracks.setdefault(name, {})[track] = url
            servers.setdefault(name, "")
        else:
            servers[name] = url
    for name, url in servers.items():
        if not url:
            found = tracks[name]
            servers[name] = found.get("stable") or next(iter(found.values()))
    return servers, tracks


def parse_servers(text: str) -> dict[str, str]:
    """{model: address} of `parse_endpoints`; the first is the default (the stable model)."""
    return parse_endpoints(text)[0]


def bearer(token: str | None) -> dict:
    return {"Authorization": f"Bearer {token}"} if token else {}


def auth_headers(settings: Settings) -> dict:
    """What the console sends to the model servers."""
    return bearer(settings.token())


def refusal(response: requests.Response) -> str:
    try:
        doc = response.json()
        message = doc.get("error") or doc.get("detail") or doc.get("message") or json.dumps(doc)
    except ValueError:
        message = response.text.strip()[:300]
    return f"{response.status_code}: {str(message)[:400]}"


def call(method: str, url: str, settings: Settings, headers: dict | None = None,
         **kwargs) -> requests.Response:
    try:
        response = requests.request(method, url, headers=auth_headers(settings) if headers is None else headers,
                                    timeout=TIMEOUT_S, **kwargs)
    except requests.RequestException as exc:
        raise ConsoleError(f"{url}: cannot connect ({type(exc).__name__})") from None
    if response.status_code >= 400:
        raise ConsoleError(f"{url} refused the request: {refusal(response)}")
    return response


def recorder_url(settings: Settings, path: str) -> str:
    """The prediction recorder's `path`; ConsoleError when the console has none."""
    if not settings.recorder:
        raise ConsoleError("no prediction recorder configured (--recorder)")
    return settings.recorder.rstrip("/") + path
