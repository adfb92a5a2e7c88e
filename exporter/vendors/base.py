"""What every vendor module shares: the client protocol, the error kinds, and
one HTTP helper that owns timeouts, retries, re-login and size limits.

A vendor module provides a `VendorClient` class and pure `parse_*` functions;
it never sleeps, retries or counts requests itself: `HttpClient` does.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from exporter.model import Collection

if TYPE_CHECKING:
    from exporter.config import TargetConfig

log = logging.getLogger(__name__)

ERROR_REASONS: tuple[str, ...] = ("timeout", "auth", "http", "parse", "connection", "config")

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_RETRIES = 3
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Retry-After beyond this is not worth waiting for inside one collection:
# fail now and let the next poll try.
MAX_RETRY_AFTER_SECONDS = 60.0


# Normalised job types whose runs create no recovery point: restores (Keepit
# restore/srestore/pstrestore, AvePoint and Commvault restore), exports and
# downloads, and jobs that prune data (deletion, retention, data aging).
_NO_RECOVERY_POINT = re.compile(r".*restore.*|export|zipdownload|deletion|retention|data_aging")


def creates_recovery_points(job_type: str) -> bool:
    """Whether runs of this job type back data up, so the job has an RPO."""
    return _NO_RECOVERY_POINT.fullmatch(job_type) is None


class CollectionError(Exception):
    """A collection of one target failed; `reason` is the error-metric label.

    Messages must never contain secrets, nor long upstream bodies.
    """

    reason: ClassVar[str] = "http"


class TimeoutCollectionError(CollectionError):
    reason = "timeout"


class AuthError(CollectionError):
    reason = "auth"


class HTTPStatusError(CollectionError):
    reason = "http"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ParseError(CollectionError):
    reason = "parse"


class ConnectionCollectionError(CollectionError):
    reason = "connection"


class TargetConfigError(CollectionError):
    reason = "config"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()

    def text(self) -> str:
        # utf-8-sig drops the BOM some Windows servers put in front of bodies.
        return self.body.decode("utf-8-sig", errors="replace")


class Authenticator(Protocol):
    """How a vendor authenticates; HttpClient calls it around each request."""

    async def headers(self, http: HttpClient) -> Mapping[str, str]:
        """Headers to add to a request, logging in first if there is no session."""
        ...

    async def invalidate(self, http: HttpClient) -> None:
        """The server said 401: forget the session so `headers` logs in again."""
        ...


class NoAuth:
    async def headers(self, http: HttpClient) -> Mapping[str, str]:
        return {}

    async def invalidate(self, http: HttpClient) -> None:
        return None


@dataclass
class RequestStats:
    """Requests made to the vendor, by HTTP code ("error" when none came back)."""

    by_code: Counter[str] = field(default_factory=Counter)


def build_ssl_context(ca_file: str | None, insecure_skip_verify: bool) -> ssl.SSLContext | bool:
    """aiohttp's `ssl` for a target: verification on against the system's CAs,
    or against `ca_file` alone when given; off only when asked for."""
    if insecure_skip_verify:
        return False
    if not ca_file:
        return True
    try:
        return ssl.create_default_context(cafile=ca_file)
    except OSError as exc:  # ssl.SSLError is one
        # The config loader checked the file, so it changed since. Never fall
        # back to less verification: trust nothing, and say why.
        log.error(
            "cannot load tls.ca_file: no certificate will be trusted",
            extra={"ca_file": ca_file, "error": exc.strerror or str(exc)},
        )
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


class TlsVerificationError(CollectionError):
    """The vendor's certificate was refused. Not a ConnectionCollectionError, so
    HttpClient does not retry it: it fails alike until the certificate or the
    target's tls settings change."""

    reason = "connection"


# OpenSSL's X509_V_ERR_CERT_NOT_YET_VALID, _CERT_HAS_EXPIRED, _HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH.
_VERIFY_NOT_IN_VALIDITY = frozenset({9, 10})
_VERIFY_NAME_MISMATCH = frozenset({62, 64})


