"""Policy mistakes, each with the file, line and column where it was made."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PolicyProblem:
    file: str
    line: int  # 1-based
    column: int  # 1-based
    where: str  # dotted path into the document, e.g. rules[2].if
    message: str

    def __str__(self) -> str:
        where = f"{self.where}: " if self.where else ""
        return f"{self.file}:{self.line}:{self.column}: {where}{self.message}"


class PolicyError(Exception):
    """A policy that cannot be loaded; `problems` lists every mistake found."""

    def __init__(self, problems: Sequence[PolicyProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))
