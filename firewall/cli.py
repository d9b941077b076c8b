"""`agent-firewall`: one CLI, each sub-command a thin shell over the library."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from firewall.model import Direction

if TYPE_CHECKING:
    from firewall.audit.index import AuditIndex

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.run(args) or EXIT_OK)
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent-firewall", description="A message firewall for multi-agent AI systems.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = commands.add_parser("run", help="run the firewall: a reverse proxy, a forward proxy (HTTPS_PROXY), or both")
    run.add_argument("--policy", required=True, type=Path, help="policy YAML file")
    run.add_argument("--mode", default="reverse", metavar="reverse|forward|reverse,forward",
                     help="the listeners: reverse (agents change their base URL; the default), forward (agents set "
                          "HTTPS_PROXY and trust the CA: needs the mitm extra), or both in one process")
    run.add_argument("--listen", action="append", metavar="HOST:PORT",
                     help="HOST:PORT to listen on (default 127.0.0.1:8080); with two modes, one --listen per mode, "
                          "in the order of --mode")
    run.add_argument("--ca-dir", type=Path, metavar="DIR",
                     help="forward mode: the CA's directory (default $AGENT_FIREWALL_CA_DIR or ~/.agent-firewall/ca; "
                          "created on first use, as `agent-firewall ca` does)")
    run.add_argument("--upstream-ca", type=Path, metavar="FILE",
                     help="verify HTTPS upstreams against these CA certificates (PEM) instead of the system's trust "
                          "store (reverse mode) or the public roots (forward mode)")
    run.add_argument("--upstream", action="append", default=[], metavar="NAME=URL",
                     help="upstream base URL, e.g. openai=https://api.openai.com (repeatable)")
    run.add_argument("--audit-log", type=Path, help="append the audit log (JSONL) to this file")
    run.add_argument("--audit-rotate-bytes", type=int, metavar="N",
                     help="rotate the audit log (to FILE.000001, ...) once it reaches N bytes")
    run.add_argument("--audit-rotate-seconds", type=float, metavar="S",
                     help="rotate the audit log once its live file is S seconds old")
    run.add_argument("--audit-fsync", choices=["record", "batch", "none"], default="none",
                     help="fsync the audit log after every record, every --audit-fsync-interval seconds (batch), "
                          "or never (none, the default: an OS crash can lose what the kernel has not written yet)")
    run.add_argument("--audit-fsync-interval", type=float, default=1.0, metavar="S",
                     help="with --audit-fsync batch: the most an OS crash can lose, in seconds (default 1)")
    run.add_argument("--agent-header", help="header that names the calling agent (default X-Agent-Id)")
    run.add_argument("--max-body-bytes", type=int,
                     help="largest request body accepted, as received (413 past it)")
    run.add_argument("--max-decoded-bytes", type=int, metavar="N",
                     help="largest size a compressed request body (gzip, deflate, br, zstd) may decode to (413)")
    run.add_argument("--max-decompression-ratio", type=float, metavar="R",
                     help="a compressed body may decode to at most R times its size, past 1 MiB (413)")
    run.add_argument("--max-json-depth", type=int, metavar="N",
                     help="deepest nesting of arrays and objects in a request body (400 past it)")
    run.add_argument("--max-header-bytes", type=int, metavar="N",
                     help="longest request line and longest header (aiohttp answers 400 past it)")
    run.add_argument("--max-headers", type=int, metavar="N", help="most headers in a request")
    run.add_argument("--body-timeout", type=float, metavar="S",
                     help="seconds a client has to send a whole body once its headers are in (408 past it)")
    run.add_argument("--header-timeout", type=float, metavar="S",
                     help="seconds a client has to send a request's headers, from connecting or from its last "
                          "answer (408 past it; an idle kept-alive connection is closed)")
    run.add_argument("--max-streams", type=int, metavar="N",
                     help="streamed answers relayed at once; a new streamed request past it is refused 429")
    run.add_argument("--connect-timeout", type=float, metavar="S",
                     help="seconds to connect to an upstream (504 past it)")
    run.add_argument("--read-timeout", type=float, metavar="S",
                     help="seconds an upstream may stay silent (504 before its answer starts)")
    run.add_argument("--admin-listen", metavar="HOST:PORT",
                     help="serve the admin API (health, agents, quarantine, release) here, e.g. 127.0.0.1:8081; "
                          "requires a bearer token in AGENT_FIREWALL_ADMIN_TOKEN")
    run.add_argument("--drain-seconds", type=float, default=30.0, metavar="S",
                     help="on SIGTERM or SIGINT: stop accepting connections, let requests and streams in flight "
                          "finish for up to S seconds, then end the rest with a provider-shaped error (default 30)")
    run.add_argument("--watch-policy", action="store_true",
                     help="reload the policy file when it changes (checked every second), as SIGHUP does")
    run.add_argument("--state", default="memory", metavar="memory|redis://HOST:PORT/DB",
                     help="where agent state (quarantine, lineage, rate limits, drift) lives; "
                          "a redis URL lets several firewall processes act as one (default: memory)")
    run.add_argument("--provider-key", action="append", default=[], metavar="NAME=env:VAR|file:PATH",
                     help="the key sent upstream for agents that authenticate with their own firewall key, "
                          "e.g. openai=env:OPENAI_API_KEY (repeatable)")
    run.set_defaults(run=_run)

    check = commands.add_parser("check", help="validate policy files; print file:line:column for each mistake")
    check.add_argument("policies", nargs="+", type=Path)
    check.set_defaults(run=_check)

    test = commands.add_parser("test", help="run the tests: of policy files (a directory: every policy in it)")
    test.add_argument("policies", nargs="+", type=Path, metavar="POLICY_OR_DIR")
    test.add_argument("-v", "--verbose", action="store_true", help="print passing cases too")
    test.add_argument("--junit", type=Path, metavar="PATH", help="also write the results as JUnit XML, for CI systems")
    test.set_defaults(run=_test)

    scan = commands.add_parser("scan", help="decide JSONL samples offline")
    scan.add_argument("--policy", required=True, type=Path)
    scan.add_argument("--direction", choices=[d.value for d in Direction], default="request")
    scan.add_argument("input", nargs="?", type=Path, help="JSONL file (default: stdin)")
    scan.set_defaults(run=_scan)

    audit = commands.add_parser("audit", help="read and verify audit logs")
    audit_commands = audit.add_subparsers(title="audit commands", metavar="COMMAND")
    verify = audit_commands.add_parser("verify", help="check the hash chain of an audit log")
    verify.add_argument("path", type=Path)
    verify.set_defaults(run=_audit_verify)
    for verb in ("show", "query"):
        show = audit_commands.add_parser(verb, help="print audit records, filtered" + (" (as show)" if verb == "query" else ""))
        show.add_argument("path", type=Path)
        show.add_argument("--agent", help="the agent that spoke, whose words were carried, or who was spoken to")
        show.add_argument("--action")
        show.add_argument("--rule")
        show.add_argument("--since", help="ISO 8601 UTC, e.g. 2026-11-28T10:00")
        show.add_argument("--until", help="ISO 8601 UTC; records before it")
        show.add_argument("--text", help="case-insensitive, in the messages kept, the answer released or the error")
        show.add_argument("--json", action="store_true", help="print the records as JSONL")
        _index_options(show)
        show.set_defaults(run=_audit_show)
    indexing = audit_commands.add_parser("index", help="build or bring up to date the index that query, show and "
                                                       "stats use (they do it themselves; this says what it did)")
    indexing.add_argument("path", type=Path)
    indexing.add_argument("--index", type=Path, metavar="FILE", help="where the index is (default: PATH.index.sqlite)")
    indexing.add_argument("--rebuild", action="store_true", help="build it again from nothing")
    indexing.set_defaults(run=_audit_index)

    agents = commands.add_parser("agents", help="agents and their state, through a running firewall's admin API")
    agents.add_argument("--admin", default="http://127.0.0.1:8081", help="the admin API's base URL")
    agent_commands = agents.add_subparsers(title="agents commands", metavar="COMMAND")
    listing = agent_commands.add_parser("list", help="agents whose state is not the default")
    listing.set_defaults(run=_agents, verb="list")
    for verb, text in (("show", "one agent's state"), ("quarantine", "quarantine an agent now"),
                       ("release", "release a quarantined or throttled agent")):
        command = agent_commands.add_parser(verb, help=text)
        command.add_argument("agent")
        if verb == "quarantine":
            command.add_argument("--reason", default="quarantined by hand")
            command.add_argument("--ttl", type=float, help="seconds (default: the policy's release_after)")
        command.set_defaults(run=_agents, verb=verb)

    replay = commands.add_parser("replay", help="decide recorded exchanges again under another policy; "
                                                "print what would change")
    replay.add_argument("logs", nargs="+", type=Path, metavar="AUDIT")
    replay.add_argument("--policy", required=True, type=Path, help="the policy to try")
    replay.add_argument("--fail-on-change", action="store_true", help="exit 1 when any decision would change (CI)")
    replay.add_argument("--json", action="store_true", help="print every change as JSONL")
    replay.set_defaults(run=_replay)

    keys = commands.add_parser("keys", help="per-agent firewall keys")
    key_commands = keys.add_subparsers(title="keys commands", metavar="COMMAND")
    new = key_commands.add_parser("new", help="make a key for an agent: prints the key (give it to the agent) "
                                               "and the hash (put it in the policy)")
    new.add_argument("agent")
    new.set_defaults(run=_keys_new)
    hashed = key_commands.add_parser("hash", help="the policy hash of a key read from stdin")
    hashed.set_defaults(run=_keys_hash)

    report = audit_commands.add_parser("edges", help="AI-to-AI edges: who passed words to whom, how often, "
                                                     "how many were blocked or carried flagged words")
    report.add_argument("path", type=Path)
    report.add_argument("--json", action="store_true", help="print the edges as JSONL")
    report.set_defaults(run=_audit_edges)

    stats = audit_commands.add_parser("stats", help="per agent: requests, answers, blocks and the rules that fired")
    stats.add_argument("path", type=Path)
    stats.add_argument("--json", action="store_true", help="print the figures as JSON")
    _index_options(stats)
    stats.set_defaults(run=_audit_stats)
    trace = audit_commands.add_parser("trace", help="one exchange, and the earlier answers whose words it carried")
    trace.add_argument("path", type=Path)
    trace.add_argument("exchange")
    trace.add_argument("--json", action="store_true", help="print the records as JSONL, each with its step")
    trace.set_defaults(run=_audit_trace)

    page = audit_commands.add_parser("report", help="one self-contained HTML file for a reviewer: decisions over "
                                                    "time, violations per rule, drift, lineage, blocked exchanges")
    page.add_argument("path", type=Path)
    page.add_argument("-o", "--output", type=Path, required=True, help="the HTML file to write")
    page.set_defaults(run=_audit_report)

    drawing = audit_commands.add_parser("graph", help="agents and who passed words to whom: Graphviz DOT, SVG or PNG")
    drawing.add_argument("path", type=Path)
    drawing.add_argument("--format", choices=["dot", "svg", "png"], default="dot",
                         help="dot (the default, text); svg and png need Graphviz's `dot` on PATH")
    drawing.add_argument("-o", "--output", type=Path, help="write here instead of standard output")
    drawing.set_defaults(run=_audit_graph)

    ca = commands.add_parser("ca", help="forward mode: create the CA (if absent); print its path and the "
                                        "environment variables that make agents use and trust the forward proxy")
    ca.add_argument("--ca-dir", type=Path, metavar="DIR",
                    help="where the CA lives (default $AGENT_FIREWALL_CA_DIR or ~/.agent-firewall/ca)")
    ca.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                    help="the forward proxy's address, for HTTPS_PROXY (default 127.0.0.1:8080)")
    ca.set_defaults(run=_ca)

    demo = commands.add_parser("demo", help="run a scripted multi-agent exchange through the firewall, offline")
    demo.add_argument("--audit-log", type=Path, default=Path("demo-audit.jsonl"))
    demo.set_defaults(run=_demo)
    return parser


def _index_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--index", type=Path, metavar="FILE",
                         help="the log's index (default: PATH.index.sqlite, built or brought up to date first)")
    command.add_argument("--no-index", action="store_true", help="read every line of the log instead of the index")


def _fail(message: str) -> int:
    print(f"agent-firewall: {message}", file=sys.stderr)
    return EXIT_USAGE


def _load(path: Path):  # type: ignore[no-untyped-def]
    from firewall.policy import PolicyError, load_policy_file

    try:
        return load_policy_file(path)
    except PolicyError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return None


def _run(args: argparse.Namespace) -> int:
    from firewall.audit import AuditWriter
    from firewall.proxy import Firewall, ProxyConfig
    from firewall.proxy.admin import ADMIN_TOKEN_ENV, admin_app
    from firewall.proxy.config import DEFAULT_UPSTREAMS, parse_listen, parse_provider_key, parse_upstream

    admin_token = os.environ.get(ADMIN_TOKEN_ENV, "")
    try:
        listeners = _listeners(args.mode, args.listen)
        host, port = listeners.get("reverse") or listeners["forward"]
        admin = parse_listen(args.admin_listen) if args.admin_listen else None
        if not args.drain_seconds >= 0:
            raise ValueError(f"--drain-seconds {args.drain_seconds:g}: expected a number of seconds, 0 or more")
        if admin is not None and len(admin_token) < 16:
            raise ValueError(f"--admin-listen needs a token of at least 16 characters in {ADMIN_TOKEN_ENV}")
        upstreams = dict(DEFAULT_UPSTREAMS)
        upstreams.update(parse_upstream(value) for value in args.upstream)
        # A flag not given leaves ProxyConfig's default: the one place each limit's default is set.
        given = {field: value for field, value in (
            ("agent_header", args.agent_header), ("max_body_bytes", args.max_body_bytes),
            ("max_decoded_bytes", args.max_decoded_bytes), ("max_decompression_ratio", args.max_decompression_ratio),
            ("max_json_depth", args.max_json_depth), ("max_header_line_bytes", args.max_header_bytes),
            ("max_header_field_bytes", args.max_header_bytes), ("max_headers", args.max_headers),
            ("body_timeout", args.body_timeout), ("header_timeout", args.header_timeout),
            ("max_streams", args.max_streams),
            ("connect_timeout", args.connect_timeout), ("read_timeout", args.read_timeout),
            ("upstream_ca", args.upstream_ca),
        ) if value is not None}
        config = ProxyConfig(host=host, port=port, upstreams=upstreams, audit_log=args.audit_log, **given,
                             provider_keys=dict(parse_provider_key(value) for value in args.provider_key),
                             state=args.state)
    except ValueError as error:
        return _fail(str(error))
    policy = _load(args.policy)
    if policy is None:
        return EXIT_FAILED
    ca = _forward_ca(args, policy) if "forward" in listeners else None
    if "forward" in listeners and ca is None:
        return EXIT_USAGE
    try:
        audit = AuditWriter(config.audit_log, rotate_bytes=args.audit_rotate_bytes,
                            rotate_seconds=args.audit_rotate_seconds, fsync=args.audit_fsync,
                            fsync_interval=args.audit_fsync_interval) if config.audit_log else None
    except ValueError as error:  # a bad option, or a log that cannot be appended to (AuditLogError)
        return _fail(str(error))
    except OSError as error:  # a read-only file system, a missing directory, no permission
        return _fail(f"--audit-log {config.audit_log}: cannot be opened for appending ({error.strerror or error}); "
                     "the firewall does not run without a writable audit log")
    firewall = Firewall(config, policy, audit)
    _use_uvloop()
    # The policy, the models and the imports are alive for the whole run: move them out
    # of the collector's sight, so full collections stay short (measured: p99 at
    # concurrency 32 fell from about 100 ms to about 30 ms).
    gc.collect()
    gc.freeze()
    print(f"agent-firewall: policy {policy.name} ({len(policy.rules)} rules, sha256 {policy.sha256[:12]})"
          + (f", listening on http://{host}:{port}" if "reverse" in listeners else ""), file=sys.stderr)
    if "reverse" in listeners:
        for name, url in config.upstreams.items():
            print(f"agent-firewall: upstream {name} = {url}", file=sys.stderr)
    forward = None
    if ca is not None:
        from firewall.forward.runner import ForwardProxy

        forward = ForwardProxy(firewall, host=listeners["forward"][0], port=listeners["forward"][1], ca=ca,
                               upstream_ca=args.upstream_ca, owns_firewall="reverse" not in listeners)
    if audit is None:
        print("agent-firewall: warning: no --audit-log given; decisions are not recorded", file=sys.stderr)
    apps = [(firewall.app, host, port)] if "reverse" in listeners else []
    if admin is not None:
        apps.append((admin_app(firewall, admin_token), *admin))
        print(f"agent-firewall: admin API on http://{admin[0]}:{admin[1]} (bearer token from {ADMIN_TOKEN_ENV})",
              file=sys.stderr)
    def reload_on_hangup() -> None:
        fresh = _load(args.policy)  # prints every mistake, file:line:column
        if fresh is None:
            print(f"agent-firewall: reload: {args.policy} has mistakes; policy {firewall.policy.name} "
                  f"(sha256 {firewall.policy.sha256[:12]}) keeps running", file=sys.stderr)
            return
        old = firewall.reload(fresh, by="SIGHUP or file change")
        print(f"agent-firewall: reload: policy {fresh.name} (sha256 {fresh.sha256[:12]}) replaces {old.sha256[:12]}",
              file=sys.stderr)

    from firewall.forward import MitmproxyMissing
    from firewall.forward.runner import ForwardListenerError

    try:
        asyncio.run(_serve(apps, reload_on_hangup, args.policy if args.watch_policy else None,
                           [forward] if forward is not None else [], firewall=firewall,
                           drain_seconds=args.drain_seconds))
    except (ForwardListenerError, MitmproxyMissing) as error:
        return _fail(str(error))
    finally:
        if audit is not None:
            audit.close()
    return EXIT_OK


def _listeners(mode: str, listen: list[str] | None) -> dict[str, tuple[str, int]]:
    """--mode and --listen read together: each mode's (host, port)."""
    from firewall.proxy.config import parse_listen

    modes = [part.strip() for part in mode.split(",")]
    if not modes or any(part not in ("reverse", "forward") for part in modes) or len(set(modes)) != len(modes):
        raise ValueError(f"--mode {mode!r}: expected reverse, forward, or reverse,forward")
    addresses = listen or ["127.0.0.1:8080"]
    if len(addresses) != len(modes):
        raise ValueError(f"--mode {mode} needs one --listen per mode, in the same order (got {len(addresses)}), "
                         "e.g. --listen 127.0.0.1:8080 --listen 127.0.0.1:8081")
    found = {name: parse_listen(value) for name, value in zip(modes, addresses)}
    if len(set(found.values())) != len(found):
        raise ValueError("the reverse and the forward listener need different addresses")
    return found


