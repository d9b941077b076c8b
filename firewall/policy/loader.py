"""Reading a policy file: YAML with positions, schema validation, and every mistake
reported as `file:line:column: where: what`.

ruamel's round-trip loader keeps the line and column of every key and value, so a
pydantic error location (`rules.2.if`) can be turned back into the place in the file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from firewall.policy.errors import PolicyError, PolicyProblem
from firewall.policy.schema import PolicySpec

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class SourceMap:
    """Finds the line and column of a location in the loaded document."""

    file: str
    root: Any

    def position(self, loc: Loc, *, key: bool = False) -> tuple[int, int]:
        node, line, column = self.root, 0, 0
        for index, item in enumerate(loc):
            last = index == len(loc) - 1
            if isinstance(node, CommentedMap) and item in node:
                line, column = node.lc.key(item) if (key and last) else node.lc.value(item)
                node = node[item]
            elif isinstance(node, CommentedSeq) and isinstance(item, int) and 0 <= item < len(node):
                line, column = node.lc.item(item)
                node = node[item]
            elif isinstance(node, (CommentedMap, CommentedSeq)):
                # pydantic adds union and validator names to a location; skip those.
                continue
            else:
                break
        if (line, column) == (0, 0) and hasattr(node, "lc"):
            line, column = node.lc.line, node.lc.col
        return line + 1, column + 1

    def problem(self, loc: Loc, message: str, *, key: bool = False) -> PolicyProblem:
        line, column = self.position(loc, key=key)
        return PolicyProblem(self.file, line, column, dotted(loc, self.root), message)


def dotted(loc: Loc, root: Any = None) -> str:
    """`rules[2].if` for ("rules", 2, "if"), dropping pydantic's union labels."""
    out, node = "", root
    for item in loc:
        if root is not None:
            if isinstance(node, CommentedMap) and item in node:
                node = node[item]
            elif isinstance(node, CommentedSeq) and isinstance(item, int) and 0 <= item < len(node):
                node = node[item]
            else:
                continue  # a pydantic union or validator label, not a place in the file
        out += f"[{item}]" if isinstance(item, int) else (f".{item}" if out else str(item))
    return out


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(key): _plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain(value) for value in node]
    return node


def _describe(error: dict[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return f"missing required field '{error['loc'][-1]}'"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


@dataclass(frozen=True, slots=True)
class PolicySource:
    """A policy file read and validated, with what is needed to report on it."""

    spec: PolicySpec
    source_map: SourceMap
    sha256: str
    path: str


def read_policy(path: str | Path) -> PolicySource:
    """Parse and validate a policy file. Raises PolicyError listing every mistake."""
    file = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise PolicyError([PolicyProblem(file, 1, 1, "", f"cannot read policy: {error.strerror}")]) from error
    return parse_policy(data, file)


def parse_policy(data: bytes, file: str = "<policy>") -> PolicySource:
    yaml = YAML(typ="rt")
    try:
        root = yaml.load(data)
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = " ".join(part for part in (error.context, error.problem) if part)
        raise PolicyError([PolicyProblem(file, line, column, "", f"invalid YAML: {what}")]) from error
    source_map = SourceMap(file, root)
    if not isinstance(root, CommentedMap):
        raise PolicyError([PolicyProblem(file, 1, 1, "", "a policy is a YAML mapping with 'version', 'name' and 'rules'")])
    plain = _plain(root)
    try:
        spec = PolicySpec.model_validate(plain)
    except ValidationError as error:
        # Report the regexes and CEL expressions that are wrong too, so one run of
        # `check` shows every mistake it can, not only the shape errors.
        from firewall.policy.compiler import expression_problems

        problems = [*_problems(error.errors(), source_map), *expression_problems(plain, source_map)]
        raise PolicyError(sorted(problems, key=lambda p: (p.line, p.column))) from error
    return PolicySource(spec, source_map, hashlib.sha256(data).hexdigest(), file)


def _problems(errors: Iterable[dict[str, Any]], source_map: SourceMap) -> Iterable[PolicyProblem]:
    """One problem per place: the alternatives of a union are joined into one message."""
    by_place: dict[str, tuple[PolicyProblem, list[str]]] = {}
    for error in errors:
        loc = tuple(error["loc"])
        problem = source_map.problem(loc, _describe(error), key=error["type"] == "extra_forbidden")
        first, messages = by_place.setdefault(problem.where, (problem, []))
        if problem.message not in messages:
            messages.append(problem.message)
    for problem, messages in by_place.values():
        yield PolicyProblem(problem.file, problem.line, problem.column, problem.where, "; or ".join(messages))


def load_policy_file(path: str | Path) -> Any:
    """Read, validate and compile a policy: the one call the proxy and CLI make."""
    from firewall.policy.compiler import compile_policy

    return compile_policy(read_policy(path))
