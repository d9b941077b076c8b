"""The policy file's schema: what a security team writes, validated by pydantic.

Every model forbids unknown fields, so a typo is a load error with its line and column,
never a rule that silently does nothing.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from firewall.agents.drift import DriftSpec
from firewall.agents.lineage import LineageSpec
from firewall.forward.hosts import ForwardSpec
from firewall.model import Action, Mode

RULE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
KEY_HASH_PATTERN = r"^sha256:[0-9a-f]{64}$"  # what the policy stores of an agent's key


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Defaults(_Strict):
    mode: Mode = Mode.ENFORCE
    on_error: Literal["block", "allow"] = "block"
    # What to do with a route no wire format understands: refuse it, or forward it
    # uninspected (the audit record says so).
    unknown_routes: Literal["refuse", "forward"] = "refuse"
    redact_with: str = "[REDACTED:{label}]"


class AgentMatch(_Strict):
    header: dict[str, str] | None = None
    path_prefix: str | None = None

    @model_validator(mode="after")
    def _one_way_to_match(self) -> AgentMatch:
        if self.header is None and self.path_prefix is None:
            raise ValueError("an agent match needs 'header' or 'path_prefix'")
        return self


class RateSpec(_Strict):
    """At most `requests` requests in any `per` seconds."""

    requests: int = Field(ge=1)
    per: float = Field(gt=0)


class AgentSpec(_Strict):
    description: str | None = None
    match: AgentMatch | None = None
    # The agents this agent's output may reach (edges this → that); absent: any.
    may_send_to: list[str] | None = None
    # The tools it may call or offer to its model; absent: any.
    tools: list[str] | None = None
    rate_limit: RateSpec | None = None
    # Hashes of the agent's own firewall keys (`agent-firewall keys new AGENT` prints one).
    keys: list[str] = []

    @field_validator("keys")
    @classmethod
    def _hashes_only(cls, keys: list[str]) -> list[str]:
        for value in keys:
            if not re.match(KEY_HASH_PATTERN, value):
                shown = value[:12] + "…" if len(value) > 12 else value
                raise ValueError(f"{shown!r} is not a key hash: store 'sha256:<64 hex>', never the key itself "
                                 "(agent-firewall keys new AGENT prints both)")
        return keys


class QuarantineSpec(_Strict):
    """When an agent is throttled or quarantined, and for how long."""

    violations: int = Field(default=3, ge=0)  # blocked exchanges within `window` that quarantine (0: never)
    window: float = Field(default=600.0, gt=0)
    throttle_at: int | None = Field(default=None, ge=1)  # fewer violations that throttle first
    throttle_rate: RateSpec = RateSpec(requests=6, per=60.0)
    on_drift: bool = True  # a drift alert quarantines
    on_taint: bool = False  # a request carrying tainted content counts as a violation
    release_after: float | None = Field(default=3600.0, gt=0)  # None: released by hand only

    @model_validator(mode="after")
    def _throttle_first(self) -> QuarantineSpec:
        if self.throttle_at is not None and self.violations and self.throttle_at >= self.violations:
            raise ValueError(f"throttle_at ({self.throttle_at}) must be below violations ({self.violations}): "
                             "an agent is throttled before it is quarantined")
        return self


class ProtocolSpec(_Strict):
    """How content may travel between agents."""

    max_hops: int | None = Field(default=None, ge=1)  # agents a piece of content may pass through
    loops: Literal["block", "allow"] = "block"  # content coming back to an agent it already passed
    agent_rate: RateSpec | None = None  # every agent's default rate limit (an agent's own overrides it)
    edge_rate: RateSpec | None = None  # per source → agent edge
    # What crossing these rules does: block (an error naming the rule) or monitor (recorded only).
    mode: Mode = Mode.ENFORCE


class AuditSpec(_Strict):
    """What the audit log keeps of each exchange beyond the verdict."""

    # Each message's role and text (as forwarded: redactions applied), so that `replay`
    # can decide the exchange again under another policy. Off by default: the log then
    # holds what agents said.
    messages: bool = False


class IdentitySpec(_Strict):
    """How the firewall tells agents apart, and what it does with a request it cannot
    attribute."""

    # refuse: answer with an error that says how to identify; allow: inspect it as an
    # anonymous agent (rules with `from`/`agents` scopes never match it).
    unidentified: Literal["refuse", "allow"] = "refuse"
    # Only a per-agent key identifies: a header or a path is a claim any caller can make.
    require_key: bool = False
    # Take the agent from the request body's `user` (OpenAI) or `metadata.user_id`
    # (Anthropic) when nothing else names it.
    from_metadata: bool = False


class DetectorSpec(BaseModel):
    """A detector's settings. Besides `on_error` and `when`, every field is the detector's
    own option (`backend`, `checkpoint`, `endpoint`...), validated by the detector itself."""

    model_config = ConfigDict(extra="allow", frozen=True)

    on_error: Literal["block", "allow"] | None = None
    # A cascade: run this (costly) detector on a message only when these cheaper
    # detectors' scores fall inside [low, high], where they are unsure.
    when: dict[str, tuple[Annotated[float, Field(ge=0.0, le=1.0)], Annotated[float, Field(ge=0.0, le=1.0)]]] | None = None

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class NearSpec(_Strict):
    """A term of `list` within `within` words of one of `words`, or of a term of the named
    list `near` (Falco-style: the anchors are data too)."""

    list: str
    words: list[str] | None = Field(default=None, min_length=1)
    near: str | None = None
    within: int = Field(default=6, ge=1, le=100)

    @model_validator(mode="after")
    def _anchors(self) -> NearSpec:
        if (self.words is None) == (self.near is None):
            raise ValueError("near needs 'words' (a list of words) or 'near' (the name of a list), not both")
        return self


class SemanticSpec(_Strict):
    """A harm described in sentences: the message must be closer than `threshold` (cosine
    similarity) to one of `like`, and closer to it than to any of `unlike`."""

    like: list[str] = Field(min_length=1)
    unlike: list[str] = Field(default_factory=list)
    threshold: float = Field(default=0.55, ge=0.0, le=1.0)


class MatchSpec(_Strict):
    """Structured conditions. Each key given must hold (they are ANDed); inside a key,
    any entry is enough (any list, any pattern)."""

    lists: list[str] | None = None
    patterns: list[str] | None = None
    detect: list[str] | None = None  # span detectors: "secrets", or "pii:email" for one label
    near: NearSpec | None = None
    scores: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]] | None = None
    roles: list[str] | None = None
    semantic: SemanticSpec | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> MatchSpec:
        if not any(v is not None for v in (self.lists, self.patterns, self.detect, self.near, self.scores, self.roles,
                                           self.semantic)):
            raise ValueError("an empty match matches everything; remove it or give a condition")
        return self


class ActionSpec(_Strict):
    """The normalised action. In YAML an action is a word (`block`) or a one-key map:
    `{tag: ai-to-ai}`, `{tag: [a, b]}`, `{redact: "[{label}]"}`."""

    kind: Action
    tags: tuple[str, ...] = ()
    replacement: str | None = None


def _parse_action(value: Any) -> Any:
    if isinstance(value, str):
        return {"kind": value}
    if isinstance(value, dict) and len(value) == 1:
        ((kind, arg),) = value.items()
        if kind == "tag":
            return {"kind": "tag", "tags": [arg] if isinstance(arg, str) else arg}
        if kind == "redact":
            return {"kind": "redact", "replacement": arg}
        if kind in ("allow", "block") and arg in (None, {}):
            return {"kind": kind}
        raise ValueError(f"unknown action {kind!r}: expected allow, tag, redact or block")
    if isinstance(value, dict) and "kind" in value:
        return value
    raise ValueError("an action is one of allow, tag, redact, block, or a map such as {tag: name} or {redact: '[{label}]'}")


class RuleSpec(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: str = Field(pattern=RULE_ID_PATTERN)
    description: str | None = None
    direction: Literal["request", "response", "both"] = "both"
    from_: list[str] | None = Field(default=None, alias="from")
    to: list[str] | None = None
    agents: list[str] | None = None
    # The wire formats the rule applies to (openai_chat, mcp, a2a, ...): unlike a condition on
    # `route` in `if:`, known when a stream starts, so a rule for MCP holds back no LLM stream.
    routes: list[str] | None = None
    match: MatchSpec | None = None
    if_: str | None = Field(default=None, alias="if")
    action: ActionSpec
    mode: Mode | None = None
    # How a block is answered: error (the SDK raises) or refusal (a well-formed answer).
    # Unset: an error, except mid-stream on OpenAI, where a content_filter finish is the norm.
    respond: Literal["error", "refusal"] | None = None
    message: str | None = None

    @field_validator("action", mode="before")
    @classmethod
    def _action(cls, value: Any) -> Any:
        return _parse_action(value)

    @model_validator(mode="after")
    def _has_condition_or_scope(self) -> RuleSpec:
        if self.match is None and self.if_ is None and not (self.from_ or self.to or self.agents):
            raise ValueError("a rule needs a condition: 'match', 'if', or an agent scope ('from', 'to', 'agents')")
        return self


class TestMessage(_Strict):
    role: str = "user"
    content: str


class TestExpect(_Strict):
    action: Action
    rule: str | None = None
    rules: list[str] | None = None
    tags: list[str] | None = None
    redacted: str | None = None  # the first matching part's text after redaction


class PolicyTest(_Strict):
    __test__ = False  # not a pytest class

    name: str
    request: str | list[TestMessage] | None = None
    response: str | None = None
    agent: str | None = None
    source: str | None = None
    target: str | None = None
    expect: TestExpect

    @model_validator(mode="after")
    def _one_input(self) -> PolicyTest:
        if (self.request is None) == (self.response is None):
            raise ValueError("a test gives exactly one of 'request' or 'response'")
        return self


class StreamSpec(_Strict):
    """How streamed responses are inspected. `incremental`: text is released as soon as
    it is checked, holding back only what the rules need; `buffer`: the whole stream is
    inspected before any of it is released."""

    mode: Literal["incremental", "buffer"] = "incremental"
    holdback: int | None = Field(default=None, ge=0, le=1_048_576)  # characters; None: what the rules need
    max_holdback: int = Field(default=2048, ge=16, le=1_048_576)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"mode": value} if isinstance(value, str) else value


class PolicySpec(_Strict):
    version: Literal[1]
    name: str
    description: str | None = None
    defaults: Defaults = Defaults()
    identity: IdentitySpec = IdentitySpec()
    audit: AuditSpec = AuditSpec()
    agents: dict[str, AgentSpec] = {}
    protocol: ProtocolSpec = ProtocolSpec()
    quarantine: QuarantineSpec = QuarantineSpec()
    lineage: LineageSpec = LineageSpec()
    drift: DriftSpec | None = None  # off unless the policy names what to watch
    lists: dict[str, list[str]] = {}
    patterns: dict[str, str] = {}
    detectors: dict[str, DetectorSpec] = {}
    stream: StreamSpec = StreamSpec()
    forward: ForwardSpec = ForwardSpec()  # forward mode (HTTPS_PROXY): the hosts inspected
    rules: list[RuleSpec] = []
    tests: list[PolicyTest] = []

    @model_validator(mode="after")
    def _one_agent_per_key(self) -> PolicySpec:
        holders: dict[str, str] = {}
        for name, agent in self.agents.items():
            for value in agent.keys:
                other = holders.setdefault(value, name)
                if other != name:
                    raise ValueError(f"agents.{other} and agents.{name} list the same key hash ({value[:19]}…): "
                                     "a key must identify one agent")
        return self
