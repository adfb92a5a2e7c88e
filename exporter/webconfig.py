"""--web.config.file: TLS and basic auth in the Prometheus exporter-toolkit format.

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # mTLS
      client_ca_file: clients-ca.crt
      min_version: TLS12
    http_server_config:
      headers: {Strict-Transport-Security: max-age=31536000}
    basic_auth_users:
      prometheus: $2y$10$...   # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\\n')

When users are configured every path but /-/healthy needs them (health
checks of orchestrators carry no credentials). Passwords are checked with
bcrypt on a worker thread, an unknown user costs the same as a wrong
password, and a successful check is cached, so a scrape does not pay
bcrypt's deliberate ~100 ms every time.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml
from aiohttp import web
from aiohttp.typedefs import Middleware

OPEN_PATHS = frozenset({"/-/healthy"})

_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version"}
# Keys of the Go implementation that have no faithful Python equivalent: an
# error, not silently ignored, because they are security settings.
_UNSUPPORTED_TLS_KEYS = {"cipher_suites", "curve_preferences", "prefer_server_cipher_suites", "client_allowed_sans"}
# A valid bcrypt hash of a random password: checked for unknown users, so
# they take as long as known ones.
_DUMMY_HASH = bcrypt.hashpw(b"backup-exporter-unknown-user", bcrypt.gensalt(rounds=10))
_CACHE_SIZE = 256


class WebConfigError(Exception):
    pass


@dataclass(frozen=True)
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)


def load_web_config(path: str | Path) -> WebConfig:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = yaml.safe_load(text) or {}
    except (OSError, UnicodeError, yaml.YAMLError) as exc:
        raise WebConfigError(f"{source}: cannot read web config: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise WebConfigError(f"{source}: expected a mapping at the top level")
    base = Path(path).absolute().parent
    _only(source, "", data, {"tls_server_config", "http_server_config", "basic_auth_users"})
    return WebConfig(
        ssl_context=_tls(source, data.get("tls_server_config"), base),
        users=_users(source, data.get("basic_auth_users")),
        headers=_headers(source, data.get("http_server_config")),
    )


def _only(source: str, where: str, data: Mapping[str, Any], allowed: set[str]) -> None:
    for key in data:
        if key not in allowed:
            raise WebConfigError(f"{source}: {where}{key}: unknown key")


def _file(source: str, key: str, value: Any, base: Path) -> str:
    if not isinstance(value, str) or not value:
        raise WebConfigError(f"{source}: tls_server_config.{key}: expected a file name")
    path = (base / value).resolve()
    if not path.is_file():
        raise WebConfigError(f"{source}: tls_server_config.{key}: {path} does not exist")
    return str(path)


def _tls(source: str, data: Any, base: Path) -> ssl.SSLContext | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise WebConfigError(f"{source}: tls_server_config: expected a mapping")
    for key in data:
        if key in _UNSUPPORTED_TLS_KEYS:
            raise WebConfigError(f"{source}: tls_server_config.{key}: not supported by backup-exporter")
    _only(source, "tls_server_config.", data, _TLS_KEYS)
    for key in ("min_version", "max_version"):
        if key in data and data[key] not in _TLS_VERSIONS:
            raise WebConfigError(
                f"{source}: tls_server_config.{key}: {data[key]!r} is not one of {', '.join(_TLS_VERSIONS)}"
            )
    auth_type = data.get("client_auth_type", "NoClientCert")
    if auth_type not in _CLIENT_AUTH:
        raise WebConfigError(
            f"{source}: tls_server_config.client_auth_type: {auth_type!r} is not one of {', '.join(_CLIENT_AUTH)}"
        )
    if _CLIENT_AUTH[auth_type] != ssl.CERT_NONE and "client_ca_file" not in data:
        raise WebConfigError(f"{source}: tls_server_config.client_ca_file: needed for {auth_type}")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _TLS_VERSIONS[data.get("min_version", "TLS12")]
    if "max_version" in data:
        context.maximum_version = _TLS_VERSIONS[data["max_version"]]
    try:
        context.load_cert_chain(
            _file(source, "cert_file", data.get("cert_file"), base),
            _file(source, "key_file", data.get("key_file"), base),
        )
        context.verify_mode = _CLIENT_AUTH[auth_type]
        if context.verify_mode != ssl.CERT_NONE:
            context.load_verify_locations(_file(source, "client_ca_file", data["client_ca_file"], base))
    except ssl.SSLError as exc:
        raise WebConfigError(f"{source}: tls_server_config: cannot load certificates: {exc.reason}") from None
    return context


def _users(source: str, data: Any) -> dict[str, bytes]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise WebConfigError(f"{source}: basic_auth_users: expected a mapping of user to bcrypt hash")
    users: dict[str, bytes] = {}
    for user, hashed in data.items():
        if not isinstance(user, str) or not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            # Never echo the value: it might be a plain-text password by mistake.
            raise WebConfigError(f"{source}: basic_auth_users.{user}: expected a bcrypt hash")
        users[user] = hashed.encode()
    return users


def _headers(source: str, data: Any) -> dict[str, str]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise WebConfigError(f"{source}: http_server_config: expected a mapping")
    _only(source, "http_server_config.", data, {"headers", "http2"})
    headers = data.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise WebConfigError(f"{source}: http_server_config.headers: expected a mapping of strings")
    return dict(headers)


class BasicAuthChecker:
    def __init__(self, users: Mapping[str, bytes]) -> None:
        self._users = dict(users)
        self._cache: OrderedDict[bytes, None] = OrderedDict()

    async def check(self, header: str | None) -> bool:
        user, password = _credentials(header)
        if user is None or password is None:
            return False
        hashed = self._users.get(user)
        key = hashlib.sha256(b"\0".join((user.encode(), password.encode(), hashed or b""))).digest()
        if hashed is not None and key in self._cache:
            self._cache.move_to_end(key)
            return True
        ok = await asyncio.to_thread(bcrypt.checkpw, password.encode(), hashed or _DUMMY_HASH)
        if ok and hashed is not None:
            self._cache[key] = None
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
            return True
        return False


def _credentials(header: str | None) -> tuple[str | None, str | None]:
    if not header or header[:6].lower() != "basic ":
        return None, None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError):
        return None, None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None, None
    return user, password


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def middleware(config: WebConfig) -> Middleware:
    checker = BasicAuthChecker(config.users) if config.users else None

    @web.middleware
    async def web_config_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            checker is not None
            and request.path not in OPEN_PATHS
            and not await checker.check(request.headers.get("Authorization"))
        ):
            response: web.StreamResponse = web.Response(
                status=401,
                text="Unauthorized\n",
                headers={"WWW-Authenticate": 'Basic realm="backup-exporter", charset="UTF-8"'},
            )
            response.headers.update(config.headers)
            return response
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            # 404, 405 and any raised HTTP error: the configured headers
            # (X-Frame-Options, HSTS, ...) belong on every answer.
            exc.headers.update(config.headers)
            raise
        response.headers.update(config.headers)
        return response

    return web_config_middleware
