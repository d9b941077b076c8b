from __future__ import annotations

import copy

import orjson
import pytest

from firewall.model import EMBEDDED_JSON, Rewrite
from firewall.protocols._paths import (
    PathError,
    apply_rewrites,
    format_path,
    get_at,
    set_at,
    string_leaves,
)
from firewall.protocols._sse import SSEEvent, parse_events, render_events
from firewall.protocols.base import BodyShapeError

ARGS = ("messages", 1, "tool_calls", 0, "function", "arguments")


def _body() -> dict:
    return {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": "deploy it"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "deploy",
                            "arguments": '{"token": "sk-live-123", "env": {"name": "prod", "tags": ["a", "b"]}, "n": 3}',
                        },
                    }
                ],
            },
        ],
    }


def test_get_at_reads_keys_indices_and_embedded_json() -> None:
    body = _body()
    assert get_at(body, ("messages", 0, "content")) == "deploy it"
    assert get_at(body, (*ARGS, EMBEDDED_JSON, "env", "tags", 1)) == "b"
    assert get_at(body, ()) is body


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (("messages", 5), "messages[5]: index out of range"),
        (("messages", 0, "nope"), "messages[0].nope: no such key"),
        (("messages", 0, "content", 0), "messages[0].content: expected an array, found a string"),
        (("model", EMBEDDED_JSON), "model: the string is not valid JSON"),
        (("messages", EMBEDDED_JSON), "messages: expected a JSON string, found an array"),
    ],
)
def test_get_at_explains_a_path_that_leads_nowhere(path: tuple, message: str) -> None:
    with pytest.raises(PathError, match=message.replace("[", r"\[").replace("]", r"\]")):
        get_at(_body(), path)


def test_set_at_copies_only_along_the_path() -> None:
    body = _body()
    before = copy.deepcopy(body)
    new = set_at(body, ("messages", 0, "content"), "[REDACTED]")
    assert new["messages"][0]["content"] == "[REDACTED]"
    assert body == before  # the original is untouched
    assert new is not body and new["messages"] is not body["messages"]
    assert new["messages"][1] is body["messages"][1]  # a sibling is shared, not copied


def test_set_at_reencodes_embedded_json_compactly_keeping_utf8() -> None:
    new = set_at(_body(), (*ARGS, EMBEDDED_JSON, "env", "name"), "prödüction")
    arguments = get_at(new, ARGS)
    assert arguments == '{"token":"sk-live-123","env":{"name":"prödüction","tags":["a","b"]},"n":3}'


def test_apply_rewrites_composes_several_rewrites_inside_one_embedded_string() -> None:
    body = _body()
    before = copy.deepcopy(body)
    new = apply_rewrites(
        body,
        [
            Rewrite((*ARGS, EMBEDDED_JSON, "token"), "[SECRET]"),
            Rewrite((*ARGS, EMBEDDED_JSON, "env", "tags", 0), "x"),
            Rewrite(("messages", 0, "content"), "deploy [it]"),
        ],
    )
    assert orjson.loads(get_at(new, ARGS)) == {"token": "[SECRET]", "env": {"name": "prod", "tags": ["x", "b"]}, "n": 3}
    assert new["messages"][0]["content"] == "deploy [it]"
    assert new["model"] == "gpt-4o"
    assert body == before


def test_apply_rewrites_without_rewrites_returns_the_body_itself() -> None:
    body = _body()
    assert apply_rewrites(body, ()) is body


def test_apply_rewrites_at_the_same_path_keeps_the_last() -> None:
    new = apply_rewrites(_body(), [Rewrite(("messages", 0, "content"), "a"), Rewrite(("messages", 0, "content"), "b")])
    assert new["messages"][0]["content"] == "b"


