"""The pii detector: validated emails, phones, cards, IBANs, national ids and IPs."""

from __future__ import annotations

import pytest

from firewall.detectors import EMPTY, Match
from firewall.detectors.pii import KINDS, PiiDetector, build


@pytest.fixture(scope="module")
def pii() -> PiiDetector:
    return PiiDetector()


def _found(detector: PiiDetector, text: str) -> list[tuple[str, str]]:
    (result,) = detector.score([text])
    return [(text[m.start : m.end], m.label) for m in result.matches]


def _labels(detector: PiiDetector, text: str) -> set[str]:
    return {label for _, label in _found(detector, text)}


# --- email --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    ["jane.doe+tag@mail.example.co.uk", "x_y-z@sub-domain.example.org", "josé@exämple.de"],
)
def test_email_found(pii: PiiDetector, address: str) -> None:
    assert _found(pii, f"write to {address}, thanks") == [(address, "email")]


@pytest.mark.parametrize(
    "text",
    ["ping @alice on slack", "root@localhost", "a@b", "see foo@bar.1 here", "x..y@example.com"],
)
def test_not_an_email(pii: PiiDetector, text: str) -> None:
    assert "email" not in _labels(pii, text)


def test_email_leading_dots_are_punctuation(pii: PiiDetector) -> None:
    assert _found(pii, "mail...jo@example.com") == []  # glued to "mail"
    assert _found(pii, "mail ...jo@example.com") == [("jo@example.com", "email")]


# --- phone --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [
        "+1 415 555 2671",
        "+442079460958",
        "+33 1 23 45 67 89",
        "+1 (415) 555-2671",
        "(415) 555-2671",
        "415-555-2671",
        "415.555.2671",
        "020 7946 0958",
        "01 23 45 67 89",
        "07700900123",
    ],
)
def test_phone_found(pii: PiiDetector, number: str) -> None:
    assert _found(pii, f"call me on {number} tomorrow") == [(number, "phone")]


@pytest.mark.parametrize(
    "text",
    [
        "released on 2023-01-15 at noon",
        "due 01.02.2023 10:30 sharp",
        "on 15/01/2023",
        "in 2024 and 2025",
        "version 1.2.3 of the tool",
        "Order #12345678901 shipped",
        "order no. 0123 456 789 shipped",
        "invoice 0123456789",
        "dial 555-1234",  # seven digits
        "ISBN 978-3-16-148410-0",
        "ids 00123456789 and 1234567890",
        "+1234567",  # seven digits
        "values 1 85 05 78 006 084 36 in a table",
    ],
)
def test_not_a_phone(pii: PiiDetector, text: str) -> None:
    assert "phone" not in _labels(pii, text), _found(pii, text)


# --- card ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [
        "4111111111111111",  # Visa
        "4111 1111 1111 1111",
        "4012-8888-8888-1881",
        "5555555555554444",  # Mastercard
        "2223 0000 4840 0011",  # Mastercard 2-series
        "3782 822463 10005",  # Amex
        "6011111111111117",  # Discover
    ],
)
def test_card_found(pii: PiiDetector, number: str) -> None:
    assert _found(pii, f"card: {number}.") == [(number, "card")]


@pytest.mark.parametrize(
    "text",
    [
        "card 4111111111111112",  # fails Luhn
        "card 4111 1111 1111 1112",
        "number 1234567812345670",  # passes Luhn, but no network starts with 1
        "run 41111111111111110000",  # a valid card number inside a longer number
        "id x4111111111111111",
        "total 4111111111111111.50",
    ],
)
def test_not_a_card(pii: PiiDetector, text: str) -> None:
    assert "card" not in _labels(pii, text), _found(pii, text)


def test_card_followed_by_another_group(pii: PiiDetector) -> None:
    text = "card 4111 1111 1111 1111 2027"
    assert _found(pii, text) == [("4111 1111 1111 1111", "card")]


# --- IBAN ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "iban",
    [
        "GB82WEST12345698765432",
        "GB82 WEST 1234 5698 7654 32",
        "DE89370400440532013000",
        "FR1420041010050500013M02606",
        "NL91ABNA0417164300",
    ],
)
def test_iban_found(pii: PiiDetector, iban: str) -> None:
    assert _found(pii, f"pay to {iban} today") == [(iban, "iban")]


