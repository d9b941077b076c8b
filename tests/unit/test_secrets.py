"""The secrets detector: provider keys, private keys, JWTs, high-entropy tokens.

Keys are generated at run time (seeded), never written out whole, so that no secret
scanner mistakes this file for a leak.
"""

from __future__ import annotations

import base64
import json
import random
import string

import pytest

from firewall.detectors import EMPTY, Match
from firewall.detectors.secrets import LABELS, SecretsDetector, build

_ALNUM = string.ascii_letters + string.digits
_RANDOM = random.Random(20240611)


def _rand(length: int, alphabet: str = _ALNUM) -> str:
    # Keep the fixtures unambiguous: a digit and each letter case the alphabet has.
    wanted = [str.isdigit, str.islower, str.isupper]
    wanted = [test for test in wanted if any(test(c) for c in alphabet)]
    while True:
        token = "".join(_RANDOM.choice(alphabet) for _ in range(length))
        if all(any(test(c) for c in token) for test in wanted):
            return token


def _b64url(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.fixture(scope="module")
def secrets() -> SecretsDetector:
    return SecretsDetector()


def _found(detector: SecretsDetector, text: str) -> list[tuple[str, str]]:
    (result,) = detector.score([text])
    return [(text[m.start : m.end], m.label) for m in result.matches]


def _labels(detector: SecretsDetector, text: str) -> set[str]:
    return {label for _, label in _found(detector, text)}


_KEYS = {
    "openai_key": [
        "sk-" + _rand(48),
        "sk-" + "proj-" + _rand(120, _ALNUM + "_-"),
        "sk-" + "svcacct-" + _rand(100, _ALNUM + "_-"),
    ],
    "anthropic_key": ["sk-" + "ant-" + "api03-" + _rand(93, _ALNUM + "_-") + "AA"],
    "aws_access_key": ["AKIA" + _rand(16, string.ascii_uppercase + string.digits), "ASIA" + "Q3EGRJ5XH2ZKMUVB"],
    "github_token": [
        "ghp_" + _rand(36),
        "gho_" + _rand(36),
        "ghs_" + _rand(36),
        "github_" + "pat_" + _rand(22) + "_" + _rand(59),
    ],
    "slack_token": ["xoxb-" + "123456789012-1234567890123-" + _rand(24), "xoxp-" + "9876543210-" + _rand(32)],
    "google_api_key": ["AIza" + _rand(35, _ALNUM + "_-")],
    "stripe_key": ["sk_" + "live_" + _rand(24), "rk_" + "live_" + _rand(99)],
}  # fmt: skip


@pytest.mark.parametrize(("label", "key"), [(label, key) for label, keys in _KEYS.items() for key in keys])
def test_provider_key_found_with_exact_span(secrets: SecretsDetector, label: str, key: str) -> None:
    for text in (key, f"use {key} please", f'{{"key": "{key}"}}', f"KEY={key}\n"):
        assert _found(secrets, text) == [(key, label)], text


@pytest.mark.parametrize(
    "text",
    [
        "the sk- prefix marks OpenAI keys",
        "a risk-free-investment-opportunity-for-everyone",
        "task-1234567890-abcdefghij-klm",  # "sk-" glued inside a word
        "sk-this-is-not-a-real-key-at-all",  # no digits: prose, not a key
        "sk-ant-is-how-anthropic-keys-start",
        "AKIA1234",  # too short
        "XAKIA" + "IOSFODNN7EXAMPLE",  # glued
        "AKIA" + "IOSFODNN7EXAMPLE1",  # too long
        "ghp_short",
        "xoxb-notatoken",
        "AIza" + "tooShort123",
        "sk_live_" + "short",
    ],
)
def test_prefix_in_prose_is_not_a_key(secrets: SecretsDetector, text: str) -> None:
    assert _found(secrets, text) == []


def test_aws_secret_key_needs_its_label(secrets: SecretsDetector) -> None:
    value = _rand(20) + "/" + _rand(14) + "+" + _rand(4)
    assert len(value) == 40
    for text in (
        f"aws_secret_access_key = {value}",
        f'AWS_SECRET_ACCESS_KEY="{value}"',
        f'"SecretAccessKey": "{value}"',
        f"aws_secret_key: {value}\n",
    ):
        assert _found(secrets, text) == [(value, "aws_secret_key")], text
    # The label with a value of the wrong length is not an AWS secret key.
    assert "aws_secret_key" not in _labels(secrets, f"aws_secret_access_key = {value}x")


def test_private_key_block(secrets: SecretsDetector) -> None:
    body = "\n".join(_rand(64, _ALNUM + "+/") for _ in range(3))
    for kind in ("RSA ", "EC ", "OPENSSH ", "ENCRYPTED ", "", "PGP "):
        suffix = " BLOCK" if kind == "PGP " else ""
        block = f"-----BEGIN {kind}PRIVATE KEY{suffix}-----\n{body}\n-----END {kind}PRIVATE KEY{suffix}-----"
        assert _found(secrets, f"here:\n{block}\nthanks") == [(block, "private_key")]


def test_truncated_private_key_block_is_still_covered(secrets: SecretsDetector) -> None:
    head = "-----BEGIN RSA PRIVATE KEY-----\n" + _rand(64, _ALNUM + "+/") + "\n" + _rand(30)
    assert _found(secrets, head + "\n\n") == [(head, "private_key")]


def test_public_key_and_certificate_are_not_private_keys(secrets: SecretsDetector) -> None:
    text = "-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----"
    assert _found(secrets, text) == []


def test_jwt(secrets: SecretsDetector) -> None:
    header = _b64url({"alg": "HS256", "typ": "JWT"})
    payload = _b64url({"sub": "1234567890", "name": "Jane", "iat": 1516239022})
    token = f"{header}.{payload}.{_rand(43, _ALNUM + '_-')}"
    assert _found(secrets, f"Authorization: Bearer {token}.") == [(token, "jwt")]
    unsigned = f"{_b64url({'alg': 'none'})}.{payload}."
    assert _found(secrets, f"token {unsigned} end") == [(unsigned, "jwt")]


def test_jwt_lookalikes(secrets: SecretsDetector) -> None:
    no_alg = f"{_b64url({'typ': 'JWT', 'kid': 'k1'})}.{_b64url({'sub': 'x'})}.sig"
    not_json = "eyJub3QganNvbiBhdCBhbGw.eyJzdWIiOiJ4In0.sig"
    assert "jwt" not in _labels(secrets, f"see {no_alg}")
    assert "jwt" not in _labels(secrets, f"see {not_json}")


# --- high entropy -------------------------------------------------------------------


@pytest.mark.parametrize("length", [20, 32, 48])
def test_random_token_is_high_entropy(secrets: SecretsDetector, length: int) -> None:
    token = "Zq7Xk2Pm9Rt4Wv8Ls1Nb3Hc6Jd5Fg0Ya2Ue7Io4"[:length] if length <= 40 else _rand(length)
    assert _found(secrets, f"the value {token} is secret") == [(token, "high_entropy")]


def test_base64_padding_is_part_of_the_token(secrets: SecretsDetector) -> None:
    token = "Zq7Xk2Pm9Rt4Wv8Ls1Nb3Hc6Jd5F=="
    assert _found(secrets, f"blob {token} end") == [(token, "high_entropy")]


@pytest.mark.parametrize(
    "text",
    [
        "commit a94a8fe5ccb19ba61c4c0873d391e987982fbbd3 fixed it",  # git sha1
        "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "md5 5d41402abc4b2a76b9719d911017c592",
        "request 123e4567-e89b-12d3-a456-426614174000 failed",  # UUID
        "class HunYuanDenseV1Config and ThisIsAVeryLongClassName2023",
        "getUserProfileSettingsHandler2 AbstractSingletonProxyFactoryBean",
        "path /usr/local/lib/python3.11/site-packages/foo",
        "see https://github.com/Owner/RepoName123/blob/main/src/Module2File.py",
        "snake_case_identifier_with_many_words_v2",
        "a long word: internationalization-and-localization",
        "--------------------------------------------",
        "====================================",
        "version 1.2.3-alpha.20240101+build.5678",
        "x = 1.2246467991473531772e-16",  # a float's digits and exponent are hex-like
    ],
)
def test_not_high_entropy(secrets: SecretsDetector, text: str) -> None:
    assert _found(secrets, text) == []


def test_a_label_overrides_the_digest_and_uuid_exemptions(secrets: SecretsDetector) -> None:
    digest = "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3"
    uuid = "123e4567-e89b-12d3-a456-426614174000"
    assert _found(secrets, f"api_key = {digest}") == [(digest, "high_entropy")]
    assert _found(secrets, f'"token": "{uuid}"') == [(uuid, "high_entropy")]


def test_hex_token_of_a_non_digest_length(secrets: SecretsDetector) -> None:
    token = "3f9a0c7e21b84d6f5a1c"  # 20 hex characters: no common digest has that length
    assert _found(secrets, f"key {token}") == [(token, "high_entropy")]


def test_entropy_can_be_turned_off(secrets: SecretsDetector) -> None:
    quiet = build({"entropy": False})
    token = "Zq7Xk2Pm9Rt4Wv8Ls1Nb3Hc6Jd5Fg0Ya2Ue7Io4"
    assert "high_entropy" in _labels(secrets, token)
    assert quiet.score([f"the value {token}"]) == [EMPTY]
    assert "high_entropy" not in quiet.labels
    key = "ghp_" + _rand(36)
    assert _found(quiet, key) == [(key, "github_token")]


def test_specific_label_wins_over_high_entropy(secrets: SecretsDetector) -> None:
    key = "sk-" + _rand(48)
    text = f"key {key} and {'Zq7Xk2Pm9Rt4Wv8Ls1Nb3Hc6Jd5F'}"
    (result,) = secrets.score([text])
    assert result.scores == {"openai_key": 1.0, "high_entropy": 1.0}
    assert [m.label for m in result.matches] == ["openai_key", "high_entropy"]


# --- all together -------------------------------------------------------------------


def test_clean_text_is_empty(secrets: SecretsDetector) -> None:
    prose = "The meeting is at 10:30 in room 4; bring the Q3 report (v2.1) and coffee."
    assert secrets.score(["", prose]) == [EMPTY, EMPTY]


def test_batch_keeps_order(secrets: SecretsDetector) -> None:
    key = "AKIA" + "Q3EGRJ5XH2ZKMUVB"
    results = secrets.score(["no", key, "no"])
    assert [result.scores for result in results] == [{}, {"aws_access_key": 1.0}, {}]


def test_unicode_offsets_are_str_offsets(secrets: SecretsDetector) -> None:
    key = "ghp_" + _rand(36)
    text = f"Ünïcödé 😀👍🏽 — ключ: {key} ✓"
    (result,) = secrets.score([text])
    start = text.index("ghp_")
    assert result.matches == (Match(start, start + 40, "github_token"),)


def test_lone_surrogate_keeps_offsets(secrets: SecretsDetector) -> None:
    key = "AKIA" + "Q3EGRJ5XH2ZKMUVB"
    (result,) = secrets.score([f"\udc00\ud800 {key}"])
    assert result.matches == (Match(3, 23, "aws_access_key"),)


def test_labels() -> None:
    assert set(LABELS) == {
        "openai_key", "anthropic_key", "aws_access_key", "aws_secret_key", "github_token",
        "slack_token", "google_api_key", "stripe_key", "private_key", "jwt", "high_entropy",
    }  # fmt: skip


def test_unknown_option_names_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown option\(s\) entropie; valid options: entropy"):
        build({"entropie": False})


def test_entropy_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match="entropy must be true or false"):
        build({"entropy": "no"})