def test_apply_rewrites_rejects_a_rewrite_inside_another() -> None:
    with pytest.raises(PathError, match="conflicts"):
        apply_rewrites(_body(), [Rewrite(ARGS, "whole"), Rewrite((*ARGS, EMBEDDED_JSON, "token"), "leaf")])
    with pytest.raises(PathError, match="conflicts"):
        apply_rewrites(_body(), [Rewrite((*ARGS, EMBEDDED_JSON, "token"), "leaf"), Rewrite(ARGS, "whole")])


def test_apply_rewrites_only_replaces_strings() -> None:
    with pytest.raises(PathError, match=r"messages\[1\].tool_calls: a rewrite must replace a string, found an array"):
        apply_rewrites(_body(), [Rewrite(("messages", 1, "tool_calls"), "x")])


def test_string_leaves_yields_values_not_keys_with_their_paths() -> None:
    value = {"secret": "s1", "nested": [{"k": "s2"}, 4, None, True, ["s3"]], "s4-key": 1.5}
    assert string_leaves(value, ("input",)) == [
        ("s1", ("input", "secret")),
        ("s2", ("input", "nested", 0, "k")),
        ("s3", ("input", "nested", 4, 0)),
    ]
    assert string_leaves("alone", ("x",)) == [("alone", ("x",))]


def test_string_leaves_survives_nesting_deeper_than_the_recursion_limit() -> None:
    value: object = "deep"
    for _ in range(5000):
        value = [value]
    (text, path), = string_leaves(value)
    assert text == "deep" and len(path) == 5000


def test_format_path() -> None:
    assert format_path(("messages", 2, "tool_calls", 0, "function", "arguments", EMBEDDED_JSON, "a")) == (
        "messages[2].tool_calls[0].function.arguments<json>.a"
    )
    assert format_path(()) == "<root>"


def test_sse_parse_handles_crlf_comments_multiline_data_and_a_missing_final_blank_line() -> None:
    raw = b": keep-alive\r\nevent: a\r\ndata: {\"x\":\r\ndata: 1}\r\n\r\ndata:no-space\n\nid: 7\nretry: 10\n\ndata: last"
    assert parse_events(raw) == [
        SSEEvent(data='{"x":\n1}', event="a"),
        SSEEvent(data="no-space"),
        SSEEvent(data="last"),
    ]


def test_sse_render_then_parse_round_trips() -> None:
    events = [SSEEvent(data='{"a": 1}', event="message_start"), SSEEvent(data="two\nlines"), SSEEvent(data="[DONE]")]
    rendered = render_events(events)
    assert rendered.startswith(b'event: message_start\ndata: {"a": 1}\n\n')
    assert parse_events(rendered) == events


def test_sse_rejects_bytes_that_are_not_utf8() -> None:
    with pytest.raises(BodyShapeError, match="not valid UTF-8 at byte 6"):
        parse_events(b"data: \xff\n\n")


def test_a_base64_text_file_is_read_and_rewritten_as_text() -> None:
    import base64

    from firewall.model import EMBEDDED_TEXT, Rewrite
    from firewall.protocols._paths import apply_rewrites, decode_text_file, get_at, is_text_media

    body = {"parts": [{"raw": base64.b64encode("key sk-123, café".encode()).decode(), "mediaType": "text/plain"}]}
    path = ("parts", 0, "raw", EMBEDDED_TEXT)
    assert get_at(body, path) == "key sk-123, café"
    rewritten = apply_rewrites(body, [Rewrite(path, "key [REDACTED], café")])
    assert base64.b64decode(rewritten["parts"][0]["raw"]).decode() == "key [REDACTED], café"
    assert body["parts"][0]["raw"] == base64.b64encode("key sk-123, café".encode()).decode()  # not mutated
    assert decode_text_file("not base64!") is None and decode_text_file(base64.b64encode(b"\xff\xfe").decode()) is None
    assert [is_text_media(m) for m in ("text/markdown; charset=utf-8", "application/json", "application/ld+json",
                                       "image/png", None)] == [True, True, True, False, False]
