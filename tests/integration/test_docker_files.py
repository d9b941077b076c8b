"""docker/: what can be checked without a Docker engine.

The image's command line (ENTRYPOINT + CMD, container paths mapped through the
Dockerfile's COPY lines) is run as it is against the fake upstream, and the image's
HEALTHCHECK is run against it; the compose file parses with docker-compose and gives both
replicas that same command plus the shared state; nginx accepts nginx.conf; and the
compose topology (two replicas on one real Redis, behind nginx with that nginx.conf)
runs on loopback: requests through nginx reach both replicas, and an agent quarantined
through one replica's admin API is refused by both. The Kubernetes manifest gives the
Deployment the same command and probes the admin routes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from ruamel.yaml import YAML

from firewall.audit import read_records
from firewall.proxy.admin import ADMIN_TOKEN_ENV
from firewall.testing import free_port
from tests.redis_server import running_redis_server

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
TOKEN = "admin-token-for-the-docker-test"
STARTUP = 120.0  # seconds: the default policy loads the semantic model before listening
STOP = 15.0
VIOLENT = "the best solution is to murder him in his sleep"
SMALL_POLICY = """
version: 1
name: mounted
identity: {unidentified: allow}
defaults: {unknown_routes: refuse}
quarantine: {violations: 100, window: 600, release_after: 3600}
lists: {banned: [pineapple]}
rules:
  - {id: no-pineapple, match: {lists: [banned]}, action: block}
"""


# -- reading the files ----------------------------------------------------------------


@dataclass(frozen=True)
class Dockerfile:
    """The final stage of docker/Dockerfile, as far as these tests need it."""

    entrypoint: list[str]
    cmd: list[str]
    healthcheck: list[str]
    copies: dict[str, str]  # container path -> source, relative to the build context
    user_id: int
    exposed: list[int]

    @property
    def command(self) -> list[str]:
        return self.entrypoint + self.cmd


def read_dockerfile(path: Path = DOCKER / "Dockerfile") -> Dockerfile:
    lines = re.sub(r"\\\n", " ", path.read_text()).splitlines()
    instructions = [line.strip().split(None, 1) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    final = max(index for index, (word, _) in enumerate(instructions) if word == "FROM")
    found: dict[str, Any] = {"copies": {}, "exposed": []}
    for word, rest in instructions[final:]:
        if word in ("ENTRYPOINT", "CMD"):
            assert rest.startswith("["), f"{word} must be in exec form (JSON), so signals reach the firewall"
            found[word.lower()] = json.loads(rest)
        elif word == "HEALTHCHECK":
            _, _, command = rest.partition(" CMD ")
            found["healthcheck"] = json.loads(command.strip())
        elif word == "COPY" and not rest.startswith("--from"):
            source, target = rest.split()
            found["copies"][target.rstrip("/")] = source.rstrip("/")
        elif word == "EXPOSE":
            found["exposed"] = [int(port) for port in rest.split()]
        elif word == "RUN" and "useradd" in rest:
            found["user_id"] = int(re.search(r"--uid (\d+)", rest).group(1))
    return Dockerfile(**found)


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def replaced(command: list[str], values: dict[str, str]) -> list[str]:
    """`command` with the value of each option in `values` replaced."""
    out = list(command)
    for name, value in values.items():
        out[out.index(name) + 1] = value
    return out


def host_path(image: Dockerfile, container_path: str) -> Path:
    """Where a file the image holds comes from, by its COPY line (a file, or a file under a
    copied directory)."""
    for target, source in image.copies.items():
        if container_path == target:
            return ROOT / source
        if container_path.startswith(target + "/"):
            return ROOT / source / container_path.removeprefix(target + "/")
    raise AssertionError(f"{container_path} is not copied into the image")


def compose_command() -> list[str]:
    """`docker compose` (the plugin) or `docker-compose`, whichever is installed."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("neither `docker compose` nor docker-compose is installed, and the compose file is checked with "
                "one: apt-get install docker-compose (.ci/run does this in CI)", pytrace=False)


def compose_config() -> dict[str, Any]:
    """docker/compose.yaml as docker-compose resolves it (`docker compose config`)."""
    result = subprocess.run([*compose_command(), "-f", str(DOCKER / "compose.yaml"), "config"], capture_output=True,
                            text=True, env={**os.environ, ADMIN_TOKEN_ENV: TOKEN}, cwd=DOCKER)
    assert result.returncode == 0, result.stderr
    return YAML(typ="safe").load(result.stdout)


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if found is None:
        pytest.fail("nginx is not installed, and docker/nginx.conf is checked with it: apt-get install nginx "
                    "(.ci/run does this in CI)", pytrace=False)
    return found