def _forward_ca(args: argparse.Namespace, policy: Any) -> Any:
    """The forward listener's CA (created on first use), or None after saying why it
    cannot run."""
    from firewall.forward import ForwardHosts, MitmproxyMissing, default_ca_dir, ensure_ca

    hosts = ForwardHosts.from_spec(policy.spec.forward)
    if not hosts.patterns:
        _fail(f"--mode forward: the policy {args.policy} names no host to inspect; add, for example:\n"
              "forward:\n  hosts: [api.openai.com, api.anthropic.com]\n  unknown_hosts: refuse   # or tunnel")
        return None
    directory = args.ca_dir or default_ca_dir()
    try:
        ca = ensure_ca(directory)
    except MitmproxyMissing as error:
        _fail(str(error))
        return None
    except OSError as error:
        _fail(f"cannot create or read the forward proxy's CA in {directory}: {error.strerror or error}")
        return None
    print(f"agent-firewall: forward mode inspects {hosts.describe()}; other hosts: {hosts.unknown_hosts} "
          f"(forward.unknown_hosts); agents trust the CA {ca.cert} (agent-firewall ca prints how)", file=sys.stderr)
    return ca


def _ca(args: argparse.Namespace) -> int:
    from firewall.forward import MitmproxyMissing, default_ca_dir, ensure_ca, trust_instructions
    from firewall.proxy.config import parse_listen

    try:
        host, port = parse_listen(args.listen)
    except ValueError as error:
        return _fail(str(error))
    directory = args.ca_dir or default_ca_dir()
    try:
        files = ensure_ca(directory)
    except MitmproxyMissing as error:
        return _fail(str(error))
    except OSError as error:
        return _fail(f"cannot create or read the CA in {directory}: {error.strerror or error}")
    sys.stdout.write(trust_instructions(files, f"[{host}]:{port}" if ":" in host else f"{host}:{port}"))
    return EXIT_OK


