"""The shared payload readers: the safety guarantees every vendor relies on."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.vendors.base import ParseError
from exporter.vendors.payload import load_json, load_xml, short

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<jobs>&lol2;</jobs>"""
EXTERNAL = b"""<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>"""


@pytest.mark.parametrize("body", [BOMB, EXTERNAL, b"<a><b></a>", b"", b"not xml"])
def test_hostile_or_malformed_xml_is_a_parse_error(body: bytes) -> None:
    with pytest.raises(ParseError) as caught:
        load_xml(body, "test")
    assert "root:" not in str(caught.value)  # no file content, no body text


def test_xml_repeated_elements_are_lists_even_when_single() -> None:
    doc = load_xml("\ufeff<jobs><job><id>1</id></job></jobs>", "test", force_list=("job",))
    assert doc == {"jobs": {"job": [{"id": "1"}]}}


@pytest.mark.parametrize("body", [b"NaN", b'{"a": Infinity}', b"{", b"\xff\xfe", b'{"a": 1}garbage'])
def test_malformed_json_is_a_parse_error(body: bytes) -> None:
    with pytest.raises(ParseError):
        load_json(body, "test")


def test_json_with_a_bom() -> None:
    assert load_json(b'\xef\xbb\xbf{"a": [1, 2.5]}', "test") == {"a": [1, 2.5]}


@given(st.text())
def test_short_is_one_bounded_line(text: str) -> None:
    result = short(text, 40)
    assert len(result) <= 40
    assert "\n" not in result
    assert "\t" not in result


@given(st.binary())
def test_readers_raise_only_parse_error(body: bytes) -> None:
    for reader in (load_json, load_xml):
        with contextlib.suppress(ParseError):
            reader(body, "test")
