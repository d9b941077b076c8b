"""The engine: `Engine(policy).inspect(exchange) -> Decision`. No sockets, no files.

How a policy is evaluated (the README documents this for policy authors):

1. Only the rules whose `direction` and agent scope (`agents`, `from`, `to`) match the
   exchange take part.
2. A rule that looks only at who is talking (no `match`, and an `if:` that uses no
   message variable) is decided once for the exchange.
3. Every other rule is decided for every message of the exchange, every role, in file
   order. A rule fires on a message when every condition it gives holds. When an `allow`
   rule fires on a message, the rules after it are not evaluated for that message.
4. The findings combine: the most severe enforced action wins (block > redact > tag >
   allow), tags accumulate, redactions from every enforced redact rule are applied
   together. Monitor-mode findings are recorded but change nothing.

A message's result depends only on its content and the exchange's context, so it is
remembered: history that an agent resends every turn costs a hash lookup.

Detectors run cheapest first. A costly one (a model: `semantic`, `detoxify`, `judge`) runs
only on the messages that the rules needing no costly detector have not already blocked,
and a cascaded one (`when:`) only where its cheaper detectors are unsure. What each
detector cost is in `Decision.detectors`.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from firewall.detectors import DetectorResult, Match
from firewall.model import Action, Decision, DetectorRun, Direction, Exchange, Finding, Message, Mode, Rewrite, Span
from firewall.normalize import Normalized, normalize
from firewall.policy.compiler import CompiledRule, Policy

# A rule that fired on one message: where (part, start, end, label) and how strongly.
_PartSpan = tuple[int, int, int, str]
_EXCHANGE_RULES = b"exchange-rules"  # the memo key of the exchange-level rules' result


@dataclass(frozen=True, slots=True)
class _Hit:
    rule: int  # position in Policy.rules
    spans: tuple[_PartSpan, ...]
    scores: tuple[tuple[str, float], ...]


class _Failure(Exception):
    """A detector or a rule's condition that raised. `blocking` failures stop the
    evaluation and block the exchange (fail closed); the others are recorded."""

    def __init__(self, kind: str, name: str, error: Exception, *, blocking: bool) -> None:
        super().__init__(f"{kind} {name!r} failed: {type(error).__name__}: {error}")
        self.finding_id = f"{kind}-error:{name}"
        self.detector = name if kind == "detector" else None
        self.blocking = blocking


class Engine:
    """Decides exchanges under one compiled policy. Create a new engine for a new policy."""

    def __init__(self, policy: Policy, *, memo_size: int = 50_000,
                 only: Callable[[CompiledRule], bool] | None = None) -> None:
        """`only` keeps a subset of the rules (a stream's windows need only the rules
        that can still change the stream)."""
        self.policy = policy
        self._rules = {direction: tuple(rule for rule in policy.rules_for(direction) if only is None or only(rule))
                       for direction in Direction}
        self._memo: dict[tuple[bytes, tuple[Any, ...]], tuple[_Hit, ...]] = {}
        self._memo_size = memo_size
        self._nothing = Decision(action=Action.ALLOW, intended=Action.ALLOW, mode=policy.defaults.mode)

    def inspect(self, exchange: Exchange, *, remember: bool = True) -> Decision:
        """Decide one exchange. `remember=False` for texts that will not come again
        (the growing window of a stream), so they do not push history out of the memo."""
        rules = [rule for rule in self._rules[exchange.direction] if _in_scope(rule, exchange)]
        if not rules:
            return self._decide(exchange, [], [])
        context = _exchange_context(exchange)
        key_context = (exchange.direction, exchange.agent, exchange.source_agent, exchange.target_agent,
                       exchange.model, exchange.provider, exchange.route,
                       exchange.provenance.key() if exchange.provenance else None)
        hits: list[tuple[int, _Hit]] = []  # (message index or -1, hit)
        failures: list[_Failure] = []
        runs: list[DetectorRun] = []

        exchange_rules = tuple(rule for rule in rules if not rule.per_message)
        if exchange_rules:
            # Rules about who is talking depend only on the exchange's context: decided
            # once per context, like messages are decided once per content.
            key = (_EXCHANGE_RULES, key_context)
            remembered = self._memo.get(key)
            if remembered is None:
                try:
                    remembered = tuple(_Hit(rule.index, (), ()) for rule in exchange_rules
                                       if rule.condition is None or self._condition(rule, context, failures))
                except _Failure as failure:
                    return self._decide(exchange, [], [*failures, failure])
                if not failures and remember:
                    self._remember(key, remembered)
            hits.extend((-1, hit) for hit in remembered)

        message_rules = tuple(rule for rule in rules if rule.per_message)
        if message_rules:
            pending: list[tuple[int, tuple[bytes, tuple[Any, ...]]]] = []
            for index, message in enumerate(exchange.messages):
                key = (_digest(message), key_context)
                remembered = self._memo.get(key)
                if remembered is None:
                    pending.append((index, key))
                else:
                    hits.extend((index, hit) for hit in remembered)
            if pending:
                messages = [exchange.messages[index] for index, _ in pending]
                before = len(failures)
                try:
                    results = self._evaluate(messages, message_rules, context, failures, runs)
                except _Failure as failure:
                    return self._decide(exchange, hits, [*failures, failure], runs)
                # A result that came with a failure is not remembered: the next try may succeed.
                remember = remember and len(failures) == before
                for (index, key), message_hits in zip(pending, results, strict=True):
                    if remember:
                        self._remember(key, message_hits)
                    hits.extend((index, hit) for hit in message_hits)
        return self._decide(exchange, hits, failures, runs)

    # -- evaluation -------------------------------------------------------------------

    def _evaluate(self, messages: Sequence[Message], rules: Sequence[CompiledRule], context: dict[str, Any],
                  failures: list[_Failure], runs: list[DetectorRun]) -> list[tuple[_Hit, ...]]:
        """Decide `rules` on each message; detectors are run once, batched, over every
        part of every message (costly ones only on the messages still undecided)."""
        # Detectors see each text as written, as normalised (folded look-alikes, joined
        # spaced letters, removed invisibles) and every payload decoded from it; what they
        # find is mapped back to the text as written, and merged per part.
        ways = [[_variants(part.text) for part in message.parts] for message in messages]
        variants = [variant for parts in ways for part in parts for variant in part]
        texts = [variant.text for variant in variants]
        patterns = _merge(self.policy.patterns.score(texts), variants)
        needed = set().union(*(rule.detectors for rule in rules))
        cascades = self.policy.cascades
        needed |= {other for name in needed for other, _, _ in cascades.get(name, ())}
        costly = {name for name in needed if name in cascades or _costly(self.policy.detectors[name])}
        detector_results: dict[str, list[DetectorResult]] = {}
        for name in sorted(needed - costly):
            detector_results[name] = _merge(self._score(name, texts, failures, runs), variants)
        if costly:
            # "On what is left": a message the cheap rules already block needs no model.
            cheap_rules = [rule for rule in rules if not rule.detectors & costly]
            decided = self._views(messages, ways, patterns, detector_results, [])  # its failures recur below
            blocked = {index for index, view in enumerate(decided) if _blocks(view.evaluate(cheap_rules, context), self.policy)}
            owner = [index for index, message_ways in enumerate(ways) for part in message_ways for _ in part]
            skip = {position for position, index in enumerate(owner) if index in blocked}
            # Costly detectors before cascaded ones: a cascade may wait on a costly score.
            for name in sorted(costly, key=lambda n: (n in cascades, n)):
                if name in cascades:
                    detector_results[name] = self._score_in_band(name, texts, variants, detector_results, failures, runs, skip)
                else:
                    detector_results[name] = _merge(self._score(name, texts, failures, runs, skip), variants)

        return [tuple(view.evaluate(rules, context))
                for view in self._views(messages, ways, patterns, detector_results, failures)]

    def _views(self, messages: Sequence[Message], ways: list[list[tuple[_Variant, ...]]], patterns: list[DetectorResult],
               detector_results: dict[str, list[DetectorResult]], failures: list[_Failure]) -> list[_MessageView]:
        views = []
        offset = 0
        for message, message_ways in zip(messages, ways, strict=True):
            count = len(message.parts)
            views.append(_MessageView(
                self,
                failures,
                message,
                message_ways,
                patterns[offset : offset + count],
                {name: results[offset : offset + count] for name, results in detector_results.items()},
            ))
            offset += count
        return views

    def _score(self, name: str, texts: list[str], failures: list[_Failure], runs: list[DetectorRun],
               skip: set[int] | frozenset[int] = frozenset()) -> list[DetectorResult]:
        """Detector `name` on `texts`, except the positions in `skip` (which get no score)."""
        wanted = [position for position in range(len(texts)) if position not in skip]
        if len(wanted) < len(texts):
            results = [DetectorResult() for _ in texts]
            if wanted:
                for position, result in zip(wanted, self._score(name, [texts[p] for p in wanted], failures, runs), strict=True):
                    results[position] = result
                runs[-1] = _replace(runs[-1], skipped=len(texts) - len(wanted))
            else:
                runs.append(DetectorRun(name, 0, len(texts), 0.0, 0.0))
            return results
        detector = self.policy.detectors[name]
        started = time.perf_counter()
        try:
            results = detector.score(texts)
            runs.append(DetectorRun(name, len(texts), 0, round((time.perf_counter() - started) * 1000, 3),
                                    max((value for result in results for value in result.scores.values()), default=0.0)))
            return results
        except Exception as error:  # noqa: BLE001 - any detector failure is a decision input
            blocking = self.policy.detector_on_error.get(name, "block") != "allow"
            failure = _Failure("detector", name, error, blocking=blocking)
            if blocking:
                raise failure from error
            failures.append(failure)
            runs.append(DetectorRun(name, len(texts), 0, round((time.perf_counter() - started) * 1000, 3), 0.0))
            return [DetectorResult() for _ in texts]

    def _score_in_band(self, name: str, texts: list[str], variants: list[_Variant],
                       cheap: dict[str, list[DetectorResult]], failures: list[_Failure], runs: list[DetectorRun],
                       skip: set[int]) -> list[DetectorResult]:
        """The costly detector, on the parts where a cheaper one is unsure (as written only)."""
        bands = self.policy.cascades[name]
        firsts = [index for index, variant in enumerate(variants) if variant.first]
        unsure = [part for part, first in enumerate(firsts) if first not in skip
                  and any(low <= cheap[other][part].scores.get(other, 0.0) <= high for other, low, high in bands)]
        results = [DetectorResult() for _ in firsts]
        if unsure:
            scored = self._score(name, [texts[firsts[part]] for part in unsure], failures, runs)
            for part, result in zip(unsure, scored, strict=True):
                results[part] = result
            runs[-1] = _replace(runs[-1], skipped=len(firsts) - len(unsure))
        else:
            runs.append(DetectorRun(name, 0, len(firsts), 0.0, 0.0))
        return results

    def _condition(self, rule: CompiledRule, context: dict[str, Any], failures: list[_Failure]) -> bool:
        """A rule's CEL condition; one that raises (a type error, a missing key) blocks
        unless the policy's on_error is allow, in which case it counts as false."""
        assert rule.condition is not None
        try:
            return _truthy(rule.condition.execute(context))
        except Exception as error:  # noqa: BLE001 - CEL raises several types
            failure = _Failure("rule", rule.id, error, blocking=self.policy.defaults.on_error != "allow")
            if failure.blocking:
                raise failure from error
            failures.append(failure)
            return False

    def _remember(self, key: tuple[bytes, tuple[Any, ...]], hits: tuple[_Hit, ...]) -> None:
        if len(self._memo) >= self._memo_size:
            # Dicts keep insertion order: drop the oldest eighth at once.
            for stale in list(self._memo)[: self._memo_size // 8 or 1]:
                del self._memo[stale]
        self._memo[key] = hits

    # -- combining --------------------------------------------------------------------

    def _decide(self, exchange: Exchange, hits: list[tuple[int, _Hit]], failures: list[_Failure],
                runs: Sequence[DetectorRun] = ()) -> Decision:
        policy = self.policy
        if not hits and not failures and not runs:
            return self._nothing  # no rule applied and nothing ran: the one answer there is
        by_rule: dict[int, list[tuple[int, _Hit]]] = {}
        for message_index, hit in hits:
            by_rule.setdefault(hit.rule, []).append((message_index, hit))

        findings: list[Finding] = []
        for rule_index in sorted(by_rule):
            rule = policy.rules[rule_index]
            spans: list[Span] = []
            scores: dict[str, float] = {}
            for message_index, hit in by_rule[rule_index]:
                spans.extend(Span(message_index, part, start, end, label) for part, start, end, label in hit.spans)
                for name, value in hit.scores:
                    scores[name] = max(value, scores.get(name, 0.0))
            top = max(scores.items(), key=lambda item: item[1]) if scores else None
            findings.append(Finding(
                rule=rule.id,
                action=rule.action,
                mode=rule.mode,
                detector=top[0] if top else None,
                score=top[1] if top else None,
                spans=tuple(spans),
                scores=scores,
                tags=rule.tags,
                message=rule.message or rule.description,
            ))
        for failure in failures:
            findings.append(Finding(
                rule=failure.finding_id,
                action=Action.BLOCK if failure.blocking else Action.ALLOW,
                mode=Mode.ENFORCE,
                detector=failure.detector,
                message=str(failure),
            ))

        enforced = [finding for finding in findings if finding.mode is Mode.ENFORCE]
        action = max((finding.action for finding in enforced), key=lambda a: a.severity, default=Action.ALLOW)
        intended = max((finding.action for finding in findings), key=lambda a: a.severity, default=Action.ALLOW)
        tags = tuple(dict.fromkeys(tag for finding in enforced if finding.action is Action.TAG for tag in finding.tags))
        decision = Decision(action=action, intended=intended, mode=policy.defaults.mode, findings=tuple(findings), tags=tags,
                            detectors=tuple(runs))
        if action is Action.BLOCK:
            blocker = next(finding for finding in enforced if finding.action is Action.BLOCK)
            rule = next((r for r in policy.rules if r.id == blocker.rule), None)
            return _replace(decision, blocking_rule=blocker.rule, reason=blocker.message,
                            respond=rule.respond if rule else None)
        if action is Action.REDACT:
            return _replace(decision, rewrites=_rewrites(exchange, decision, policy))
        return decision


class _MessageView:
    """One message with its detector results: what the rules and CEL functions see."""

    def __init__(self, engine: Engine, failures: list[_Failure], message: Message,
                 ways: Sequence[tuple[_Variant, ...]], patterns: Sequence[DetectorResult],
                 detectors: dict[str, list[DetectorResult]]) -> None:
        self.engine = engine
        self.policy = engine.policy
        self.failures = failures
        self.message = message
        self.ways = ways  # per part: the text as written, normalised, decoded
        self.patterns = patterns
        self.detectors = detectors

    def evaluate(self, rules: Sequence[CompiledRule], context: dict[str, Any]) -> list[_Hit]:
        hits: list[_Hit] = []
        for rule in rules:
            hit = self._decide(rule, context)
            if hit is not None:
                hits.append(hit)
                if rule.action is Action.ALLOW:
                    break
        return hits

    def _decide(self, rule: CompiledRule, context: dict[str, Any]) -> _Hit | None:
        if rule.roles is not None and self.message.role not in rule.roles:
            return None
        spans: list[_PartSpan] = []
        for kind, names in (("list", rule.lists), ("regex", rule.patterns)):
            if names:
                found = self._matches({f"{kind}:{name}" for name in names})
                if not found:
                    return None
                spans.extend(found)
        if rule.near is not None:
            found = self._near(rule.near.list, rule.near.words, rule.near.within)
            if not found:
                return None
            spans.extend(found)
        if rule.detect:
            found = self._detected(rule.detect)
            if not found:
                return None
            spans.extend(found)
        scores: list[tuple[str, float]] = []
        for name, threshold in rule.thresholds:
            results = self.detectors[name.partition(":")[0]]
            over = [(part, 0, len(self.message.parts[part].text), name)
                    for part, result in enumerate(results) if result.scores.get(name, 0.0) >= threshold]
            if not over:
                return None
            spans.extend(over)
        if rule.condition is not None:
            recorded: list[_PartSpan] = []
            if not self.engine._condition(rule, self._cel_context(rule, context, recorded), self.failures):
                return None
            spans.extend(recorded)
        # A threshold on a label ("semantic:jailbreak") is reported by that label's score.
        labelled = {name.partition(":")[0] for name, _ in rule.thresholds if ":" in name}
        for name, _ in rule.thresholds:
            scores.append((name, self._score(name)))
        for name in sorted(rule.detectors - labelled - {name for name, _ in rule.thresholds}):
            scores.append((name, self._score(name)))
        return _Hit(rule.index, tuple(dict.fromkeys(spans)), tuple(scores))

    def _score(self, name: str) -> float:
        """A detector's score ("toxicity") or one of its labels' ("semantic:jailbreak"), the
        highest over the message's parts."""
        results = self.detectors[name.partition(":")[0]]
        return max((result.scores.get(name, 0.0) for result in results), default=0.0)

    def _detected(self, entries: Sequence[str]) -> list[_PartSpan]:
        """Spans of span detectors (`secrets`, or `pii:email` for one label)."""
        found: list[_PartSpan] = []
        for entry in entries:
            name, _, label = entry.partition(":")
            found.extend((part, match.start, match.end, match.label)
                         for part, result in enumerate(self.detectors[name])
                         for match in result.matches if not label or match.label == label)
        return found

    def _matches(self, labels: set[str]) -> list[_PartSpan]:
        return [(part, match.start, match.end, match.label.split(":", 1)[1])
                for part, result in enumerate(self.patterns) for match in result.matches if match.label in labels]

    def _near(self, list_name: str, words: Sequence[str], within: int) -> list[_PartSpan]:
        found: list[_PartSpan] = []
        for part_index, variants in enumerate(self.ways):
            for variant in variants:
                matches: tuple[Match, ...] = self.policy.patterns.near(variant.text, list_name, tuple(words), int(within))
                found.extend((part_index, *variant.to_original(m.start, m.end), list_name) for m in matches)
        return list(dict.fromkeys(found))

    def _cel_context(self, rule: CompiledRule, context: dict[str, Any], recorded: list[_PartSpan]) -> dict[str, Any]:
        variables = rule.condition_variables
        ctx = {name: value for name, value in context.items() if name in variables}
        if "message" in variables or "text" in variables:
            text = self.message.text
            ctx["text"] = text
            ctx["message"] = {
                "role": self.message.role,
                "text": text,
                "name": self.message.name or "",
                "tools": [call.name for call in self.message.tool_calls],
                "kinds": sorted({str(part.kind) for part in self.message.parts}),
            }
        if "scores" in variables:
            scores = {name: 0.0 for name in self.detectors}
            for results in self.detectors.values():
                for result in results:
                    for label, value in result.scores.items():
                        scores[label] = max(value, scores.get(label, 0.0))
            ctx["scores"] = scores
        if "lists" in variables:
            found = {match.label for result in self.patterns for match in result.matches}
            ctx["lists"] = {name: f"list:{name}" in found for name in self.policy.patterns.list_names}

        def record(spans: list[_PartSpan]) -> bool:
            recorded.extend(spans)
            return bool(spans)

        ctx["mentions"] = lambda name: record(self._matches({f"list:{name}"}))
        ctx["pattern"] = lambda name: record(self._matches({f"regex:{name}"}))
        ctx["near"] = lambda name, words, within: record(self._near(name, list(words), int(within)))
        return ctx


# -- helpers ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Variant:
    """One way of reading a part's text: as written (`first`), normalised, or decoded."""

    text: str
    first: bool
    normalized: Normalized | None  # maps offsets back to the text as written

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        return (start, end) if self.normalized is None else self.normalized.to_original(start, end)


def _variants(text: str) -> tuple[_Variant, ...]:
    # Short texts repeat (history, stream windows): remember them; long ones would make
    # the cache's memory unbounded in practice, and cost little next to their scoring.
    return _variants_cached(text) if len(text) <= 4096 else _read_ways(text)


@functools.lru_cache(maxsize=16_384)
def _variants_cached(text: str) -> tuple[_Variant, ...]:
    return _read_ways(text)


def _read_ways(text: str) -> tuple[_Variant, ...]:
    normalized = normalize(text)
    out = [_Variant(text, True, None)]
    if normalized.text != text:
        out.append(_Variant(normalized.text, False, normalized))
    pending = list(normalized.views)
    while pending:
        view = pending.pop(0)
        out.append(_Variant(view.text, False, view))
        pending.extend(view.views)
    return tuple(out)


def _merge(results: Sequence[DetectorResult], variants: Sequence[_Variant]) -> list[DetectorResult]:
    """One result per part from the results of its variants: the highest score per label,
    and every match, mapped back to the text as written."""
    merged: list[DetectorResult] = []
    for result, variant in zip(results, variants, strict=True):
        if variant.first:
            merged.append(result)
            continue
        if not result.scores and not result.matches:
            continue
        previous = merged[-1]
        scores = dict(previous.scores)
        for label, value in result.scores.items():
            scores[label] = max(value, scores.get(label, 0.0))
        matches = list(previous.matches)
        for match in result.matches:
            start, end = variant.to_original(match.start, match.end)
            mapped = Match(start, end, match.label)
            if mapped not in matches:
                matches.append(mapped)
        merged[-1] = DetectorResult(scores, tuple(matches))
    return merged


def _costly(detector: Any) -> bool:
    return bool(getattr(getattr(detector, "inner", detector), "costly", False))


def _blocks(hits: Sequence[_Hit], policy: Policy) -> bool:
    return any(policy.rules[hit.rule].action is Action.BLOCK and policy.rules[hit.rule].mode is Mode.ENFORCE for hit in hits)


def _in_scope(rule: CompiledRule, exchange: Exchange) -> bool:
    if exchange.direction is Direction.REQUEST:
        speaker = exchange.source_agent or (exchange.provenance.agent if exchange.provenance else None)
    else:
        speaker = exchange.agent
    listener = exchange.agent if exchange.direction is Direction.REQUEST else exchange.target_agent
    return (
        (rule.routes is None or exchange.route in rule.routes)
        and (rule.agents is None or exchange.agent in rule.agents)
        and (rule.from_agents is None or speaker in rule.from_agents)
        and (rule.to_agents is None or listener in rule.to_agents)
    )


def _exchange_context(exchange: Exchange) -> dict[str, Any]:
    provenance = exchange.provenance if exchange.direction is Direction.REQUEST else None
    if exchange.direction is Direction.RESPONSE:
        source: dict[str, Any] = {"agent": exchange.agent or "", "kind": "model"}
    else:
        agent = exchange.source_agent or (provenance.agent if provenance else "")
        source = {"agent": agent or "", "kind": "agent" if agent else "client"}
    source.update(flagged=bool(provenance and provenance.flagged), quarantined=bool(provenance and provenance.quarantined),
                  tainted=bool(provenance and provenance.tainted))
    return {
        "direction": str(exchange.direction),
        "agent": exchange.agent or "",
        "hops": provenance.hops if provenance else 0,
        "source": source,
        "target": {"agent": exchange.target_agent or ""},
        "model": exchange.model or "",
        "provider": exchange.provider,
        "route": exchange.route,
    }


def _digest(message: Message) -> bytes:
    digest = hashlib.blake2b(message.role.encode(), digest_size=16)
    for part in message.parts:
        digest.update(b"\x00")
        digest.update(part.kind.encode())
        digest.update(b"\x01")
        digest.update(part.text.encode("utf-8", "surrogatepass"))
    return digest.digest()


def _truthy(value: Any) -> bool:
    return value is True


def _replace(decision: Decision, **changes: Any) -> Decision:
    from dataclasses import replace

    return replace(decision, **changes)


def replacement(policy: Policy, rule_id: str, label: str) -> str:
    """What a redact rule writes in place of a span that matched `label`."""
    template = next((rule.replacement for rule in policy.rules if rule.id == rule_id), policy.defaults.redact_with)
    return _format(template, label=label, rule=rule_id)


def redactions(decision: Decision, policy: Policy) -> dict[tuple[int, int], list[tuple[int, int, str]]]:
    """The enforced redactions of a decision, per (message, part): (start, end, replacement)."""
    templates = {rule.id: rule.replacement for rule in policy.rules}
    per_part: dict[tuple[int, int], list[tuple[int, int, str]]] = {}
    for finding in decision.findings:
        if finding.action is not Action.REDACT or finding.mode is not Mode.ENFORCE:
            continue
        template = templates.get(finding.rule, policy.defaults.redact_with)
        for span in finding.spans:
            text = _format(template, label=span.label or finding.rule, rule=finding.rule)
            per_part.setdefault((span.message, span.part), []).append((span.start, span.end, text))
    return per_part


def _rewrites(exchange: Exchange, decision: Decision, policy: Policy) -> tuple[Rewrite, ...]:
    rewrites: list[Rewrite] = []
    for (message_index, part_index), spans in sorted(redactions(decision, policy).items()):
        if message_index < 0:
            continue
        part = exchange.messages[message_index].parts[part_index]
        rewrites.append(Rewrite(part.path, apply_redactions(part.text, spans)))
    return tuple(rewrites)


def _format(template: str, **values: str) -> str:
    try:
        return template.format(kind=values["label"], **values)
    except (KeyError, IndexError, ValueError):
        return template


def apply_redactions(text: str, spans: list[tuple[int, int, str]]) -> str:
    """Replace each span; overlapping spans merge and take the first replacement."""
    merged: list[list[Any]] = []
    for start, end, replacement in sorted(spans, key=lambda s: (s[0], -s[1])):
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end, replacement])
    out, cursor = [], 0
    for start, end, replacement in merged:
        out.append(text[cursor:start])
        out.append(replacement)
        cursor = end
    out.append(text[cursor:])
    return "".join(out)


__all__ = ["Engine", "apply_redactions", "redactions", "replacement"]
