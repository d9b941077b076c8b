"""The admin API: liveness and readiness, agents and their state, quarantine and release, policy reload
and Prometheus metrics, on a listener of its own (127.0.0.1 by default) and behind a
bearer token.

It is a separate aiohttp application so that the port agents can reach never serves it.
Every change made through it is written to the audit log like any other transition.
"""

from __future__ import annotations

import hmac
import logging
import os
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from firewall.agents.identity import valid_agent_id
from firewall.agents.quarantine import AgentStatus, Transition
from firewall.agents.state import StateUnavailable
from firewall.audit.record import agent_record
from firewall.policy import PolicyError, load_policy_file
from firewall.proxy.metrics import CONTENT_TYPE

__all__ = ["ADMIN_TOKEN_ENV", "admin_app", "readiness"]

log = logging.getLogger("firewall.admin")

ADMIN_TOKEN_ENV = "AGENT_FIREWALL_ADMIN_TOKEN"
# Probes (a load balancer's, Kubernetes') carry no token.
_OPEN_ROUTES = frozenset({"/healthz", "/readyz"})


class _QuarantineRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="quarantined by hand", max_length=500)
    ttl: float | None = Field(default=None, gt=0)  # seconds; None: the policy's release_after


def admin_app(firewall: Any, token: str) -> web.Application:
    """The admin application for `firewall` (a `Firewall`); `token` is required on every
    route but /healthz and /readyz."""
    if len(token) < 16:
        raise ValueError(f"the admin token must be at least 16 characters (set {ADMIN_TOKEN_ENV})")
    expected = token.encode()

    @web.middleware
    async def authorised(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path in _OPEN_ROUTES:
            return await handler(request)
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), expected):
            return _json({"error": "admin API: a bearer token is required (Authorization: Bearer <token>)"}, 401)
        try:
            return await handler(request)
        except StateUnavailable as error:
            return _json({"error": f"agent state unavailable: {error}"}, 503)

    async def healthz(_request: web.Request) -> web.Response:
        """Alive: the process answers (also while it drains)."""
        return _json({"status": "ok", "policy": firewall.policy.name, "state": firewall.state.name})

    async def readyz(_request: web.Request) -> web.Response:
        """Ready to take traffic; 503 with the reasons when not."""
        problems = await readiness(firewall)
        return _json({"ready": not problems, "policy": firewall.policy.name, "policy_sha256": firewall.policy.sha256,
                      "state": firewall.state.name, "draining": firewall.draining, "problems": problems},
                     503 if problems else 200)

    async def agents(_request: web.Request) -> web.Response:
        return _json({"agents": [_status(status) for status in await firewall.guard.agents()]})

    async def agent(request: web.Request) -> web.Response:
        name = _agent(request)
        status = await firewall.guard.quarantine.status(name, fresh=True)
        declared = firewall.policy.agents.get(name)
        return _json({**_status(status), "declared": declared is not None,
                      "description": declared.description if declared else None})

    async def quarantine(request: web.Request) -> web.Response:
        name = _agent(request)
        try:
            body = _QuarantineRequest.model_validate_json(await request.read() or b"{}")
        except ValidationError as error:
            return _json({"error": f"invalid body: {error.errors()[0]['msg']}"}, 400)
        transition = await firewall.guard.quarantine.quarantine(name, body.reason, by="admin", ttl=body.ttl)
        return _changed(name, transition, "already quarantined")

    async def release(request: web.Request) -> web.Response:
        name = _agent(request)
        transition = await firewall.guard.quarantine.release(name, by="admin")
        return _changed(name, transition, "not quarantined or throttled")

    def _changed(name: str, transition: Transition | None, unchanged: str) -> web.Response:
        if transition is None:
            return _json({"agent": name, "changed": False, "note": unchanged})
        details = {"event": "quarantine", **transition.as_record()}
        firewall.record(agent_record("admin_" + os.urandom(6).hex(), details, policy_name=firewall.policy.name,
                                     policy_sha256=firewall.policy.sha256))
        firewall.metrics.learnt([details])  # counted like the quarantines the guard decides
        return _json({"agent": name, "changed": True, **_status(transition.after)})

    async def reload(_request: web.Request) -> web.Response:
        """Load the policy file again; a policy with mistakes is refused and the running
        one stays."""
        path = Path(firewall.policy.path)
        try:
            policy = load_policy_file(path)
        except PolicyError as error:
            log.error("policy reload refused, %s keeps running: %s", firewall.policy.name,
                      "; ".join(str(problem) for problem in error.problems))
            return _json({"reloaded": False, "policy": firewall.policy.name, "sha256": firewall.policy.sha256,
                          "problems": [str(problem) for problem in error.problems]}, 422)
        old = firewall.reload(policy, by="admin")
        return _json({"reloaded": True, "policy": policy.name, "sha256": policy.sha256, "previous": old.sha256})

    async def metrics(_request: web.Request) -> web.Response:
        firewall.metrics.quarantined.set(sum(status.quarantined for status in await firewall.guard.agents()))
        firewall.metrics.in_flight.set(firewall.in_flight)
        firewall.metrics.draining.set(int(firewall.draining))
        return web.Response(body=firewall.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application(middlewares=[authorised])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/agents", agents)
    app.router.add_get("/agents/{agent}", agent)
    app.router.add_post("/agents/{agent}/quarantine", quarantine)
    app.router.add_post("/agents/{agent}/release", release)
    app.router.add_post("/policy/reload", reload)
    app.router.add_get("/metrics", metrics)
    return app


async def readiness(firewall: Any) -> list[str]:
    """Why `firewall` (a `Firewall`) should not be sent traffic now; empty: ready. Not
    ready while it drains, while its audit log cannot be appended to (it would refuse
    every request: what cannot be recorded is not forwarded) and while a shared state
    backend does not answer."""
    problems = []
    if firewall.draining:
        problems.append("draining: the firewall is shutting down and takes no new request")
    if firewall.audit is not None:
        if firewall.audit_problem is not None:
            problems.append(f"audit log: the last write failed ({firewall.audit_problem})")
        else:
            problem = _appendable(getattr(firewall.audit, "path", None))
            if problem is not None:
                problems.append(problem)
    try:
        await firewall.state.get("readyz")
    except StateUnavailable as error:
        problems.append(f"agent state ({firewall.state.name}) unavailable: {error}")
    return problems


def _appendable(path: Path | None) -> str | None:
    """Why the audit log at `path` cannot be appended to, without writing to it; None: it can."""
    if path is None:
        return None
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
    except OSError as error:
        return f"audit log: {path} cannot be appended to ({error.strerror or error})"
    return None


def _agent(request: web.Request) -> str:
    name = request.match_info["agent"]
    if not valid_agent_id(name):
        raise web.HTTPBadRequest(text=orjson.dumps({"error": f"invalid agent id {name[:80]!r}"}).decode(),
                                 content_type="application/json")
    return name


def _status(status: AgentStatus) -> dict[str, Any]:
    return {"agent": status.agent, "state": status.state, "reason": status.reason, "since": status.since,
            "until": status.until, "by": status.by}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")
