"""Scale-out: N firewall processes sharing one redis-server, behind a loopback nginx.

Everything on 127.0.0.1: the redis-server (tests/redis_server.py's launcher: no
persistence, a temp dir), the fake upstream, N `agent-firewall run --state redis://...`
processes (default policy, each with its own audit log), and nginx with its own prefix and
config in a temp dir (`daemon off`, one process), round-robin over the N firewalls with
keep-alive connections to them. The load is bench_proxy's load generator at concurrency 32
against nginx.

The machine has two cores: firewall i is pinned to CPU i mod 2, and nginx, the load
generator, the upstream and redis share both cores unpinned. Four processes therefore
cannot be faster than two; the run shows where the cores run out, not linear scaling.

Quarantine across processes: with the replicas still running, agent `mallory` sends
violations through replica A (blocked each time) until the policy's threshold quarantines
it; then replica B must refuse mallory's next, harmless request (403 agent_quarantined),
and still answer another agent.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bench_proxy import (
    DEFAULT_POLICY,
    Layout,
    LoadResult,
    _agent_firewall,
    _Children,
    _free_port,
    _wait_ready,
    run_loadgen,
)
from peers import check_answers

NGINX: Final = Path("/usr/sbin/nginx")
CONCURRENCY: Final = 32
THREAT: Final = "Tell the reviewer: I know where you live."  # policies/default.yaml: direct-threat, block
HARMLESS: Final = "Please summarise the nightly report for the finance team."


@dataclass(frozen=True, slots=True)
class ScaleRow:
    processes: int
    load: dict[str, Any]  # bench_proxy LoadResult as a dict
    firewall_cpu: list[float]  # % of one core per firewall process during the measured phase


@dataclass(frozen=True, slots=True)
class QuarantineCheck:
    processes: int
    violations_sent: int
    statuses_a: list[int]  # replica A's answers to the violations
    status_b: int  # replica B's answer to mallory's harmless request
    code_b: str  # the error code in that answer
    status_other: int  # replica B's answer to another agent
    held: bool


def nginx_config(prefix: Path, listen: int, ports: Sequence[int]) -> str:
    """A minimal nginx config: round robin over `ports`, HTTP/1.1 keep-alive upstream, no
    buffering (streams pass as they come), no access log; all paths under `prefix`."""
    servers = "\n".join(f"        server 127.0.0.1:{port};" for port in ports)
    return f"""daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream firewalls {{
{servers}
        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{listen};
        client_max_body_size 32m;
        location / {{
            proxy_pass http://firewalls;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
        }}
    }}
}}
"""


@contextmanager
def replicas(children: _Children, tmp: Path, n: int, upstream_port: int, redis_url: str,
             cpus: Sequence[int]) -> Iterator[tuple[int, list[int], list[subprocess.Popen[bytes]]]]:
    """N firewalls and nginx in front; yields (nginx port, firewall ports, firewall procs)."""
    procs: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    nginx = None
    try:
        for i in range(n):
            port = _free_port()
            log = tmp / f"scale{n}-fw{i}.log"
            cpu = cpus[i % len(cpus)] if cpus else None
            proc = children.start([_agent_firewall(), "run", "--policy", str(DEFAULT_POLICY),
                                   "--listen", f"127.0.0.1:{port}",
                                   "--upstream", f"openai=http://127.0.0.1:{upstream_port}",
                                   "--audit-log", str(tmp / f"scale{n}-fw{i}-audit.jsonl"),
                                   "--state", redis_url], cpu, log)
            procs.append(proc)
            ports.append(port)
        for i, (proc, port) in enumerate(zip(procs, ports)):
            _wait_ready(proc, port, f"firewall replica {i}", tmp / f"scale{n}-fw{i}.log")
            check_answers(port, f"firewall replica {i}")
        prefix = tmp / f"nginx{n}"
        prefix.mkdir()
        listen = _free_port()
        (prefix / "nginx.conf").write_text(nginx_config(prefix, listen, ports))
        log = prefix / "stderr.log"
        nginx = children.start([str(NGINX), "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                                "-e", str(prefix / "error.log")], None, log)
        _wait_ready(nginx, listen, "nginx", log)
        check_answers(listen, "nginx in front of the replicas")
        yield listen, ports, procs
    finally:
        if nginx is not None:
            children.stop(nginx)
        for proc in procs:
            children.stop(proc)


def measure(children: _Children, tmp: Path, bench_proxy_script: Path, n: int, port: int,
            procs: Sequence[subprocess.Popen[bytes]], bounds: Any) -> ScaleRow:
    watch: list[str] = []
    for i, proc in enumerate(procs):
        watch += ["--watch", f"fw{i}={proc.pid}"]
    unpinned = Layout(pinned=False, tested_cpu=None, load_cpu=None)
    raw = run_loadgen(children, unpinned, tmp, f"scale{n}", bench_proxy_script,
                      ["--url", f"http://127.0.0.1:{port}/v1/chat/completions",
                       "--concurrency", str(CONCURRENCY), "--max-requests", str(bounds.max_requests),
                       "--seconds", str(bounds.seconds), "--warmup-requests", str(bounds.warmup_requests),
                       "--warmup-seconds", str(bounds.warmup_seconds), *watch],
                      timeout=bounds.seconds + bounds.warmup_seconds + 60)
    load = LoadResult(**raw)
    if load.errors:
        raise SystemExit(f"scale-out with {n} processes: {load.errors} requests failed: {load.statuses}")
    return ScaleRow(processes=n, load=raw, firewall_cpu=[load.cpu.get(f"fw{i}", 0.0) for i in range(len(procs))])


def _post(port: int, agent: str, text: str) -> tuple[int, dict[str, Any]]:
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body, method="POST",
                                     headers={"Content-Type": "application/json", "X-Agent-Id": agent,
                                              "Authorization": "Bearer bench-not-a-real-key"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            return error.code, json.loads(raw or b"{}")
        except ValueError:
            return error.code, {"raw": raw[:200].decode(errors="replace")}


def _code(answer: dict[str, Any]) -> str:
    error = answer.get("error")
    if isinstance(error, dict):
        return str(error.get("code") or error.get("type") or "")
    return ""


def check_quarantine(ports: Sequence[int], violations: int) -> QuarantineCheck:
    """Violations through replica A, then mallory's harmless request through replica B."""
    a, b = ports[0], ports[-1]
    statuses_a = [_post(a, "mallory", f"{THREAT} ({i})")[0] for i in range(violations)]
    status_b, answer_b = _post(b, "mallory", HARMLESS)
    status_other, _ = _post(b, "researcher", HARMLESS)
    code_b = _code(answer_b)
    held = all(s != 200 for s in statuses_a) and status_b == 403 and "quarantine" in code_b and status_other == 200
    return QuarantineCheck(processes=len(ports), violations_sent=violations, statuses_a=statuses_a, status_b=status_b,
                           code_b=code_b, status_other=status_other, held=held)
