"""Compiling a validated policy into rules the engine runs.

Everything that can be wrong with a policy beyond its shape is found here, before the
policy is used: a CEL expression that does not compile or names an unknown variable, a
regex RE2 rejects, a list or detector that does not exist, a duplicate rule id. Each
mistake is reported with its place in the file, and all of them at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import cel

from firewall.detectors import CachedDetector, Detector, PatternError, PatternSet, build_detector, compile_regex
from firewall.model import Action, Direction, Mode
from firewall.normalize import normalize
from firewall.policy.errors import PolicyError, PolicyProblem
from firewall.policy.loader import PolicySource
from firewall.policy.schema import AgentSpec, Defaults, NearSpec, PolicySpec, PolicyTest, StreamSpec

# The names a CEL condition can use. Message-level names change with each message;
# the others are the same for every message of an exchange.
MESSAGE_VARIABLES = frozenset({"message", "text", "scores", "lists"})
EXCHANGE_VARIABLES = frozenset({"direction", "agent", "source", "target", "hops", "model", "provider", "route"})
CEL_FUNCTIONS = frozenset({"mentions", "near", "pattern"})
# Detectors a rule may use without declaring them (they need no options).
KNOWN_DETECTORS = frozenset({"toxicity", "pii", "secrets", "injection", "semantic"})

_MACRO_VARIABLE = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,")
_SCORE_REFERENCE = re.compile(r"\bscores\s*(?:\.\s*([A-Za-z_][A-Za-z0-9_]*)|\[\s*['\"]([^'\"]+)['\"]\s*\])")


class CompiledRule(NamedTuple):
    """One rule, ready to run: an immutable spec with the condition compiled."""

    id: str
    index: int
    description: str | None
    directions: frozenset[Direction]
    from_agents: frozenset[str] | None
    to_agents: frozenset[str] | None
    agents: frozenset[str] | None
    routes: frozenset[str] | None  # wire format names; None: every route
    roles: frozenset[str] | None
    lists: tuple[str, ...]
    patterns: tuple[str, ...]
    near: NearSpec | None
    thresholds: tuple[tuple[str, float], ...]
    detect: tuple[str, ...]  # span detectors, "name" or "name:label"
    condition: cel.Program | None
    condition_variables: frozenset[str]
    detectors: frozenset[str]
    action: Action
    tags: tuple[str, ...]
    replacement: str
    mode: Mode
    respond: str | None
    message: str | None
    # False for a rule that looks only at who is talking, not at what is said: it is
    # decided once per exchange, not once per message.
    per_message: bool


@dataclass(frozen=True)
class Policy:
    """A compiled policy. Immutable: a reload builds a new one and swaps it in."""

    name: str
    sha256: str
    path: str
    defaults: Defaults
    rules: tuple[CompiledRule, ...]
    patterns: PatternSet
    detectors: dict[str, Detector]
    detector_on_error: dict[str, str]
    cascades: dict[str, tuple[tuple[str, float, float], ...]]  # detector -> bands of cheaper detectors
    agents: dict[str, AgentSpec]
    tests: tuple[PolicyTest, ...]
    stream: StreamSpec
    spec: PolicySpec = field(repr=False)
    # Not mistakes, but probably not what the author meant (`check` prints them).
    warnings: tuple[PolicyProblem, ...] = ()

    def rules_for(self, direction: Direction) -> tuple[CompiledRule, ...]:
        return tuple(rule for rule in self.rules if direction in rule.directions)


def compile_policy(source: PolicySource) -> Policy:
    problems: list[PolicyProblem] = []
    spec, where = source.spec, source.source_map

    patterns = _compile_patterns(spec, where, problems)
    detectors: dict[str, Detector] = {}
    on_error: dict[str, str] = {}
    cascades: dict[str, tuple[tuple[str, float, float], ...]] = {}
    unavailable: set[str] = set()  # detectors that failed to build (reported once)
    inline = _inline_concepts(spec, where, problems)
    if inline and "semantic" not in spec.detectors:
        try:
            detectors["semantic"] = CachedDetector(build_detector("semantic", {"concepts": inline}))
            on_error["semantic"] = spec.defaults.on_error
        except (ValueError, ImportError) as error:
            problems.append(where.problem(("rules", _first_semantic_rule(spec)), str(error)))
            unavailable.add("semantic")
    for name, detector_spec in spec.detectors.items():
        options = detector_spec.options()
        if name == "semantic" and inline:
            declared = options.get("concepts") or {}
            for concept in sorted(set(declared) & set(inline)) if isinstance(declared, dict) else ():
                problems.append(where.problem(("detectors", name, "concepts", concept),
                                              f"concept {concept!r} has the id of a rule with a semantic match"))
            options["concepts"] = {**declared, **inline} if isinstance(declared, dict) else declared
        try:
            detectors[name] = CachedDetector(build_detector(name, options))
        except (ValueError, ImportError) as error:
            problems.append(where.problem(("detectors", name), str(error)))
            unavailable.add(name)
            continue
        on_error[name] = detector_spec.on_error or spec.defaults.on_error
        for other, (low, high) in (detector_spec.when or {}).items():
            if other == name or (other not in spec.detectors and other not in KNOWN_DETECTORS):
                problems.append(where.problem(("detectors", name, "when", other), f"unknown detector {other!r} in 'when'"))
            elif low > high:
                problems.append(where.problem(("detectors", name, "when", other), f"empty band [{low}, {high}]"))
        cascades[name] = tuple((other, low, high) for other, (low, high) in (detector_spec.when or {}).items())
    for bands in cascades.values():
        for other, _, _ in bands:
            if other not in detectors and other in KNOWN_DETECTORS:
                detectors[other] = CachedDetector(build_detector(other, {}))
                on_error[other] = spec.defaults.on_error

    rules: list[CompiledRule] = []
    seen: dict[str, int] = {}
    for index, rule_spec in enumerate(spec.rules):
        loc = ("rules", index)
        if rule_spec.id in seen:
            problems.append(where.problem((*loc, "id"), f"duplicate rule id {rule_spec.id!r} (first used by rules[{seen[rule_spec.id]}])"))
        seen.setdefault(rule_spec.id, index)
        rule = _compile_rule(index, rule_spec, spec, where, problems)
        if rule is None:
            continue
        for name in sorted(rule.detectors - detectors.keys() - unavailable):
            if name in KNOWN_DETECTORS:
                # A detector used but not configured runs with its defaults.
                try:
                    detectors[name] = CachedDetector(build_detector(name, {}))
                except (ValueError, ImportError) as error:
                    problems.append(where.problem(loc, str(error)))
                    continue
                on_error[name] = spec.defaults.on_error
            else:
                problems.append(where.problem(loc, f"unknown detector {name!r}: declare it under 'detectors' (known: {', '.join(sorted(KNOWN_DETECTORS))})"))
        rules.append(rule)

    for index, test in enumerate(spec.tests):
        for rule_id in _expected_rules(test):
            if rule_id not in seen:
                problems.append(where.problem(("tests", index, "expect"), f"the test expects rule {rule_id!r}, which the policy does not define"))

    if problems:
        raise PolicyError(problems)
    warnings = _semantic_warnings(spec, detectors, rules, where)
    _warm_up(spec, patterns, rules)
    return Policy(
        name=spec.name,
        sha256=source.sha256,
        path=source.path,
        defaults=spec.defaults,
        rules=tuple(rules),
        patterns=patterns,
        detectors=detectors,
        detector_on_error=on_error,
        cascades={name: bands for name, bands in cascades.items() if bands},
        agents=dict(spec.agents),
        tests=tuple(spec.tests),
        stream=spec.stream,
        spec=spec,
        warnings=tuple(warnings),
    )


def _inline_concepts(spec: PolicySpec, where: Any, problems: list[PolicyProblem]) -> dict[str, dict[str, list[str]]]:
    """`match.semantic` of each rule, as a concept of the semantic detector named after
    the rule (its score is `semantic:<rule id>`)."""
    out: dict[str, dict[str, list[str]]] = {}
    for rule in spec.rules:
        if rule.match is not None and rule.match.semantic is not None:
            out[rule.id] = {"like": list(rule.match.semantic.like), "unlike": list(rule.match.semantic.unlike)}
    return out


def _first_semantic_rule(spec: PolicySpec) -> int:
    return next(i for i, rule in enumerate(spec.rules) if rule.match is not None and rule.match.semantic is not None)


def _semantic_warnings(spec: PolicySpec, detectors: dict[str, Detector], rules: list[CompiledRule],
                       where: Any) -> list[PolicyProblem]:
    """Exemplars that are near duplicates of each other, or that do not separate from
    their `unlike` sentences at the rule's threshold."""
    detector = detectors.get("semantic")
    inner = getattr(detector, "inner", detector)
    if inner is None or not hasattr(inner, "exemplar_warnings"):
        return []
    thresholds: dict[str, float] = {}
    for rule in rules:
        for name, value in rule.thresholds:
            label = name.partition(":")[2]
            if name.startswith("semantic:") and label:
                thresholds[label] = min(value, thresholds.get(label, 1.0))
    positions = {rule.id: index for index, rule in enumerate(spec.rules)}
    out = []
    for concept, message in inner.exemplar_warnings(thresholds):
        loc: tuple[str | int, ...] = (
            ("rules", positions[concept], "match", "semantic") if concept in positions
            else ("detectors", "semantic", "concepts", concept)
        )
        out.append(where.problem(loc, f"warning: {message}"))
    return out