def nginx_conf(upstreams: dict[str, int], listen: int, directory: Path) -> Path:
    """docker/nginx.conf listening on loopback port `listen`, each compose service name
    resolved to a port on loopback (the names resolve only on the compose network), its
    files kept in `directory`."""
    text = (DOCKER / "nginx.conf").read_text()
    for name, port in upstreams.items():
        text, count = re.subn(rf"\bserver {re.escape(name)}:8080\b", f"server 127.0.0.1:{port}", text)
        assert count == 1, f"nginx.conf has no upstream server {name}:8080"
    text = text.replace("pid /tmp/nginx.pid;", f"pid {directory / 'nginx.pid'};")
    text = text.replace("listen 8080;", f"listen 127.0.0.1:{listen};")
    for temp in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        text = text.replace("http {", f"http {{\n    {temp}_temp_path {directory / temp};", 1)
    path = directory / "nginx.conf"
    path.write_text(text)
    return path


# -- running processes ----------------------------------------------------------------


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@dataclass
class Replica:
    process: subprocess.Popen[bytes]
    port: int
    admin_port: int
    audit_path: Path
    stderr_path: Path

    def wait_until_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the firewall exited with {self.process.returncode}:\n{self.stderr()}")
            try:
                if get(f"http://127.0.0.1:{self.admin_port}/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the firewall did not answer /healthz within {STARTUP:g} s:\n{self.stderr()}")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-3000:]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP)
        return self.process.returncode


def as_run_here(image: Dockerfile, command: list[str], directory: Path, policy: Path | None = None,
                **extra: str) -> tuple[list[str], int, int, Path]:
    """`command` (the image's or a compose service's) as this machine runs it: the image's
    files where their COPY lines take them from, the listeners on free loopback ports,
    the audit log in `directory`. Nothing else changes."""
    assert command[0] == "agent-firewall", "the entry command is the agent-firewall console script"
    port, admin_port = free_port(), free_port()
    audit = directory / "audit.jsonl"
    assert Path(option(command, "--audit-log")).parent == Path("/var/log/agent-firewall")
    local = replaced(command, {
        "--policy": str(policy or host_path(image, option(command, "--policy"))),
        "--listen": f"127.0.0.1:{port}", "--admin-listen": f"127.0.0.1:{admin_port}", "--audit-log": str(audit),
        **extra,
    })
    return [str(Path(sys.executable).with_name("agent-firewall")), *local[1:]], port, admin_port, audit


def start(argv: list[str], port: int, admin_port: int, audit: Path, directory: Path, upstream: str) -> Replica:
    directory.mkdir(parents=True, exist_ok=True)
    stderr_path = directory / "stderr.txt"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen([*argv, "--upstream", f"openai={upstream}"], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=stderr, cwd=directory,
                                   env={**os.environ, ADMIN_TOKEN_ENV: TOKEN})
    return Replica(process, port, admin_port, audit, stderr_path)


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    started: list[Replica] = []
    yield started
    for replica in started:
        replica.stop()


def ask(base_url: str, text: str, agent: str = "planner") -> str:
    with openai.OpenAI(base_url=base_url + "/v1", api_key="sk-docker-test", max_retries=0, timeout=30,
                       default_headers={"X-Agent-Id": agent}) as client:
        completion = client.chat.completions.create(model="m", messages=[{"role": "user", "content": text}])
        return completion.choices[0].message.content or ""


# -- the tests ------------------------------------------------------------------------


