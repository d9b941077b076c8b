"""Read and write a decoded JSON body at a `Path`.

A path is a tuple of dict keys (str), list indices (int) and the `EMBEDDED_JSON`
marker, which says "the value here is a JSON document encoded in a string": reading
descends into its decoded form, writing re-encodes it. Writes are copy-on-write along
the path only: bodies can be megabytes of history and this runs on every redaction, so
the untouched siblings are shared with the original, which is never mutated.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from typing import Any

import orjson

from firewall.model import EMBEDDED_JSON, EMBEDDED_TEXT, Path, PathItem, Rewrite
from firewall.protocols.base import BodyShapeError

__all__ = [
    "PathError",
    "apply_rewrites",
    "decode_embedded",
    "decode_text_file",
    "encode_text_file",
    "is_text_media",
    "expect_object",
    "expect_str",
    "format_path",
    "get_at",
    "optional_str",
    "set_at",
    "shape_error",
    "string_leaves",
]


class PathError(LookupError):
    """A path does not lead anywhere in this body, or two rewrites contradict."""


def format_path(path: Path) -> str:
    """`("messages", 2, "content")` -> `messages[2].content`, for error messages."""
    out: list[str] = []
    for item in path:
        if item is EMBEDDED_JSON:
            out.append("<json>")
        elif item is EMBEDDED_TEXT:
            out.append("<base64>")
        elif isinstance(item, int):
            out.append(f"[{item}]")
        else:
            out.append(f".{item}" if out else str(item))
    return "".join(out) or "<root>"


def decode_embedded(text: str) -> Any:
    """Decode a JSON document held in a string. Raises ValueError when it is not JSON.

    Every reader and writer of `EMBEDDED_JSON` goes through here, so what a wire format
    inspected and what a rewrite descends into are decoded the same way."""
    return orjson.loads(text)


# Media types whose bytes are text a model reads (a file part's or inline data's type).
_TEXT_MEDIA = re.compile(r"^(?:text/[\w.+-]+|application/(?:json|xml|yaml|x-yaml|x-ndjson|javascript|"
                         r"[\w.-]+\+(?:json|xml)))\s*(?:;.*)?$", re.IGNORECASE)


def is_text_media(media_type: Any) -> bool:
    """Whether a file of this media type is text to inspect (text/*, JSON, XML, YAML)."""
    return isinstance(media_type, str) and _TEXT_MEDIA.match(media_type) is not None


def decode_text_file(data: str) -> str | None:
    """The UTF-8 text of base64 `data` (standard or URL-safe alphabet), or None when it is
    neither. Every reader and writer of `EMBEDDED_TEXT` goes through here and
    `encode_text_file`."""
    try:
        raw = base64.b64decode(data, validate=True) if "-" not in data and "_" not in data else \
            base64.urlsafe_b64decode(data)
        return raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return None


def encode_text_file(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _encode_embedded(value: Any) -> str:
    return orjson.dumps(value).decode("utf-8")


def get_at(body: Any, path: Path) -> Any:
    node = body
    for depth, item in enumerate(path):
        node = _step(node, item, path[:depth])
    return node


def set_at(body: Any, path: Path, value: Any) -> Any:
    """`body` with `value` at `path`; only the containers along the path are copied."""
    return _set(body, path, 0, value)


def apply_rewrites(body: Any, rewrites: Iterable[Rewrite]) -> Any:
    """`body` with each rewrite's text at its path, as a new object.

    Rewrites are merged into one tree first, so a container on the path of several
    rewrites is copied once, and an embedded JSON string that several rewrites reach
    into is decoded once, rewritten at every leaf, and encoded once. Each target must
    already be a string. Two rewrites at the same path: the later one wins. A rewrite
    at a path that is a prefix of another's contradicts it and raises PathError.
    """
    tree: dict[PathItem, Any] = {}
    for rewrite in rewrites:
        _insert(tree, rewrite)
    if not tree:
        return body
    return _apply_tree(body, tree, ())


def string_leaves(value: Any, prefix_path: Path = ()) -> list[tuple[str, Path]]:
    """Every string value (not key) inside a decoded JSON value, with its path."""
    leaves: list[tuple[str, Path]] = []
    # An explicit stack rather than recursion: tool arguments come from a model and
    # can nest deeper than Python's recursion limit.
    stack: list[tuple[Any, Path]] = [(value, prefix_path)]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            leaves.append((node, path))
        elif isinstance(node, dict):
            stack.extend((child, (*path, key)) for key, child in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((node[i], (*path, i)) for i in range(len(node) - 1, -1, -1))
    return leaves


# --- shape checks: what the wire formats use to reject a body with a precise message --


def shape_error(where: Path, expected: str) -> BodyShapeError:
    """`messages[2].role: expected a string`."""
    return BodyShapeError(f"{format_path(where)}: expected {expected}")


def expect_object(value: Any, where: Path) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise shape_error(where, "an object")
    return value


def expect_str(obj: dict[str, Any], key: str, where: Path) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise shape_error((*where, key), "a string")
    return value


def optional_str(obj: dict[str, Any], key: str, where: Path) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise shape_error((*where, key), "a string")
    return value


def _step(node: Any, item: PathItem, where: Path) -> Any:
    if item is EMBEDDED_TEXT:
        if not isinstance(node, str):
            raise PathError(f"{format_path(where)}: expected base64 text, found {_kind(node)}")
        text = decode_text_file(node)
        if text is None:
            raise PathError(f"{format_path(where)}: not base64 of UTF-8 text")
        return text
    if item is EMBEDDED_JSON:
        if not isinstance(node, str):
            raise PathError(f"{format_path(where)}: expected a JSON string, found {_kind(node)}")
        try:
            return decode_embedded(node)
        except ValueError as exc:
            raise PathError(f"{format_path(where)}: the string is not valid JSON ({exc})") from None
    if isinstance(item, str):
        if not isinstance(node, dict):
            raise PathError(f"{format_path(where)}: expected an object, found {_kind(node)}")
        if item not in node:
            raise PathError(f"{format_path((*where, item))}: no such key")
        return node[item]
    if not isinstance(node, list):
        raise PathError(f"{format_path(where)}: expected an array, found {_kind(node)}")
    if not 0 <= item < len(node):
        raise PathError(f"{format_path((*where, item))}: index out of range")
    return node[item]


def _set(node: Any, path: Path, depth: int, value: Any) -> Any:
    if depth == len(path):
        return value
    item = path[depth]
    child = _step(node, item, path[:depth])
    new_child = _set(child, path, depth + 1, value)
    if item is EMBEDDED_JSON:
        return _encode_embedded(new_child)
    if item is EMBEDDED_TEXT:
        return encode_text_file(new_child)
    return _replace(node, item, new_child)


def _replace(node: dict[str, Any] | list[Any], item: str | int, new_child: Any) -> Any:
    copy: Any = node.copy()  # shallow: siblings are shared, not duplicated
    copy[item] = new_child
    return copy


_LEAF = object()  # key in a rewrite tree node holding the replacement text


def _insert(tree: dict[Any, Any], rewrite: Rewrite) -> None:
    node = tree
    for depth, item in enumerate(rewrite.path):
        if _LEAF in node:
            raise PathError(f"{format_path(rewrite.path)}: conflicts with a rewrite of {format_path(rewrite.path[:depth])}")
        node = node.setdefault(item, {})
    if len(node) > (1 if _LEAF in node else 0):
        raise PathError(f"{format_path(rewrite.path)}: conflicts with a rewrite inside it")
    node[_LEAF] = rewrite.text


def _apply_tree(node: Any, tree: dict[Any, Any], where: Path) -> Any:
    if _LEAF in tree:
        if not isinstance(node, str):
            raise PathError(f"{format_path(where)}: a rewrite must replace a string, found {_kind(node)}")
        return tree[_LEAF]
    copy: Any = None
    for item, subtree in tree.items():
        if item is EMBEDDED_JSON:
            if len(tree) > 1:
                raise PathError(f"{format_path(where)}: rewrites both into and beside an embedded JSON string")
            decoded = _step(node, item, where)
            return _encode_embedded(_apply_tree(decoded, subtree, (*where, item)))
        if item is EMBEDDED_TEXT:
            return encode_text_file(_apply_tree(_step(node, item, where), subtree, (*where, item)))
        child = _step(node, item, where)
        new_child = _apply_tree(child, subtree, (*where, item))
        if copy is None:
            copy = node.copy()
        copy[item] = new_child
    return copy


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__
