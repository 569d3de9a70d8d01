"""Operator input: reasons, host names and token names."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ferry.domain import validation
from ferry.domain.errors import InvalidInput


def _invalid(call: object, *args: str, match: str) -> None:
    assert callable(call)
    with pytest.raises(InvalidInput, match=match) as caught:
        call(*args)
    assert caught.value.code == "invalid_input"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kernel upgrade", "kernel upgrade"),
        ("  padded\t\n", "padded"),
        ("x", "x"),
        ("Wartung: BIOS-Update für Knoten ✓ 🔧", "Wartung: BIOS-Update für Knoten ✓ 🔧"),
        ("交換 ディスク", "交換 ディスク"),
        ("a" * 255, "a" * 255),
        ("  " + "b" * 255 + "  ", "b" * 255),
    ],
)
def test_reason_accepts_and_strips(text: str, expected: str) -> None:
    assert validation.reason(text) == expected


@pytest.mark.parametrize("text", ["", " ", "   \t\n  ", "\u3000"])
def test_reason_must_not_be_empty(text: str) -> None:
    _invalid(validation.reason, text, match="reason must not be empty")


@pytest.mark.parametrize("length", [256, 300, 4096])
def test_reason_too_long_names_its_length(length: int) -> None:
    _invalid(validation.reason, "r" * length, match=rf"\b{length}\b.*\b255\b")


def test_reason_length_counts_after_stripping() -> None:
    assert validation.reason(" " * 10 + "c" * 255 + " " * 10) == "c" * 255
    _invalid(validation.reason, " " + "c" * 256 + " ", match="256")


@pytest.mark.parametrize("text", ["a\tb", "line\nbreak", "nul\x00byte", "bell\x07", "del\x7f!"])
def test_reason_rejects_control_characters(text: str) -> None:
    _invalid(validation.reason, text, match="control characters")


def test_reason_field_name_appears_in_the_message() -> None:
    _invalid(lambda text: validation.reason(text, field="comment"), "", match="^comment ")


_PRINTABLE = st.characters(exclude_categories=["Cc", "Cs"])


@given(st.text(_PRINTABLE, min_size=1, max_size=255).filter(lambda t: t.strip()))
@example("é")
@example("z" * 255)
def test_reason_property_printable_text_is_accepted_stripped(text: str) -> None:
    assert validation.reason(text) == text.strip()


@given(
    st.text(_PRINTABLE, max_size=100),
    st.characters(categories=["Cc"]).filter(lambda c: not c.isspace()),
    st.text(_PRINTABLE, max_size=100),
)
def test_reason_property_control_characters_are_rejected(head: str, ctrl: str, tail: str) -> None:
    assert unicodedata.category(ctrl) == "Cc"
    with pytest.raises(InvalidInput):
        validation.reason(head + ctrl + tail + "x")


@given(st.text(_PRINTABLE, min_size=256, max_size=400).filter(lambda t: len(t.strip()) > 255))
def test_reason_property_long_text_is_rejected(text: str) -> None:
    with pytest.raises(InvalidInput, match=str(len(text.strip()))):
        validation.reason(text)


@pytest.mark.parametrize(
    "name",
    ["a", "7", "node-1", "rack1.node-01", "n" * 63, "compute-0001.dc1.example"],
)
def test_good_host_names(name: str) -> None:
    assert validation.host_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Node-1",
        "node_1",
        "node 1",
        "-node",
        "node-",
        ".node",
        "node.",
        "n" * 64,
        "nöde",
        "node1\n",  # regression: '$' used to let one trailing newline through
        "\nnode1",
    ],
)
def test_bad_host_names(name: str) -> None:
    _invalid(validation.host_name, name, match="invalid host name")


@pytest.mark.parametrize(
    "name", ["a", "ops", "CI_Bot", "alice@example.com", "agent-node-1", "x" * 64, "1.2_3@4-5"]
)
def test_good_token_names(name: str) -> None:
    assert validation.token_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "-ops", ".ops", "_ops", "@ops", "has space", "x" * 65, "semi;colon", "ops\n", "tö"],
)
def test_bad_token_names(name: str) -> None:
    _invalid(validation.token_name, name, match="invalid token name")