def _warm_up(spec: PolicySpec, patterns: PatternSet, rules: list[CompiledRule]) -> None:
    """RE2 builds its automata lazily, on the first texts it scans (about 15 ms for a
    policy's worth of lists). Pay that at load time, not on the first request."""
    terms = " ".join(term.rstrip("*") for terms in spec.lists.values() for term in terms)
    texts = [terms, *(_test_texts(spec))]
    patterns.score(texts)
    for rule in rules:
        if rule.near is not None:
            for text in texts:
                patterns.near(text, rule.near.list, tuple(rule.near.words), rule.near.within)


def _test_texts(spec: PolicySpec) -> Iterator[str]:
    for test in spec.tests:
        if isinstance(test.request, list):
            yield from (message.content for message in test.request)
        elif test.request is not None:
            yield test.request
        if test.response is not None:
            yield test.response


def _expected_rules(test: PolicyTest) -> Iterator[str]:
    if test.expect.rule:
        yield test.expect.rule
    yield from test.expect.rules or ()


def _compile_patterns(spec: PolicySpec, where: Any, problems: list[PolicyProblem]) -> PatternSet:
    regexes: dict[str, str] = {}
    for name, pattern in spec.patterns.items():
        try:
            compile_regex(name, pattern)
        except PatternError as error:
            problems.append(where.problem(("patterns", name), str(error)))
            continue
        regexes[name] = pattern
    for name, terms in spec.lists.items():
        if not terms:
            problems.append(where.problem(("lists", name), "an empty list matches nothing"))
    try:
        return PatternSet(lists={name: [_folded(term) for term in terms] for name, terms in spec.lists.items()},
                          regexes=regexes)
    except PatternError as error:
        problems.append(where.problem(("lists",), str(error)))
        return PatternSet(lists={}, regexes={})