async def _serve(apps: list[tuple[Any, str, int]], on_hangup: Any, watch: Path | None = None,
                 listeners: Sequence[Any] = (), *, firewall: Any = None, drain_seconds: float = 30.0) -> None:
    """Serve each (app, host, port), and start each other listener (`start() -> (host,
    port)`, `stop()`: the forward proxy), until SIGINT or SIGTERM; SIGHUP, and a change to
    the `watch` file, call `on_hangup`. On the way out `firewall` (a `Firewall`) drains:
    its listener closes at once, what it has in flight gets up to `drain_seconds`, and the
    other applications (the admin API, whose /readyz says so) serve until it is done."""
    from aiohttp import web

    from firewall.proxy.connection import runner_for

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    watcher = asyncio.create_task(_watch(watch, on_hangup, stop)) if watch is not None else None
    runners = []
    started: list[Any] = []
    try:
        for app, host, port in apps:
            # What is left after the drain is cut off: aiohttp need not wait long for it.
            runner = runner_for(app, access_log=None, shutdown_timeout=5.0)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, host, port).start()
        for listener in listeners:
            started.append(listener)
            host, port = await listener.start()
            print(f"agent-firewall: forward proxy listening on http://{host}:{port} "
                  f"(agents: HTTPS_PROXY=http://{host}:{port})", file=sys.stderr)
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
        # Every listener stops taking connections, and what is in flight on any of them gets
        # the same `drain_seconds`; then what is left is ended.
        draining = [asyncio.create_task(listener.drain(drain_seconds)) for listener in started if hasattr(listener, "drain")]
        if firewall is not None:
            await _drain(firewall, [runner for runner in runners if runner.app is firewall.app], drain_seconds)
        for cut in await asyncio.gather(*draining):
            if cut:
                print(f"agent-firewall: shut down: {cut} forward-proxy flow(s) still running after {drain_seconds:g} s "
                      "were ended", file=sys.stderr)
        for listener in reversed(started):
            await listener.stop()
        for runner in reversed(runners):
            await runner.cleanup()


