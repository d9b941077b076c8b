"""The peers agent-firewall is compared with, started the way their users would start them.

- mitmproxy 11.0 (`mitmdump` from the project's .venv-mitm) in reverse mode with a no-op
  addon (mitm_noop.py, beside this file).
- The LiteLLM proxy, installed by the benchmark into its own virtual environment
  (benchmarks/compare/.venv-litellm, git-ignored), configured with one openai-compatible
  model whose `api_base` is the project's fake upstream.

Both are started with bench_proxy's `_Children` (own session, pinned CPU, log file) so that
every process ends with the run, also on failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench_proxy import _REPO, Layout, _Children, _wait_ready

HERE: Final = Path(__file__).resolve().parent
LITELLM_VENV: Final = HERE / ".venv-litellm"
# LiteLLM 1.82.7 and 1.82.8 on PyPI were a supply-chain compromise (March 2026: a
# credential stealer, 1.82.8 as a .pth file that runs at every Python start-up). The
# range stops at the last release made before it by the project's own CI, which many
# projects pinned to at the time; raising it is a deliberate, reviewed change.
LITELLM_SPEC: Final = "litellm[proxy]>=1.80,<=1.82.6"
_BAD_FILES: Final = ("litellm_init.pth",)  # the 1.82.8 payload: refuse to run if it is there
MITMDUMP: Final = _REPO / ".venv-mitm" / "bin" / "mitmdump"
MODEL: Final = "gpt-4o-mini"  # what bench_proxy's request bodies ask for


@dataclass(frozen=True, slots=True)
class LiteLLMInstall:
    version: str
    seconds: float | None  # install time, None when it was already installed
    mib: float  # size of the virtual environment on disk


def _dir_mib(path: Path) -> float:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).lstat().st_size
            except OSError:
                pass
    return total / 2**20


def _litellm_version(venv: Path) -> str | None:
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    done = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                          capture_output=True, text=True, timeout=60)
    return done.stdout.strip() or None if done.returncode == 0 else None


def _in_range(version: str) -> bool:
    # The same bounds as LITELLM_SPEC, checked without importing packaging into the project.
    parts = tuple(int(p) for p in version.split(".")[:3] if p.isdigit())
    return (1, 80) <= parts <= (1, 82, 6)


def ensure_litellm(venv: Path = LITELLM_VENV) -> LiteLLMInstall:
    """Install LiteLLM's proxy into its own venv, unless a version in range is there already."""
    started = time.perf_counter()
    seconds: float | None = None
    version = _litellm_version(venv)
    if version is None or not _in_range(version):
        print(f"installing {LITELLM_SPEC} into {venv} (a few hundred MB; about a minute) ...", flush=True)
        # The project's interpreter (a venv's `-m venv` builds on its base Python): one
        # Python version for everything measured.
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", LITELLM_SPEC], check=True, timeout=1800)
        seconds = time.perf_counter() - started
        version = _litellm_version(venv)
        if version is None:
            raise SystemExit(f"LiteLLM did not install into {venv}")
    bad = [str(p) for name in _BAD_FILES for p in venv.glob(f"lib/python*/site-packages/{name}")]
    if bad:
        raise SystemExit(f"refusing to run LiteLLM: {', '.join(bad)} is the payload of a compromised release; "
                         f"delete {venv}")
    return LiteLLMInstall(version=version, seconds=seconds, mib=_dir_mib(venv))


def write_litellm_config(path: Path, upstream_port: int) -> None:
    """Pass-through: one model, the fake upstream as an openai-compatible endpoint, no
    callbacks, no retries, no database, no master key (so no auth lookups)."""
    config = {
        "model_list": [{"model_name": MODEL, "litellm_params": {
            "model": f"openai/{MODEL}", "api_base": f"http://127.0.0.1:{upstream_port}/v1",
            "api_key": "bench-not-a-real-key"}}],
        "litellm_settings": {"telemetry": False, "callbacks": [], "num_retries": 0, "request_timeout": 60},
    }
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML


def start_litellm(children: _Children, layout: Layout, tmp: Path, tag: str, upstream_port: int,
                  port: int) -> subprocess.Popen[bytes]:
    config = tmp / f"{tag}-litellm.yaml"
    write_litellm_config(config, upstream_port)
    log = tmp / f"{tag}-litellm.log"
    # `env` execs in place, so the pid is LiteLLM's own. The local cost map: LiteLLM would
    # otherwise fetch it from the network at start-up, and this machine has none.
    proc = children.start(["env", "LITELLM_LOCAL_MODEL_COST_MAP=True", str(LITELLM_VENV / "bin" / "litellm"),
                           "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                           "--num_workers", "1"], layout.tested_cpu, log)
    _wait_ready(proc, port, "the LiteLLM proxy", log)
    return proc


def start_mitmproxy(children: _Children, layout: Layout, tmp: Path, tag: str, upstream_port: int,
                    port: int) -> subprocess.Popen[bytes]:
    if not MITMDUMP.exists():
        raise SystemExit(f"{MITMDUMP} not found: mitmproxy 11.0 lives in .venv-mitm (pip install 'mitmproxy>=11.0,<11.1')")
    log = tmp / f"{tag}-mitmdump.log"
    # flow_detail 0 and -q: mitmdump prints nothing per flow (printing would be a cost no
    # proxy in production pays); no -w, so it keeps no flows.
    proc = children.start([str(MITMDUMP), "--mode", f"reverse:http://127.0.0.1:{upstream_port}",
                           "--listen-host", "127.0.0.1", "--listen-port", str(port), "-q",
                           "--set", "flow_detail=0", "-s", str(HERE / "mitm_noop.py")], layout.tested_cpu, log)
    _wait_ready(proc, port, "mitmdump", log)
    return proc


def mitmproxy_version() -> str:
    done = subprocess.run([str(MITMDUMP), "--version"], capture_output=True, text=True, timeout=60)
    first = (done.stdout or "").splitlines()[:1]
    return first[0].split(":", 1)[-1].strip() if first else "unknown"


def check_answers(port: int, what: str) -> None:
    """One chat request must come back 200 before any load: a proxy that is listening but
    not yet ready (LiteLLM binds before it has loaded its config) or misconfigured would
    otherwise be measured as fast errors."""
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "ready?"}]}).encode()
    deadline = time.monotonic() + 60
    last = ""
    while time.monotonic() < deadline:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body, method="POST",
                                         headers={"Content-Type": "application/json", "X-Agent-Id": "researcher",
                                                  "Authorization": "Bearer bench-not-a-real-key"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as error:
            last = str(error)
        time.sleep(0.2)
    raise SystemExit(f"{what} did not answer a chat request with 200 within 60 s ({last})")


def rss_kib(pid: int) -> int:
    """VmRSS of a process and all its descendants (LiteLLM or nginx may fork), in KiB."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            continue
        todo.extend(children.get(current, []))
    return total