def _folded(term: str) -> str:
    """A list term as detectors see text: normalised ("niño" matches "nino" too)."""
    prefix = term.endswith("*")
    folded = normalize(term.rstrip("*")).text or term.rstrip("*")
    return folded + ("*" if prefix else "")


def _compile_rule(index: int, rule: Any, spec: PolicySpec, where: Any, problems: list[PolicyProblem]) -> CompiledRule | None:
    loc: tuple[str | int, ...] = ("rules", index)
    before = len(problems)
    match = rule.match
    lists = tuple(match.lists or ()) if match else ()
    patterns = tuple(match.patterns or ()) if match else ()
    for position, name in enumerate(lists):
        if name not in spec.lists:
            problems.append(where.problem((*loc, "match", "lists", position), f"unknown list {name!r}"))
    for position, name in enumerate(patterns):
        if name not in spec.patterns:
            problems.append(where.problem((*loc, "match", "patterns", position), f"unknown pattern {name!r}"))
    near = match.near if match else None
    if near and near.list not in spec.lists:
        problems.append(where.problem((*loc, "match", "near", "list"), f"unknown list {near.list!r}"))
    if near and near.near is not None:
        if near.near not in spec.lists:
            problems.append(where.problem((*loc, "match", "near", "near"), f"unknown list {near.near!r}"))
        else:  # the anchors of a near rule are the words of that list
            near = near.model_copy(update={"words": list(spec.lists[near.near]), "near": None})

    detect = tuple(match.detect or ()) if match else ()
    thresholds = dict(match.scores or {}) if match else {}
    if match and match.semantic is not None:
        thresholds[f"semantic:{rule.id}"] = match.semantic.threshold
    # A score is a detector's own ("toxicity") or one of its labels ("judge:violence").
    detectors = {key.partition(":")[0] for key in thresholds}
    detectors |= {entry.partition(":")[0] for entry in detect}
    program, variables = None, frozenset[str]()
    if rule.if_ is not None:
        program, variables = _compile_condition(rule.if_, (*loc, "if"), spec, where, problems)
        detectors |= {(a or b).partition(":")[0] for a, b in _SCORE_REFERENCE.findall(rule.if_)}

    if rule.action.kind is Action.TAG and not rule.action.tags:
        problems.append(where.problem((*loc, "action"), "a tag action names its tag: {tag: name}"))
    if rule.respond is not None and rule.action.kind is not Action.BLOCK:
        problems.append(where.problem((*loc, "respond"), "'respond' only applies to a block action"))
    if rule.routes:
        known = _route_names()
        for route in sorted(set(rule.routes) - known):
            problems.append(where.problem((*loc, "routes"), f"unknown route {route!r}: one of {', '.join(sorted(known))}"))
    if len(problems) > before:
        return None

    directions = frozenset(Direction) if rule.direction == "both" else frozenset({Direction(rule.direction)})
    return CompiledRule(
        id=rule.id,
        index=index,
        description=rule.description,
        directions=directions,
        from_agents=frozenset(rule.from_) if rule.from_ is not None else None,
        to_agents=frozenset(rule.to) if rule.to is not None else None,
        agents=frozenset(rule.agents) if rule.agents is not None else None,
        routes=frozenset(rule.routes) if rule.routes is not None else None,
        roles=frozenset(match.roles) if match and match.roles else None,
        lists=lists,
        patterns=patterns,
        near=near,
        thresholds=tuple(sorted(thresholds.items())),
        detect=detect,
        condition=program,
        condition_variables=variables,
        detectors=frozenset(detectors),
        action=rule.action.kind,
        tags=rule.action.tags,
        replacement=rule.action.replacement or spec.defaults.redact_with,
        mode=rule.mode or spec.defaults.mode,
        respond=rule.respond,
        message=rule.message,
        per_message=bool(
            lists or patterns or (match and (match.near or match.roles)) or detectors
            or variables & MESSAGE_VARIABLES
            or (program is not None and set(program.functions()) & CEL_FUNCTIONS)
        ),
    )