async def _drain(firewall: Any, runners: list[Any], seconds: float) -> None:
    for runner in runners:
        for site in list(runner.sites):
            await site.stop()  # the listening socket closes: new connections are refused
        runner.server.pre_shutdown()  # idle keep-alive connections close; busy ones after their answer
    if firewall.in_flight:
        print(f"agent-firewall: shutting down: {firewall.in_flight} request(s) in flight get up to {seconds:g} s",
              file=sys.stderr)
    cut = await firewall.drain(seconds)
    if cut:
        print(f"agent-firewall: shut down: {cut} request(s) still running after {seconds:g} s were ended "
              "(each with a provider-shaped error, recorded)", file=sys.stderr)


async def _watch(path: Path, on_change: Any, stop: asyncio.Event, every: float = 1.0) -> None:
    """Call `on_change` when `path` changes (its size, modification time or inode: an
    editor that writes a new file and renames it over the old one changes the inode).
    Polling, not inotify: the same on every platform and every file system."""
    def seen() -> tuple[int, int, int] | None:
        try:
            found = path.stat()
        except OSError:
            return None  # mid-rename, or gone: keep the running policy
        return (found.st_mtime_ns, found.st_size, found.st_ino)

    last = seen()
    while not stop.is_set():
        await asyncio.sleep(every)
        now = seen()
        if now is not None and now != last:
            last = now
            on_change()


