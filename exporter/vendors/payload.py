"""Reading vendor payloads safely: what every vendor's parsers share.

All failures become ParseError with a short message that quotes positions,
never body text (a body may hold anything, including an echoed credential).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from xml.parsers.expat import ExpatError

import xmltodict

from exporter.vendors.base import ParseError

# Sizes and counts are Int64 at every vendor: a figure at or past this is
# corrupt, not a size (and one past 1e308 cannot even be rendered as a sample).
INT64_LIMIT = 2**63


def short(text: str, limit: int = 80) -> str:
    """`text` on one line, cut to `limit` characters, for messages and reasons."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def decode(body: bytes | str) -> str:
    """Body text; utf-8-sig drops the BOM some Windows servers put in front."""
    if isinstance(body, str):
        return body.removeprefix("\ufeff")
    return body.decode("utf-8-sig")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_json(body: bytes | str, what: str) -> Any:
    """Parsed JSON; NaN and Infinity (which Python's json accepts) are refused."""
    try:
        return json.loads(decode(body), parse_constant=_refuse_constant)
    except (ValueError, UnicodeError, RecursionError) as exc:
        # json's messages quote positions, not body text.
        raise ParseError(f"{what}: malformed JSON ({short(str(exc), 60)})") from None


def load_xml(
    body: bytes | str,
    what: str,
    *,
    force_list: Sequence[str] = (),
    namespaces: Mapping[str, str | None] | None = None,
) -> dict[str, Any]:
    """The document as xmltodict builds it: {root name: content}.

    Entities stay forbidden (xmltodict 1.0's default, passed explicitly so a
    library change cannot undo it): a DTD with `<!ENTITY>` fails at once
    instead of expanding into a billion laughs or reading a local file.
    `force_list` names every element that may repeat, so one child still
    comes back as a list. `namespaces` maps namespace URIs to prefixes (None
    strips one); elements of other namespaces keep theirs and so match nothing.
    """
    options: dict[str, Any] = {"force_list": tuple(force_list), "disable_entities": True}
    if namespaces is not None:
        options |= {"process_namespaces": True, "namespaces": dict(namespaces)}
    try:
        doc = xmltodict.parse(body, **options)
    # LookupError: the XML declaration names an encoding Python does not
    # know (`encoding="x-bogus"`) or one that is no text encoding ("rot13").
    except (ExpatError, ValueError, TypeError, UnicodeError, LookupError, RecursionError) as exc:
        raise ParseError(f"{what}: malformed XML ({short(str(exc))})") from None
    if not isinstance(doc, dict) or not doc:
        raise ParseError(f"{what}: no root element")
    return doc