def expression_problems(document: Any, where: Any) -> list[PolicyProblem]:
    """Regexes RE2 rejects and CEL that does not parse, read from a document whose shape
    may be wrong elsewhere."""
    problems: list[PolicyProblem] = []
    patterns = document.get("patterns") if isinstance(document, dict) else None
    for name, pattern in (patterns or {}).items() if isinstance(patterns, dict) else ():
        if isinstance(pattern, str):
            try:
                compile_regex(name, pattern)
            except PatternError as error:
                problems.append(where.problem(("patterns", name), str(error)))
    rules = document.get("rules") if isinstance(document, dict) else None
    for index, rule in enumerate(rules if isinstance(rules, list) else ()):
        expression = rule.get("if") if isinstance(rule, dict) else None
        if isinstance(expression, str):
            try:
                cel.compile(expression)
            except (ValueError, RuntimeError) as error:
                problems.append(where.problem(("rules", index, "if"), f"invalid CEL expression: {_first_line(error)}"))
    return problems


def _compile_condition(
    expression: str, loc: tuple[str | int, ...], spec: PolicySpec, where: Any, problems: list[PolicyProblem]
) -> tuple[cel.Program | None, frozenset[str]]:
    try:
        program = cel.compile(expression)
    except (ValueError, RuntimeError) as error:
        problems.append(where.problem(loc, f"invalid CEL expression: {_first_line(error)}"))
        return None, frozenset()
    bound = set(_MACRO_VARIABLE.findall(expression))
    variables = frozenset(program.variables()) - bound
    unknown = variables - MESSAGE_VARIABLES - EXCHANGE_VARIABLES
    if unknown:
        known = ", ".join(sorted(MESSAGE_VARIABLES | EXCHANGE_VARIABLES))
        problems.append(where.problem(loc, f"unknown variable {', '.join(sorted(unknown))} in CEL expression (known: {known})"))
        return None, frozenset()
    for name in _MENTIONED_LISTS.findall(expression):
        if name not in spec.lists:
            problems.append(where.problem(loc, f"unknown list {name!r} in CEL expression"))
    for name in _MENTIONED_PATTERNS.findall(expression):
        if name not in spec.patterns:
            problems.append(where.problem(loc, f"unknown pattern {name!r} in CEL expression"))
    return program, variables


_MENTIONED_LISTS = re.compile(r"\b(?:mentions|near)\s*\(\s*['\"]([^'\"]+)['\"]")
_MENTIONED_PATTERNS = re.compile(r"\bpattern\s*\(\s*['\"]([^'\"]+)['\"]")


def _first_line(error: Exception) -> str:
    text = str(error)
    match = re.search(r"ERROR: <input>:(\d+:\d+): (.*)", text)
    return f"{match.group(2)} (at {match.group(1)} of the expression)" if match else text.splitlines()[0]


__all__ = ["CompiledRule", "Policy", "PolicyError", "compile_policy"]


def _route_names() -> frozenset[str]:
    """The registered wire formats' names (imported here: the protocols import modules
    that import the policy package)."""
    from firewall.protocols import WIRE_FORMATS

    return frozenset(wire.name for wire in WIRE_FORMATS)