def _agents(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    from firewall.proxy.admin import ADMIN_TOKEN_ENV

    token = os.environ.get(ADMIN_TOKEN_ENV)
    if not token:
        return _fail(f"set {ADMIN_TOKEN_ENV} to the admin API's token")
    base = args.admin.rstrip("/")
    body: bytes | None = None
    if args.verb == "list":
        url = f"{base}/agents"
    elif args.verb == "show":
        url = f"{base}/agents/{args.agent}"
    else:
        url = f"{base}/agents/{args.agent}/{args.verb}"
        wanted = {"reason": args.reason, "ttl": args.ttl} if args.verb == "quarantine" else {}
        body = orjson.dumps({k: v for k, v in wanted.items() if v is not None})
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - the operator's own admin URL
            answer = orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        detail = error.read().decode("utf-8", "replace")
        return _fail(f"admin API answered {error.code}: {detail}")
    except (urllib.error.URLError, OSError) as error:
        return _fail(f"cannot reach the admin API at {base}: {getattr(error, 'reason', error)}")
    if args.verb == "list":
        for item in answer["agents"]:
            print(_agent_line(item))
        if not answer["agents"]:
            print("no agent is throttled, quarantined or released")
    else:
        print(_agent_line(answer) + (f"  ({answer['note']})" if answer.get("note") else ""))
    return EXIT_OK


def _agent_line(item: dict[str, Any]) -> str:
    import time

    if "state" not in item:
        return f"{item['agent']:<24} unchanged"
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(item["since"])) if item.get("since") else "-"
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(item["until"])) if item.get("until") else "-"
    return f"{item['agent']:<24} {item['state']:<10} since {since} until {until}  {item.get('reason') or ''}"


