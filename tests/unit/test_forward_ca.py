"""The forward proxy's CA: where it lives and what agents are told to set.

Creating the CA needs mitmproxy, which lives in an environment of its own: that part is
tested through `agent-firewall ca` in tests/integration/test_forward_mode.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from firewall.cli import main
from firewall.forward import CA_DIR_ENV, CAFiles, MitmproxyMissing, default_ca_dir, ensure_ca, trust_instructions

needs_no_mitmproxy = pytest.mark.skipif(importlib.util.find_spec("mitmproxy") is not None,
                                        reason="mitmproxy is installed in this environment")


def files(directory: Path, *, created: bool = True) -> CAFiles:
    return CAFiles(directory, directory / "mitmproxy-ca-cert.pem", directory / "ca-bundle.pem", created)


def test_the_instructions_are_shell_that_sets_every_variable():
    text = trust_instructions(files(Path("/home/ops/.agent-firewall/ca")), "127.0.0.1:8081")
    exports = dict(line.removeprefix("export ").split("=", 1) for line in text.splitlines() if line.startswith("export "))
    assert exports == {
        "HTTPS_PROXY": "http://127.0.0.1:8081",
        "HTTP_PROXY": "http://127.0.0.1:8081",
        "SSL_CERT_FILE": "/home/ops/.agent-firewall/ca/ca-bundle.pem",
        "REQUESTS_CA_BUNDLE": "/home/ops/.agent-firewall/ca/ca-bundle.pem",
        "NODE_EXTRA_CA_CERTS": "/home/ops/.agent-firewall/ca/mitmproxy-ca-cert.pem",
        "CURL_CA_BUNDLE": "/home/ops/.agent-firewall/ca/ca-bundle.pem",
    }
    assert all(line.startswith(("#", "export ")) for line in text.splitlines() if line)
    assert "(created now)" in text and "(already there)" in trust_instructions(files(Path("/x"), created=False), "h:1")


def test_a_path_with_spaces_is_quoted_for_the_shell():
    text = trust_instructions(files(Path("/Users/o p/it's")), "127.0.0.1:8081")
    assert "export SSL_CERT_FILE='/Users/o p/it'\"'\"'s/ca-bundle.pem'" in text


def test_the_ca_directory_comes_from_the_environment_or_the_home(monkeypatch, tmp_path):
    monkeypatch.setenv(CA_DIR_ENV, str(tmp_path / "elsewhere"))
    assert default_ca_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv(CA_DIR_ENV)
    assert default_ca_dir() == Path.home() / ".agent-firewall" / "ca"


@needs_no_mitmproxy
def test_without_mitmproxy_the_ca_command_says_how_to_install_it(tmp_path, capsys):
    with pytest.raises(MitmproxyMissing):
        ensure_ca(tmp_path / "ca")
    assert main(["ca", "--ca-dir", str(tmp_path / "ca")]) == 2
    error = capsys.readouterr().err
    assert "pip install 'agent-firewall[mitm]'" in error and "environment of its own" in error
    assert not (tmp_path / "ca").exists()