def _no_response_error(method: str, url: URL, exc: BaseException) -> CollectionError:
    """The error of a request that got no response; TLS failures say so, and what to do."""
    where = f"{method} {url.path}"
    peer = f"{url.host}:{url.port}"
    refused = _certificate_error(exc)
    if refused is not None:
        detail = (refused.verify_message or str(refused)).rstrip(".")
        return TlsVerificationError(
            f"{where}: TLS certificate verification failed for {peer}: {detail} ({_tls_hint(refused, url)})"
        )
    handshake = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
    if isinstance(handshake, ssl.SSLError):
        return ConnectionCollectionError(
            f"{where}: TLS handshake with {peer} failed: {handshake} (does it serve https on this port?)"
        )
    # aiohttp's message carries host and errno only, never credentials.
    return ConnectionCollectionError(f"{where}: {type(exc).__name__}: {exc}")


def _certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cause: BaseException = exc.certificate_error
    else:
        cause = exc
    return cause if isinstance(cause, ssl.SSLCertVerificationError) else None


def _tls_hint(refused: ssl.SSLCertVerificationError, url: URL) -> str:
    if refused.verify_code in _VERIFY_NAME_MISMATCH:
        return f"the certificate does not hold the name {url.host}: use a name it holds in the URL"
    if refused.verify_code in _VERIFY_NOT_IN_VALIDITY:
        return "the vendor's certificate is outside its validity period, or this machine's clock is wrong"
    return "set the target's tls.ca_file to a PEM file holding the CA certificate that issued it"


