"""A2A agents on loopback for the tests, built with the a2a-sdk's own server (Starlette,
served by uvicorn in a thread), and the a2a-sdk client that talks to them.

A `ScriptedAgent` answers from a script, the way the fake LLM upstream does: each rule a
reply text, chosen by a substring of the caller's message, given as a task (a working
status, the reply as an artifact, optionally in chunks appended to one artifact, and a
completed status) or as a reply message. It records what reached it, headers included,
so a test can assert what the firewall let through.

    with ScriptedAgent("researcher") as researcher:
        researcher.reply("The sources agree.", when="sources")
        ... researcher.url ...
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from uuid import uuid4

import httpx
import uvicorn
from a2a.client import A2ACardResolver, Client, ClientConfig, ClientFactory
from a2a.helpers import get_message_text, new_task_from_user_message, new_text_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill
from a2a.types.a2a_pb2 import Message, Part, Role, SendMessageRequest, StreamResponse, TaskState
from starlette.applications import Starlette

__all__ = ["Received", "ScriptedAgent", "ask", "connect", "reply_text"]

_START_TIMEOUT = 10.0


@dataclass(frozen=True)
class _Rule:
    text: str
    when: str | None
    chunks: int
    as_message: bool
    times: int | None


@dataclass(frozen=True)
class Received:
    """What reached the agent: the message's text and the request's headers."""

    text: str
    headers: dict[str, str] = field(repr=False)


class _Executor(AgentExecutor):
    def __init__(self, agent: ScriptedAgent) -> None:
        self._agent = agent

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.message is not None
        text = get_message_text(context.message)
        self._agent._received(Received(text, dict(context.call_context.state.get("headers", {}))))
        rule = self._agent._pick(text)
        if rule.as_message:
            await event_queue.enqueue_event(new_text_message(rule.text, context_id=context.context_id))
            return
        task = context.current_task or new_task_from_user_message(context.message)
        if context.current_task is None:
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue=event_queue, task_id=task.id, context_id=task.context_id)
        await updater.update_status(TaskState.TASK_STATE_WORKING, message=new_text_message("Looking into it."))
        artifact_id = uuid4().hex
        for n, piece in enumerate(_pieces(rule.text, rule.chunks)):
            await updater.add_artifact([new_text_part(piece, media_type="text/plain")], artifact_id=artifact_id,
                                       name="answer", append=n > 0, last_chunk=n == rule.chunks - 1)
        await updater.update_status(TaskState.TASK_STATE_COMPLETED, message=new_text_message("Done."))

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError("the scripted agent's tasks finish at once")


class ScriptedAgent:
    """An A2A agent server on 127.0.0.1 (a port of its own), answering from a script.
    Unscripted, it answers `ack: <what it was told>`."""

    def __init__(self, name: str, description: str = "answers from a script") -> None:
        self.name = name
        self._description = description
        self._rules: list[_Rule] = []
        self._seen: list[Received] = []
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    # -- the script ---------------------------------------------------------------------

    def reply(self, text: str, *, when: str | None = None, chunks: int = 1, as_message: bool = False,
              times: int | None = None) -> None:
        """Answer `text` to a message containing `when` (any message when None): as a task
        whose artifact arrives in `chunks` appended pieces, or as one reply message."""
        with self._lock:
            self._rules.append(_Rule(text, when, max(1, chunks), as_message, times))

    def reset(self) -> None:
        """Forget the script and what was received."""
        with self._lock:
            self._rules.clear()
            self._seen.clear()

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._seen)

    def _received(self, item: Received) -> None:
        with self._lock:
            self._seen.append(item)

    def _pick(self, text: str) -> _Rule:
        with self._lock:
            for index, rule in enumerate(self._rules):
                if rule.when is None or rule.when in text:
                    if rule.times is not None:
                        left = rule.times - 1
                        if left <= 0:
                            del self._rules[index]
                        else:
                            self._rules[index] = _Rule(rule.text, rule.when, rule.chunks, rule.as_message, left)
                    return rule
        return _Rule(f"ack: {text}", None, 1, False, None)

    # -- the server ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError(f"agent {self.name} is not running")
        return f"http://127.0.0.1:{self._port}"

    def card(self) -> AgentCard:
        return AgentCard(
            name=self.name, description=self._description, version="1.0",
            default_input_modes=["text/plain"], default_output_modes=["text/plain"],
            capabilities=AgentCapabilities(streaming=True),
            supported_interfaces=[
                AgentInterface(protocol_binding="JSONRPC", url=self.url + "/", protocol_version="1.0"),
                # A binding the firewall does not front: it must not reach the caller.
                AgentInterface(protocol_binding="HTTP+JSON", url=self.url + "/rest", protocol_version="1.0"),
            ],
            skills=[AgentSkill(id="answer", name="answer", description=self._description, tags=["test"])],
        )

    def start(self) -> ScriptedAgent:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        card = self.card()
        handler = DefaultRequestHandler(agent_executor=_Executor(self), task_store=InMemoryTaskStore(), agent_card=card)
        app = Starlette(routes=[*create_agent_card_routes(card),
                                *create_jsonrpc_routes(handler, "/", enable_v0_3_compat=True)])
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"a2a-{self.name}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"agent {self.name} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=_START_TIMEOUT)
        self._server = self._thread = None

    def __enter__(self) -> ScriptedAgent:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _pieces(text: str, n: int) -> list[str]:
    size = -(-len(text) // n)
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


# --- the client side -------------------------------------------------------------------


@asynccontextmanager
async def connect(base_url: str, *, headers: dict[str, str], streaming: bool = False,
                  ) -> AsyncIterator[tuple[Client, AgentCard]]:
    """The a2a-sdk client for the agent at `base_url`, its card resolved there (through
    the firewall: `<firewall>/a2a/<agent>`), sending `headers` with every call."""
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        card = await A2ACardResolver(http, base_url).get_agent_card()
        client = ClientFactory(ClientConfig(streaming=streaming, httpx_client=http)).create(card)
        try:
            yield client, card
        finally:
            await client.close()


async def ask(client: Client, text: str, **message: Any) -> list[StreamResponse]:
    """Send `text` as a user message; every answer event."""
    request = SendMessageRequest(message=Message(role=Role.ROLE_USER, parts=[Part(text=text)],
                                                 message_id=uuid4().hex, **message))
    return [event async for event in client.send_message(request)]


def reply_text(events: list[StreamResponse]) -> str:
    """What the agent answered: the text of its artifacts, or of its reply message."""
    out: list[str] = []
    for event in events:
        if event.HasField("message"):
            out += [part.text for part in event.message.parts]
        elif event.HasField("task"):
            out += [part.text for artifact in event.task.artifacts for part in artifact.parts]
        elif event.HasField("artifact_update"):
            out += [part.text for part in event.artifact_update.artifact.parts]
    return "".join(out)
