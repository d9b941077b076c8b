"""loads_strict: orjson parsing that refuses objects with a duplicate key."""

from __future__ import annotations

import json
import time

import orjson
import pytest

from firewall.protocols._json import DuplicateKeyError, loads_strict


def _path(raw: bytes) -> str:
    with pytest.raises(DuplicateKeyError) as caught:
        loads_strict(raw)
    return caught.value.path


def test_parses_like_orjson_without_duplicates() -> None:
    raw = b'{"model": "gpt", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}'
    assert loads_strict(raw) == orjson.loads(raw)


def test_repeated_keys_in_different_objects_are_fine() -> None:
    raw = b'[{"a": 1, "b": {"a": 2}}, {"a": 3}]'
    assert loads_strict(raw) == [{"a": 1, "b": {"a": 2}}, {"a": 3}]


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (b'{"role": "user", "role": "system"}', "$.role"),
        (b'{"messages": [{"role": "user"}, {"role": "user", "content": "x", "role": "system"}]}', "$.messages[1].role"),
        (b'{"a": {"b": 1, "b": 2}, "a": 3}', "$.a.b"),  # the first written wins
        (b'{"a": 1, "\\u0061": 2}', "$.a"),  # same key once unescaped
        (b'{"a b": 1, "a b" : 2}', '$["a b"]'),  # whitespace before the colon
        (b'{\n  "x": 1,\n  "x": 1\n}', "$.x"),
    ],
)
def test_duplicate_key_reports_its_path(raw: bytes, path: str) -> None:
    assert _path(raw) == path


def test_error_is_a_value_error_with_the_path_in_the_message() -> None:
    with pytest.raises(ValueError, match=r"duplicate key in JSON object at \$\.k"):
        loads_strict(b'{"k": 1, "k": 2}')


def test_escaped_quotes_and_colons_inside_strings_are_not_members() -> None:
    # Tool-call arguments carry JSON inside a string: `\":` there is no member.
    raw = json.dumps({"arguments": json.dumps({"city": "Paris", "unit": "c"}), "note": 'say "x": y', "k": "a\\"}).encode()
    assert loads_strict(raw) == json.loads(raw)
    assert _path(raw[:-1] + b', "k": 1}') == "$.k"


def test_key_ending_in_a_backslash_is_counted() -> None:
    assert _path(b'{"a\\\\": 1, "a\\\\": 2}') == '$["a\\\\"]'


def test_invalid_json_raises_orjson_error() -> None:
    with pytest.raises(orjson.JSONDecodeError):
        loads_strict(b'{"a": ')


def test_accepts_str_and_scalars() -> None:
    assert loads_strict('{"a": [1, 2]}') == {"a": [1, 2]}
    assert loads_strict(b"3") == 3


def test_cost_on_a_4kb_body_is_small() -> None:
    messages = [{"role": "user" if i % 2 else "assistant", "content": f"message {i}: " + "lorem ipsum " * 25} for i in range(12)]
    raw = orjson.dumps({"model": "gpt-4o", "messages": messages, "temperature": 0.2})
    assert 3500 < len(raw) < 5000
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        orjson.loads(raw)
    plain = (time.perf_counter() - start) / n
    start = time.perf_counter()
    for _ in range(n):
        loads_strict(raw)
    strict = (time.perf_counter() - start) / n
    print(f"orjson {plain * 1e6:.1f} us, loads_strict {strict * 1e6:.1f} us per 4 KB body")
    assert strict < plain + 50e-6  # generous bound for a shared 2-core machine


def test_deep_nesting_that_orjson_accepts() -> None:
    deep = b"[" * 1000 + b'{"a": 1}' + b"]" * 1000
    value = loads_strict(deep)
    for _ in range(1000):
        value = value[0]
    assert value == {"a": 1}
    with pytest.raises(ValueError):
        loads_strict(b"[" * 1000 + b'{"a": 1, "a": 2}' + b"]" * 1000)