class HttpClient:
    """One per target: a pooled aiohttp session plus the policies every vendor needs.

    - bounded retries with exponential backoff and full jitter on connection
      errors and 429/5xx, honouring Retry-After (seconds or HTTP date);
    - one re-login on 401 through the Authenticator, then AuthError;
    - bodies over `max_body_bytes` are refused without being buffered whole;
    - every response is counted by code in `stats`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        ssl_context: ssl.SSLContext | bool = True,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff_base: float = 0.5,
        backoff_cap: float = 10.0,
        user_agent: str = "backup-exporter",
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.base_url = URL(base_url.rstrip("/") + "/")
        self.auth: Authenticator = NoAuth()
        self.stats = RequestStats()
        self._ssl = ssl_context
        self._max_body = max_body_bytes
        self._max_retries = max_retries
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._user_agent = user_agent
        self._sleep = sleep
        self._session: aiohttp.ClientSession | None = None
        # Event-loop time by which the current collection must end (set by
        # the poller). A retry that would sleep past it fails at once with the
        # real error, instead of the collection ending as a bare timeout.
        self.deadline: float | None = None

    def url(self, path: str) -> URL:
        """An absolute URL for `path`, relative to the configured base URL.

        An absolute http(s) URL is returned unchanged (vendors hand out
        next-page links in either form).
        """
        if path.startswith(("http://", "https://")):
            return URL(path, encoded=True)
        return self.base_url.join(URL(path.lstrip("/"), encoded=True))

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=4),
                headers={"User-Agent": self._user_agent},
                # Authentication is by explicit headers only: a vendor's session
                # cookie (Veeam EM sets one) must not silently take precedence.
                cookie_jar=aiohttp.DummyCookieJar(),
                # The poller bounds the whole collection; this only stops one
                # silent socket from eating all of it.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        data: bytes | str | Mapping[str, str] | None = None,
        authenticate: bool = True,
        ok: Callable[[int], bool] = lambda status: 200 <= status < 300,
    ) -> Response:
        """Send one logical request; return the response or raise CollectionError."""
        url = self.url(path)
        if authenticate and url.origin() != self.base_url.origin():
            # A next-page link from the vendor must never carry our token to
            # another host.
            raise ParseError(f"{method}: refusing to send credentials to {url.host}, not {self.base_url.host}")
        relogged = False
        attempt = 0
        while True:
            all_headers: dict[str, str] = dict(headers or {})
            if authenticate:
                all_headers.update(await self.auth.headers(self))
            try:
                response = await self._send(method, url, params, all_headers, data)
            except ConnectionCollectionError:
                delay = self._backoff(attempt)
                if attempt >= self._max_retries or self._past_deadline(delay):
                    raise
                await self._sleep(delay)
                attempt += 1
                continue
            if response.status == 401 and authenticate and not relogged:
                # Sessions expire (idle timeouts, rotated tokens), also in the
                # middle of paging: log in again once, then repeat this request.
                relogged = True
                await self.auth.invalidate(self)
                continue
            if response.status in (401, 403):
                raise AuthError(f"{method} {url.path}: HTTP {response.status} (check credentials and permissions)")
            if response.status in RETRY_STATUSES and attempt < self._max_retries:
                delay = self._retry_after(response) or self._backoff(attempt)
                if delay > MAX_RETRY_AFTER_SECONDS or self._past_deadline(delay):
                    raise HTTPStatusError(
                        f"{method} {url.path}: HTTP {response.status} (no time left to retry after {delay:.1f}s)",
                        response.status,
                    )
                await self._sleep(delay)
                attempt += 1
                continue
            if not ok(response.status):
                raise HTTPStatusError(f"{method} {url.path}: HTTP {response.status}", response.status)
            return response

    async def _send(
        self,
        method: str,
        url: URL,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str],
        data: bytes | str | Mapping[str, str] | None,
    ) -> Response:
        try:
            async with self.session.request(method, url, params=params, headers=headers, data=data) as resp:
                body = await self._read_limited(resp, method, url)
                self.stats.by_code[str(resp.status)] += 1
                # CIMultiDict: header names are case-insensitive.
                return Response(resp.status, CIMultiDict(resp.headers), body, str(resp.url))
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
            self.stats.by_code["error"] += 1
            raise _no_response_error(method, url, exc) from exc
        except aiohttp.ClientResponseError as exc:
            self.stats.by_code["error"] += 1
            raise HTTPStatusError(f"{method} {url.path}: {exc.message}", exc.status) from exc

    async def _read_limited(self, resp: aiohttp.ClientResponse, method: str, url: URL) -> bytes:
        declared = resp.content_length
        if declared is not None and declared > self._max_body:
            raise ParseError(f"{method} {url.path}: body of {declared} bytes exceeds the {self._max_body} byte limit")
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(65536):
            size += len(chunk)
            if size > self._max_body:
                raise ParseError(f"{method} {url.path}: body exceeds the {self._max_body} byte limit")
            chunks.append(chunk)
        return b"".join(chunks)

    def _past_deadline(self, delay: float) -> bool:
        return self.deadline is not None and asyncio.get_running_loop().time() + delay >= self.deadline

    def _backoff(self, attempt: int) -> float:
        # Full jitter (AWS architecture blog): spreads retries of many targets.
        return random.uniform(0, min(self._backoff_cap, self._backoff_base * 2**attempt))

    @staticmethod
    def _retry_after(response: Response) -> float | None:
        if response.status not in (429, 503):
            return None
        value = response.headers.get("Retry-After")
        if not value:
            return None
        value = value.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - datetime.now(when.tzinfo)).total_seconds())


class VendorClient(Protocol):
    """A vendor's client. One instance per target, living as long as its config.

    `collect` returns finished runs since `since` plus every run in progress.
    It raises CollectionError subclasses only; anything else is a bug that the
    poller still contains and counts as a parse error.
    """

    def __init__(self, target: TargetConfig, http: HttpClient) -> None: ...

    async def collect(self, since: datetime, now: datetime) -> Collection: ...

    async def close(self) -> None:
        """Log out, where the vendor has sessions. Must not raise."""
        ...


@dataclass(frozen=True)
class VendorSpec:
    """What the config loader and the poller need to know about a vendor."""

    name: str
    client: type[VendorClient]
    # Vendor-specific config keys and their expected Python types.
    options: Mapping[str, type | tuple[type, ...]]
    # Keys holding secrets: accepted inline, from ${ENV}, or as <key>_file.
    secrets: tuple[str, ...]
    required: tuple[str, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)
    # Label names the vendor puts on backup_job_info; static target labels
    # may not use them.
    info_labels: tuple[str, ...] = ()
    # Options that take one of a fixed set of values, checked at config load
    # (so --check-config catches them, not the first poll).
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # False for vendors that do not log in with username/password (OAuth
    # client credentials): the keys are then unknown, not silently ignored.
    credentials: bool = True
    # Checks of a target's values beyond their types (a URL suffix, a list
    # of service names): (key, message) pairs, reported by the config loader
    # under the target's key path, so --check-config catches them.
    validate: Callable[[TargetConfig], list[tuple[str, str]]] | None = None
    # Which of the vendor's job types create recovery points. Only those have
    # an RPO (backup_job_rpo_seconds): nobody is paged because no restore ran.
    protects: Callable[[str], bool] = creates_recovery_points
    # What `--check-config` says a target will collect, from its options
    # (defaults applied): the requests it makes and what filters them.
    describe: Callable[[Mapping[str, Any]], str] | None = None


# --- --check-config --connect ----------------------------------------------------

# What to look at for each kind of failure; auth hints come from the vendor
# client's `auth_hint`, as only the vendor module knows what its account needs.
CONNECT_HINTS: dict[str, str] = {
    "timeout": "no complete answer within the target's timeout: check that the host answers on that port "
    "(firewall, proxy), or raise the target's timeout",
    "connection": "nothing answered at the URL: check its host name, port and DNS, and that this machine may reach it",
    "tls": "the TLS connection failed: set tls.ca_file to the CA certificate that issued the vendor's certificate, "
    "use a host name the certificate holds, or check that the port serves https",
    "http": "the vendor answered with an HTTP error: check that the URL is the API's base (path included) "
    "and the vendor's service status",
    "parse": "the answer is not the vendor's API: check that the URL points at the API and not at a web page, "
    "login page or proxy",
    "config": "a target setting is wrong: see the message",
    "auth": "check the credentials and that the account may read backup jobs",
}


@dataclass(frozen=True)
class ConnectResult:
    target: str
    # None when the check passed.
    reason: str | None
    detail: str
    hint: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is None

    def render(self) -> str:
        if self.reason is None:
            return f"connect {self.target}: ok: {self.detail}"
        return f"connect {self.target}: FAILED reason={self.reason}: {self.detail}\n  hint: {self.hint}"


async def check_connection(target: TargetConfig, spec: VendorSpec, *, now: datetime | None = None) -> ConnectResult:
    """Log in to the target and make its vendor's cheapest authenticated request,
    within the target's timeout. Never raises (but CancelledError)."""
    now = now or datetime.now(UTC)
    timeout = target.timeout.total_seconds()
    # One retry: a check should answer soon; a flaky vendor shows up anyway.
    http = HttpClient(
        target.url,
        ssl_context=build_ssl_context(target.tls.ca_file, target.tls.insecure_skip_verify),
        max_retries=1,
    )
    http.deadline = asyncio.get_running_loop().time() + timeout
    client: VendorClient | None = None
    try:
        client = spec.client(target, http)
        async with asyncio.timeout(timeout):
            found = await _probe(client, target, now)
        return ConnectResult(target.name, None, found)
    except TimeoutError:
        return _connect_failed(target, spec, TimeoutCollectionError(f"no answer within the timeout of {timeout:g}s"))
    except CollectionError as exc:
        return _connect_failed(target, spec, exc)
    except Exception as exc:
        return _connect_failed(target, spec, ParseError(f"unexpected {type(exc).__name__} reading the answer"))
    finally:
        await _close_quietly(client, http)