def test_iban_stops_at_its_country_length(pii: PiiDetector) -> None:
    text = "IBAN GB82 WEST 1234 5698 7654 32 IN LONDON"
    assert _found(pii, text) == [("GB82 WEST 1234 5698 7654 32", "iban")]


@pytest.mark.parametrize(
    "text",
    [
        "pay to GB83WEST12345698765432",  # wrong checksum
        "pay to DE89370400440532013001",  # wrong checksum
        "pay to GB82WEST1234569876543",  # one character short
        "pay to XX82WEST12345698765432",  # no such country
        "pay to MYGB82WEST12345698765432",  # glued
    ],
)
def test_not_an_iban(pii: PiiDetector, text: str) -> None:
    assert "iban" not in _labels(pii, text), _found(pii, text)


# --- national ids -------------------------------------------------------------------


def test_ssn(pii: PiiDetector) -> None:
    assert _found(pii, "SSN 123-45-6789.") == [("123-45-6789", "ssn")]
    assert _found(pii, "SSN 123 45 6789") == [("123 45 6789", "ssn")]


@pytest.mark.parametrize("ssn", ["000-12-3456", "666-12-3456", "900-12-3456", "123-00-4567", "123-45-0000"])
def test_ssn_invalid_areas_groups_serials(pii: PiiDetector, ssn: str) -> None:
    assert _found(pii, f"SSN {ssn}") == []


def test_ssn_not_inside_longer_numbers(pii: PiiDetector) -> None:
    assert _found(pii, "part 1123-45-6789 and 123-45-67890") == []


def test_nino(pii: PiiDetector) -> None:
    assert _found(pii, "NI number AB 12 34 56 C.") == [("AB 12 34 56 C", "nino")]
    assert _found(pii, "NI number AB123456C") == [("AB123456C", "nino")]


@pytest.mark.parametrize("nino", ["QQ123456C", "AO123456A", "BG123456A", "AB123456E", "XAB123456C"])
def test_not_a_nino(pii: PiiDetector, nino: str) -> None:
    assert "nino" not in _labels(pii, f"NI {nino}")


def test_dni_and_nie_check_letter(pii: PiiDetector) -> None:
    assert _found(pii, "DNI 12345678Z, NIE X1234567L") == [
        ("12345678Z", "dni"),
        ("X1234567L", "dni"),
    ]
    assert _found(pii, "DNI 12345678A, NIE X1234567M") == []


def test_insee_key(pii: PiiDetector) -> None:
    assert _found(pii, "NIR 1 85 05 78 006 084 91") == [("1 85 05 78 006 084 91", "insee")]
    assert _found(pii, "NIR 185057800608491") == [("185057800608491", "insee")]
    # Corsica: 2A counts as 19 in the key.
    assert _found(pii, "NIR 2 55 08 2A 123 456 46") == [("2 55 08 2A 123 456 46", "insee")]
    assert "insee" not in _labels(pii, "NIR 1 85 05 78 006 084 92")
    assert "insee" not in _labels(pii, "NIR 1 85 15 78 006 084 91")  # month 15


# --- IP addresses -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host 192.168.1.1 is up", "192.168.1.1"),
        ("connect to 10.0.0.1:8080 now", "10.0.0.1"),
        ("route 10.0.0.0/8.", "10.0.0.0"),
        ("IP:8.8.8.8", "8.8.8.8"),
    ],
)
def test_ipv4(pii: PiiDetector, text: str, expected: str) -> None:
    assert _found(pii, text) == [(expected, "ipv4")]


@pytest.mark.parametrize(
    "text",
    [
        "octets 256.1.1.1",
        "build 1.2.3.4.5",
        "version 1.2.3.4",
        "v1.2.3.4",
        "padded 192.168.001.001",
        "sections 3.1.4.1a",
    ],
)
def test_not_an_ipv4(pii: PiiDetector, text: str) -> None:
    assert "ipv4" not in _labels(pii, text), _found(pii, text)