def _replay(args: argparse.Namespace) -> int:
    import dataclasses
    import itertools

    from firewall.audit import read_records
    from firewall.audit.replay import replay

    policy = _load(args.policy)
    if policy is None:
        return EXIT_FAILED
    report = replay(itertools.chain.from_iterable(read_records(path) for path in args.logs), policy)
    if args.json:
        for change in report.changes:
            sys.stdout.buffer.write(orjson.dumps(dataclasses.asdict(change)) + b"\n")
    else:
        print(f"replayed {report.replayed} exchanges under {policy.name} (sha256 {policy.sha256[:12]}): "
              f"{len(report.changes)} would change")
        for title, changes, after in (("newly blocked", report.newly_blocked, True),
                                      ("newly allowed", report.newly_allowed, False),
                                      ("other changes (tags, redactions, rules)", report.other, True)):
            if not changes:
                continue
            print(f"{title}: {len(changes)}")
            for rule, exchanges in report.by_rule(changes, after=after).items():
                shown = ", ".join(exchanges[:3]) + (", …" if len(exchanges) > 3 else "")
                print(f"  {rule}: {len(exchanges)}  (e.g. {shown})")
        if report.unreplayable:
            print(f"not replayable: {report.unreplayable} exchange records hold no messages "
                  "(record with `audit: {messages: true}` in the policy)")
    return EXIT_FAILED if args.fail_on_change and report.changes else EXIT_OK


def _keys_new(args: argparse.Namespace) -> int:
    from firewall.agents.identity import valid_agent_id
    from firewall.agents.keys import hash_key, new_key

    if not valid_agent_id(args.agent):
        return _fail(f"invalid agent id {args.agent!r}: use 1-128 characters of letters, digits and . _ : @ -")
    key = new_key()
    print(f"key (give it to {args.agent}; shown once, not stored): {key}")
    print("policy:")
    print("  agents:")
    print(f"    {args.agent}:")
    print(f'      keys: ["{hash_key(key)}"]')
    return EXIT_OK


def _keys_hash(_args: argparse.Namespace) -> int:
    from firewall.agents.keys import KEY_PREFIX, hash_key

    key = sys.stdin.readline().strip()
    if not key.startswith(KEY_PREFIX):
        return _fail(f"expected a firewall key ({KEY_PREFIX}…) on stdin")
    print(hash_key(key))
    return EXIT_OK


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    uvloop.install()


def _check(args: argparse.Namespace) -> int:
    status = EXIT_OK
    for path in args.policies:
        policy = _load(path)
        if policy is None:
            status = EXIT_FAILED
            continue
        for warning in policy.warnings:
            print(warning, file=sys.stderr)
        print(f"{path}: ok: policy {policy.name}, {len(policy.rules)} rules, {len(policy.tests)} tests, sha256 {policy.sha256[:12]}")
    return status