async def _probe(client: VendorClient, target: TargetConfig, now: datetime) -> str:
    # `check(now) -> str`: the client's cheapest request that proves login and read access.
    check = getattr(client, "check", None)
    if check is not None:
        found: str = await check(now)
        return found
    # A vendor without a cheaper check: one real collection over the lookback.
    collection = await client.collect(now - target.lookback, now)
    counts = ", ".join(f"{key}={value}" for key, value in collection.summary.items())
    return f"collected {len(collection.runs)} runs" + (f" ({counts})" if counts else "")


def _connect_failed(target: TargetConfig, spec: VendorSpec, error: CollectionError) -> ConnectResult:
    reason = connect_reason(error)
    hint = getattr(spec.client, "auth_hint", None) if reason == "auth" else None
    return ConnectResult(target.name, reason, str(error)[:500], hint or CONNECT_HINTS[reason])


def connect_reason(error: CollectionError) -> str:
    """The error's reason, with TLS failures told apart from other connection errors."""
    if isinstance(error, TlsVerificationError) or (
        isinstance(error, ConnectionCollectionError) and "TLS handshake" in str(error)
    ):
        return "tls"
    return error.reason if error.reason in CONNECT_HINTS else "http"


async def _close_quietly(client: VendorClient | None, http: HttpClient) -> None:
    if client is not None:
        try:
            # Logs out where the vendor has sessions; bounded, the check is over.
            await asyncio.wait_for(client.close(), timeout=10)
        except Exception as exc:
            log.debug("closing the vendor session after the check failed: %s", type(exc).__name__)
    await http.close()
