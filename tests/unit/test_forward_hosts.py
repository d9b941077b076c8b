"""The policy's `forward:` section: which hosts forward mode inspects."""

from __future__ import annotations

import pytest

from firewall.forward import ForwardHosts, ForwardSpec, HostPattern, parse_host_pattern
from firewall.policy import PolicyError


@pytest.mark.parametrize(("text", "expected"), [
    ("api.openai.com", HostPattern("api.openai.com", None, False)),
    ("API.OpenAI.com.", HostPattern("api.openai.com", None, False)),
    ("*.openai.azure.com", HostPattern("openai.azure.com", None, True)),
    ("127.0.0.1:8443", HostPattern("127.0.0.1", 8443, False)),
    ("[::1]:8443", HostPattern("::1", 8443, False)),
    ("[::1]", HostPattern("::1", None, False)),
    ("mcp_tools.internal:9000", HostPattern("mcp_tools.internal", 9000, False)),
])
def test_host_patterns_parse(text, expected):
    assert parse_host_pattern(text) == expected


@pytest.mark.parametrize(("text", "says"), [
    ("https://api.openai.com", "not a URL"),
    ("api.openai.com/v1", "not a URL"),
    ("*", "unknown_hosts: tunnel"),
    ("api.*.com", "only as the first label"),
    ("*.com", "two labels or more"),
    ("*.10.0.0.1", "before an IP address"),
    ("api.openai.com:0", "from 1 to 65535"),
    ("api.openai.com:http", "from 1 to 65535"),
    ("bad host", "not a host name"),
    ("bücher.example", "xn-- form"),
    ("", "an empty host"),
])
def test_a_bad_host_says_what_is_wrong(text, says):
    with pytest.raises(ValueError, match=says.replace("*", r"\*")):
        parse_host_pattern(text)


def test_a_host_without_a_port_is_its_https_and_http_ports_only():
    hosts = ForwardHosts.from_spec(ForwardSpec(hosts=["api.openai.com", "127.0.0.1:8443", "*.openai.azure.com"]))
    assert hosts.inspects("api.openai.com", 443) and hosts.inspects("API.OPENAI.COM.", 80)
    assert not hosts.inspects("api.openai.com", 8443)
    assert hosts.inspects("127.0.0.1", 8443) and not hosts.inspects("127.0.0.1", 443)
    assert hosts.inspects("east.openai.azure.com", 443) and not hosts.inspects("openai.azure.com", 443)
    assert not hosts.inspects("evil-openai.azure.com.attacker.net", 443)
    assert not hosts.inspects("api.openai.com.attacker.net", 443)
    assert hosts.describe() == "api.openai.com, 127.0.0.1:8443, *.openai.azure.com"


def test_no_hosts_refuses_every_host_by_default():
    hosts = ForwardHosts.from_spec(ForwardSpec())
    assert hosts.unknown_hosts == "refuse" and not hosts.inspects("api.openai.com", 443)
    assert hosts.describe() == "none"


def test_a_bad_host_in_a_policy_file_is_reported_with_its_line(load_policy):
    with pytest.raises(PolicyError) as raised:
        load_policy("""
            version: 1
            name: p
            forward:
              hosts:
                - api.openai.com
                - https://api.anthropic.com
              unknown_hosts: tunnel
            """)
    (problem,) = raised.value.problems
    assert problem.line == 6 and "forward.hosts[1]" in str(problem) and "not a URL" in str(problem)


def test_unknown_hosts_is_refuse_or_tunnel(load_policy):
    with pytest.raises(PolicyError, match="unknown_hosts"):
        load_policy("""
            version: 1
            name: p
            forward: {hosts: [api.openai.com], unknown_hosts: allow}
            """)
    policy = load_policy("""
        version: 1
        name: p
        forward: {hosts: [api.openai.com], unknown_hosts: tunnel}
        """)
    assert policy.spec.forward == ForwardSpec(hosts=["api.openai.com"], unknown_hosts="tunnel")