@pytest.mark.parametrize(
    "address",
    [
        "2001:db8::1",
        "fe80::1ff:fe23:4567:890a",
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        "::ffff:192.0.2.128",
    ],
)
def test_ipv6(pii: PiiDetector, address: str) -> None:
    assert _found(pii, f"address {address} is up") == [(address, "ipv6")]


def test_ipv6_trailing_colon_is_punctuation(pii: PiiDetector) -> None:
    assert _found(pii, "at 2001:db8::1: done") == [("2001:db8::1", "ipv6")]


@pytest.mark.parametrize(
    "text",
    ["at 12:30:45 today", "mac 00:1a:2b:3c:4d:5e", "std::vector<int>", "a :: b", "dead::beef", "::1"],
)
def test_not_an_ipv6(pii: PiiDetector, text: str) -> None:
    assert "ipv6" not in _labels(pii, text), _found(pii, text)


# --- all together -------------------------------------------------------------------


def test_scores_and_ordered_non_overlapping_matches(pii: PiiDetector) -> None:
    text = "Mail a@example.com or call +44 20 7946 0958; card 4111 1111 1111 1111."
    (result,) = pii.score([text])
    assert result.scores == {"email": 1.0, "phone": 1.0, "card": 1.0}
    assert [text[m.start : m.end] for m in result.matches] == [
        "a@example.com",
        "+44 20 7946 0958",
        "4111 1111 1111 1111",
    ]


def test_earlier_kind_wins_an_overlap(pii: PiiDetector) -> None:
    # Digits of an email's local part and of an IBAN are not also phones or cards.
    assert _found(pii, "02079460958@example.com") == [("02079460958@example.com", "email")]
    assert _found(pii, "DE89370400440532013000") == [("DE89370400440532013000", "iban")]


def test_clean_text_is_empty(pii: PiiDetector) -> None:
    assert pii.score(["", "nothing personal here, in 2024 at 10:30"]) == [EMPTY, EMPTY]


def test_batch_keeps_order(pii: PiiDetector) -> None:
    results = pii.score(["no", "SSN 123-45-6789", "no", "1.1.1.1"])
    assert [result.scores for result in results] == [{}, {"ssn": 1.0}, {}, {"ipv4": 1.0}]


def test_unicode_offsets_are_str_offsets(pii: PiiDetector) -> None:
    text = "Ünïcödé 😀👍🏽 — mail: jöhn@exämple.com, карта 4111 1111 1111 1111 ✓"
    (result,) = pii.score([text])
    email_start = text.index("jöhn")
    card_start = text.index("4111")
    assert result.matches == (
        Match(email_start, email_start + len("jöhn@exämple.com"), "email"),
        Match(card_start, card_start + 19, "card"),
    )


def test_lone_surrogate_keeps_offsets(pii: PiiDetector) -> None:
    text = "\ud800 card 4111111111111111"
    (result,) = pii.score([text])
    assert result.matches == (Match(7, 23, "card"),)


def test_glued_to_non_ascii_letters(pii: PiiDetector) -> None:
    assert _found(pii, "é123-45-6789") == []


# --- options ------------------------------------------------------------------------


def test_kinds_subset() -> None:
    detector = build({"kinds": ["email", "ipv4"]})
    assert detector.kinds == ("email", "ipv4")
    text = "a@example.com 10.0.0.1 SSN 123-45-6789 card 4111111111111111"
    assert _labels(detector, text) == {"email", "ipv4"}
    # Without card and phone enabled, digit runs alone no longer pass the prefilter.
    assert detector.score(["SSN 123-45-6789"]) == [EMPTY]


def test_all_kinds_by_default() -> None:
    assert build({}).kinds == KINDS
    assert set(KINDS) >= {"email", "phone", "card", "iban", "ssn", "nino", "dni", "ipv4", "ipv6"}


def test_unknown_kind_names_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown kind\(s\) 'passport'.*valid kinds: email, "):
        build({"kinds": ["email", "passport"]})


def test_kinds_must_be_a_non_empty_list() -> None:
    with pytest.raises(ValueError, match="kinds must be a list"):
        build({"kinds": "email"})
    with pytest.raises(ValueError, match="at least one"):
        build({"kinds": []})


def test_unknown_option_names_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown option\(s\) kind; valid options: kinds"):
        build({"kind": ["email"]})
