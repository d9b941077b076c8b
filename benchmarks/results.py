"""benchmarks/RESULTS.md: each benchmark owns one `## ` section and rewrites only it."""

from __future__ import annotations

import re
from pathlib import Path


def write_section(path: Path, heading: str, section: str) -> None:
    """Replace the section that starts with `heading` (up to the next `## ` heading), or
    append it; every other section is left as it is."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = section.rstrip("\n") + "\n\n"
    pattern = re.compile(rf"^{re.escape(heading)}[^\n]*\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text.rstrip("\n") + "\n")
