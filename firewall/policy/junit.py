"""Policy test results as JUnit XML, the format CI systems read (GitLab, Jenkins, GitHub
test reporters): one <testsuite> per policy file, one <testcase> per case."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field

from firewall.policy.testing import CaseResult

__all__ = ["Suite", "junit_xml"]


@dataclass(slots=True)
class Suite:
    """One policy file's run: its cases, or why it could not be loaded."""

    path: str
    name: str
    results: list[CaseResult] = field(default_factory=list)
    error: str | None = None  # the policy (or a tests file beside it) has mistakes
    seconds: float = 0.0


def junit_xml(suites: Sequence[Suite]) -> bytes:
    root = ET.Element("testsuites", name="agent-firewall policy tests",
                      tests=str(sum(len(s.results) for s in suites)),
                      failures=str(sum(not r.passed for s in suites for r in s.results)),
                      errors=str(sum(s.error is not None for s in suites)))
    for suite in suites:
        element = ET.SubElement(root, "testsuite", name=suite.path, tests=str(len(suite.results)),
                                failures=str(sum(not r.passed for r in suite.results)),
                                errors=str(int(suite.error is not None)), time=f"{suite.seconds:.3f}")
        if suite.error is not None:
            case = ET.SubElement(element, "testcase", classname=suite.name or suite.path, name="load policy")
            error = ET.SubElement(case, "error", message="the policy has mistakes", type="PolicyError")
            error.text = suite.error
            continue
        for result in suite.results:
            case = ET.SubElement(element, "testcase", classname=suite.name, name=result.name)
            if not result.passed:
                failure = ET.SubElement(case, "failure", message=result.failure or "failed", type="PolicyTestFailure")
                failure.text = result.failure
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