def test_the_image_command_serves_agents_and_passes_the_image_health_check(tmp_path: Path, fake, upstream_server,
                                                                            replicas: list[Replica]):
    image = read_dockerfile()
    assert image.entrypoint == ["agent-firewall"] and image.cmd[0] == "run"
    assert host_path(image, option(image.command, "--policy")) == ROOT / "policies" / "default.yaml"
    assert image.exposed == [8080, 8081]
    assert option(image.command, "--listen") == "0.0.0.0:8080" and option(image.command, "--admin-listen") == "0.0.0.0:8081"
    fake.add_reply("Paris.")
    argv, port, admin_port, audit = as_run_here(image, image.command, tmp_path)
    replica = start(argv, port, admin_port, audit, tmp_path, upstream_server[1].url)
    replicas.append(replica)
    replica.wait_until_healthy()

    # The image's own HEALTHCHECK, aimed at this process's admin port.
    check = [sys.executable if part == "python" else part.replace("127.0.0.1:8081", f"127.0.0.1:{admin_port}")
             for part in image.healthcheck]
    assert check != image.healthcheck, "the health check must probe the admin listener (127.0.0.1:8081)"
    assert subprocess.run(check, capture_output=True, timeout=30).returncode == 0
    replica.stop()
    assert subprocess.run(check, capture_output=True, timeout=30).returncode != 0, "a stopped firewall must fail it"
    replicas.clear()

    replica = start(argv, port, admin_port, audit, tmp_path, upstream_server[1].url)
    replicas.append(replica)
    replica.wait_until_healthy()
    # The probes docker/kubernetes.yaml sets, without a token as the kubelet sends them.
    assert get(f"http://127.0.0.1:{admin_port}/readyz")[0] == 200
    assert ask(f"http://127.0.0.1:{port}", "What is the capital of France?") == "Paris."
    with pytest.raises(openai.PermissionDeniedError, match="violent-suggestion"):
        ask(f"http://127.0.0.1:{port}", VIOLENT)
    assert len(fake.received) == 1  # the blocked request never reached the upstream
    assert replica.stop() == 0
    records = list(read_records(audit))
    assert [r["action"] for r in records if r.get("direction") == "request"] == ["allow", "block"]
    verified = subprocess.run([str(Path(sys.executable).with_name("agent-firewall")), "audit", "verify", str(audit)],
                              capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_the_compose_file_runs_the_image_command_on_shared_state_behind_the_load_balancer():
    image = read_dockerfile()
    config = compose_config()
    services = config["services"]
    replicas = sorted(name for name in services if name.startswith("firewall-"))
    assert replicas == ["firewall-1", "firewall-2"]
    assert services["redis"]["image"].startswith("redis:")
    volumes = []
    for name in replicas:
        service = services[name]
        assert service["build"]["dockerfile"] == "docker/Dockerfile" and Path(service["build"]["context"]) == ROOT
        assert service["command"] == image.cmd + ["--state", "redis://redis:6379/0"], name
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "ports" not in service, f"{name} publishes a port: only the load balancer may"
        assert len(service["environment"][ADMIN_TOKEN_ENV]) >= 16
        (volume,) = [v for v in service["volumes"] if v.endswith(":/var/log/agent-firewall:rw")]
        volumes.append(volume)
    assert len(set(volumes)) == len(volumes), "each replica needs its own audit log volume (one hash chain per writer)"
    published = {name: service["ports"] for name, service in services.items() if "ports" in service}
    assert list(published) == ["lb"] and [p["target"] for p in published["lb"]] == [8080]
    (mount,) = services["lb"]["volumes"]
    assert mount == f"{DOCKER / 'nginx.conf'}:/etc/nginx/nginx.conf:ro"
    servers = re.findall(r"^\s*server ([\w.-]+):(\d+)", (DOCKER / "nginx.conf").read_text(), re.MULTILINE)
    assert servers == [(name, "8080") for name in replicas]


def test_the_compose_file_refuses_to_start_without_an_admin_token():
    environment = {key: value for key, value in os.environ.items() if key != ADMIN_TOKEN_ENV}
    result = subprocess.run([*compose_command(), "-f", str(DOCKER / "compose.yaml"), "config"], capture_output=True, text=True,
                            env=environment, cwd=DOCKER)
    assert result.returncode != 0 and "AGENT_FIREWALL_ADMIN_TOKEN" in result.stderr


def test_nginx_accepts_the_load_balancer_configuration(tmp_path: Path):
    conf = nginx_conf({"firewall-1": free_port(), "firewall-2": free_port()}, free_port(), tmp_path)
    result = subprocess.run([nginx_binary(), "-t", "-c", str(conf), "-p", str(tmp_path), "-e", str(tmp_path / "error.log")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_compose_topology_on_loopback_two_replicas_one_redis_behind_nginx(tmp_path: Path, fake, upstream_server,
                                                                              replicas: list[Replica]):
    """docker/compose.yaml's replicas (their command, with a policy mounted over the
    default) on one real Redis, behind nginx running docker/nginx.conf."""
    image = read_dockerfile()
    config = compose_config()
    fake.add_reply("ok")
    policy = tmp_path / "policy.yaml"
    policy.write_text(SMALL_POLICY)
    ports: dict[str, int] = {}
    with running_redis_server(tmp_path / "redis") as redis:
        for name in ("firewall-1", "firewall-2"):
            command = ["agent-firewall", *config["services"][name]["command"]]
            assert option(command, "--state") == "redis://redis:6379/0"
            argv, port, admin_port, audit = as_run_here(image, command, tmp_path / name, policy, **{"--state": redis.url})
            replicas.append(start(argv, port, admin_port, audit, tmp_path / name, upstream_server[1].url))
            ports[name] = port
        for replica in replicas:
            replica.wait_until_healthy()
        balancer = free_port()
        conf = nginx_conf(ports, balancer, tmp_path)
        nginx = subprocess.Popen([nginx_binary(), "-c", str(conf), "-p", str(tmp_path), "-e", str(tmp_path / "error.log"),
                                  "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            lb = f"http://127.0.0.1:{balancer}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    answered = ask(lb, "hello")
                    break
                except openai.APIConnectionError:
                    assert nginx.poll() is None and time.monotonic() < deadline, "nginx did not start"
                    time.sleep(0.1)
            assert answered == "ok"
            for _ in range(7):
                assert ask(lb, "hello") == "ok"
            with pytest.raises(openai.PermissionDeniedError, match="no-pineapple"):
                ask(lb, "a pineapple")
            # Round robin: each replica answered and recorded its share.
            served = [len(list(read_records(replica.audit_path))) for replica in replicas]
            assert all(count > 0 for count in served), served

            # One replica quarantines; every request through the balancer is refused.
            request = urllib.request.Request(f"http://127.0.0.1:{replicas[0].admin_port}/agents/planner/quarantine",
                                             data=b"{}", method="POST",
                                             headers={"Authorization": f"Bearer {TOKEN}"})
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
                assert json.loads(response.read())["changed"] is True
            # (a replica reuses what it read of an agent's state for half a second)
            deadline = time.monotonic() + 10
            while True:
                try:
                    ask(lb, "hello")
                except openai.PermissionDeniedError as refused:
                    assert refused.body["code"] == "agent_quarantined"
                    break
                assert time.monotonic() < deadline, "the quarantine never reached the balanced replicas"
                time.sleep(0.1)
            time.sleep(0.6)
            for _ in range(4):
                with pytest.raises(openai.PermissionDeniedError) as refused:
                    ask(lb, "hello")
                assert refused.value.body["code"] == "agent_quarantined"
            assert ask(lb, "hello", agent="executor") == "ok"
            # The admin API is not behind the balancer.
            assert get(lb + "/agents", TOKEN)[0] == 404
        finally:
            nginx.terminate()
            nginx.wait(timeout=STOP)
            for replica in replicas:
                assert replica.stop() == 0, replica.stderr()


def test_the_kubernetes_deployment_runs_the_image_command_and_keeps_the_admin_port_internal():
    image = read_dockerfile()
    documents = [d for d in YAML(typ="safe").load_all((DOCKER / "kubernetes.yaml").read_text()) if d]
    by_kind: dict[tuple[str, str], dict[str, Any]] = {(d["kind"], d["metadata"]["name"]): d for d in documents}
    deployment = by_kind[("Deployment", "agent-firewall")]
    assert deployment["spec"]["replicas"] >= 2
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    redis_service = by_kind[("Service", "agent-firewall-redis")]
    assert container["args"] == image.cmd + ["--state", f"redis://{redis_service['metadata']['name']}:6379/0"]
    assert pod["securityContext"]["runAsUser"] == image.user_id and pod["securityContext"]["runAsNonRoot"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"agents": 8080, "admin": 8081}
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {kind: (probe["path"], probe["port"]) for kind, probe in probes.items()} == {
        "startupProbe": ("/healthz", "admin"), "livenessProbe": ("/healthz", "admin"),
        "readinessProbe": ("/readyz", "admin")}
    assert container["env"][0] == {"name": ADMIN_TOKEN_ENV,
                                   "valueFrom": {"secretKeyRef": {"name": "agent-firewall", "key": "admin-token"}}}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert mounts["/etc/agent-firewall"] == "policy" and option(container["args"], "--policy").startswith("/etc/agent-firewall/")
    services = [d for d in documents if d["kind"] == "Service" and d["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]]
    assert [[p["port"] for p in s["spec"]["ports"]] for s in services] == [[8080]], "only the agents' port has a Service"
    network = by_kind[("NetworkPolicy", "agent-firewall")]["spec"]["ingress"]
    admin_rules = [rule for rule in network if any(p["port"] == 8081 for p in rule["ports"])]
    assert admin_rules and all(rule.get("from") for rule in admin_rules), "port 8081 is reachable from anywhere"