def _test(args: argparse.Namespace) -> int:
    import time

    from firewall.policy.junit import Suite, junit_xml
    from firewall.policy.testing import run_policy_tests

    passed = failed = 0
    suites: list[Suite] = []
    for path in _policy_files(args.policies):
        started = time.perf_counter()
        policy = _load(path)
        if policy is None:
            failed += 1
            suites.append(Suite(str(path), "", error=f"{path}: the policy has mistakes (agent-firewall check {path})"))
            continue
        suite = Suite(str(path), policy.name, run_policy_tests(policy))
        suite.seconds = time.perf_counter() - started
        suites.append(suite)
        for result in suite.results:
            if result.passed:
                passed += 1
                if args.verbose:
                    print(f"PASS {path}: {result.name}")
            else:
                failed += 1
                print(f"FAIL {path}: {result.name}: {result.failure}")
    print(f"{passed} passed, {failed} failed")
    if args.junit is not None:
        args.junit.write_bytes(junit_xml(suites))
    return EXIT_OK if failed == 0 else EXIT_FAILED


def _policy_files(paths: Sequence[Path]) -> list[Path]:
    """The policy files named, a directory standing for the YAML files directly in it."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()))
        else:
            out.append(path)
    return out


def _scan(args: argparse.Namespace) -> int:
    from firewall.engine import Engine
    from firewall.scan import scan_lines

    policy = _load(args.policy)
    if policy is None:
        return EXIT_FAILED
    engine = Engine(policy)
    source = args.input.open("rb") if args.input else sys.stdin.buffer
    out = sys.stdout.buffer
    try:
        for result in scan_lines(engine, source, Direction(args.direction)):
            out.write(orjson.dumps(result) + b"\n")
    finally:
        if args.input:
            source.close()
    out.flush()
    return EXIT_OK


def _audit_verify(args: argparse.Namespace) -> int:
    from firewall.audit import verify

    report = verify(args.path)  # the live file of a rotated log: all its files, oldest first
    if report.ok:
        if len(report.files) > 1:
            for part in report.files:
                seqs = f", seq {part.first_seq} to {part.last_seq}" if part.records else ""
                print(f"{part.path}: ok: {part.records} records{seqs}")
        files = f" in {len(report.files)} files" if len(report.files) > 1 else ""
        print(f"{args.path}: ok: {report.records} records{files}, hash chain intact")
        return EXIT_OK
    where = f":{report.line}" if report.line else ""
    print(f"{report.file or args.path}{where}: FAILED: {report.problem}")
    return EXIT_FAILED


def _audit_show(args: argparse.Namespace) -> int:
    from firewall.audit import AuditLogError, query, read_records

    filters = {"agent": args.agent, "action": args.action, "rule": args.rule, "since": args.since,
               "until": args.until, "text": args.text}
    try:
        with _indexed(args) as index:
            records = index.query(**filters) if index else query(read_records(args.path), **filters)
            for record in records:
                if args.json:
                    sys.stdout.buffer.write(orjson.dumps(record) + b"\n")
                    continue
                print(_summary(record))
    except (AuditLogError, FileNotFoundError) as exc:
        sys.stdout.flush()
        print(f"agent-firewall: {exc}", file=sys.stderr)
        return EXIT_FAILED
    sys.stdout.flush()
    return EXIT_OK


@contextlib.contextmanager
def _indexed(args: argparse.Namespace) -> Iterator[AuditIndex | None]:
    """The log's index, brought up to date; None with --no-index, or when the index cannot
    be written (a read-only directory): the caller then scans, as a reviewer reading a log
    on a read-only mount must still get answers."""
    if args.no_index:
        yield None
        return
    from firewall.audit.index import AuditIndex, IndexUnavailable

    index: AuditIndex | None = None
    try:
        index = AuditIndex(args.path, args.index)
        index.refresh()
    except IndexUnavailable as exc:
        print(f"agent-firewall: {exc}; reading the whole log instead", file=sys.stderr)
        if index is not None:
            index.close()
        index = None
    except BaseException:
        if index is not None:
            index.close()
        raise
    if index is None:
        yield None
        return
    with index:
        yield index


def _audit_index(args: argparse.Namespace) -> int:
    from firewall.audit import AuditLogError
    from firewall.audit.index import AuditIndex, IndexUnavailable

    try:
        with AuditIndex(args.path, args.index) as index:
            done = index.refresh(rebuild=args.rebuild)
    except (AuditLogError, FileNotFoundError, IndexUnavailable) as exc:
        print(f"agent-firewall: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{index.path}: {done.records:,} records of {args.path} ({done.files} file{'' if done.files == 1 else 's'})"
          + (f"; built from nothing ({done.rebuilt})" if done.rebuilt else ""))
    print(f"read {done.added:,} new records, {done.bytes_read:,} bytes from {done.files_read} "
          f"file{'' if done.files_read == 1 else 's'} in {done.seconds:.2f} s")
    if done.reindexed:
        print("indexed again from the start (changed or shortened, or after such a file): " + ", ".join(done.reindexed))
    if done.dropped:
        print("no longer in the log, dropped: " + ", ".join(done.dropped))
    return EXIT_OK


def _audit_edges(args: argparse.Namespace) -> int:
    import dataclasses

    from firewall.audit import read_records
    from firewall.audit.report import edges

    found = edges(read_records(args.path))
    if args.json:
        for edge in found:
            sys.stdout.buffer.write(orjson.dumps(dataclasses.asdict(edge)) + b"\n")
        return EXIT_OK
    if not found:
        print("no AI-to-AI exchanges in this log")
        return EXIT_OK
    print(f"{'source -> agent':<32} {'requests':>8} {'blocked':>8} {'flagged':>8}  first seen / last seen")
    for edge in found:
        print(f"{edge.source + ' -> ' + edge.agent:<32} {edge.requests:>8} {edge.blocked:>8} {edge.flagged:>8}  "
              f"{edge.first[:19]} / {edge.last[:19]}  (e.g. {edge.example})")
    return EXIT_OK


def _audit_stats(args: argparse.Namespace) -> int:
    import dataclasses

    from firewall.audit import AuditLogError, read_records
    from firewall.audit.report import stats

    try:
        with _indexed(args) as index:
            agents, rules = index.stats() if index else stats(read_records(args.path))
    except (AuditLogError, FileNotFoundError) as exc:
        print(f"agent-firewall: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        sys.stdout.buffer.write(orjson.dumps({"agents": [dataclasses.asdict(a) | {"block_rate": a.block_rate}
                                                         for a in agents], "rules": rules}) + b"\n")
        return EXIT_OK
    print(f"{'agent':<24} {'requests':>8} {'answers':>8} {'blocked':>8} {'block rate':>10}  top rules")
    for agent in agents:
        top = ", ".join(f"{rule} {count}" for rule, count in sorted(agent.rules.items(), key=lambda i: -i[1])[:3])
        print(f"{agent.agent:<24} {agent.requests:>8} {agent.responses:>8} {agent.blocked:>8} "
              f"{agent.block_rate:>10.1%}  {top or '-'}")
    print("\nrules: " + (", ".join(f"{rule} {count}" for rule, count in rules.items()) or "none fired"))
    return EXIT_OK


def _audit_trace(args: argparse.Namespace) -> int:
    from firewall.audit import read_records
    from firewall.audit.report import trace

    found = trace(read_records(args.path), args.exchange)
    if not found:
        return _fail(f"no record of exchange {args.exchange} in {args.path}")
    for step, record in found:
        if args.json:
            sys.stdout.buffer.write(orjson.dumps({"step": step, **record}) + b"\n")
        else:
            print(f"{'  ' * step}{'<- ' if step else ''}{_summary(record).strip()}")
    sys.stdout.flush()
    return EXIT_OK


def _audit_report(args: argparse.Namespace) -> int:
    from firewall.audit import read_records
    from firewall.audit.html import html_report

    args.output.write_text(html_report(read_records(args.path), title=f"agent-firewall audit report: {args.path.name}"),
                           encoding="utf-8")
    print(f"wrote {args.output}")
    return EXIT_OK


def _audit_graph(args: argparse.Namespace) -> int:
    import shutil
    import subprocess

    from firewall.audit import read_records
    from firewall.audit.report import graph

    dot = graph(read_records(args.path)).encode()
    if args.format != "dot":
        program = shutil.which("dot")
        if program is None:
            return _fail(f"--format {args.format} needs Graphviz's `dot` on PATH (apt-get install graphviz); "
                         "--format dot writes the graph as text")
        done = subprocess.run([program, f"-T{args.format}"], input=dot, capture_output=True, timeout=60, check=False)
        if done.returncode != 0:
            return _fail(f"dot failed: {done.stderr.decode('utf-8', 'replace').strip()}")
        dot = done.stdout
    if args.output is not None:
        args.output.write_bytes(dot)
    else:
        sys.stdout.buffer.write(dot)
    return EXIT_OK


def _summary(record: dict) -> str:  # type: ignore[type-arg]
    """One line per record: when, who (source -> agent), which way, what happened, why."""
    from firewall.audit.reader import rule_ids

    who = record.get("agent") or "-"
    if record.get("source"):
        who = f"{record['source']}->{who}"
    rules = ",".join(rule_ids(record)) or "-"
    if record.get("event"):
        detail = record["event"]
    elif "holdback_max_chars" in record:
        detail = f"stream, held back <= {record['holdback_max_chars']} chars"
    else:
        detail = f"{record.get('messages', 0)} msgs"
    # `or ''`: a field present as null (an event record has no direction) prints as blank.
    return (f"{record.get('seq') if record.get('seq') is not None else '':>5} {str(record.get('ts') or '')[:23]} "
            f"{record.get('exchange') or ''} {who:<22} {record.get('direction') or '':<8} "
            f"{record.get('action') or '':<6} {rules:<36} {detail}")


def _demo(args: argparse.Namespace) -> int:
    from firewall.demo import run_demo

    return run_demo(args.audit_log)


if __name__ == "__main__":
    raise SystemExit(main())
