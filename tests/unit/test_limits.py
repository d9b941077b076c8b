"""firewall/proxy/limits.py alone: what an environment with an older brotli does."""

from __future__ import annotations

import brotli
import pytest

from firewall.proxy import limits


def test_br_is_refused_where_brotli_cannot_cap_its_output(monkeypatch: pytest.MonkeyPatch) -> None:
    body = brotli.compress(b'{"messages": []}')
    assert limits.decode_body(body, "br", max_bytes=1 << 20, max_ratio=100) == b'{"messages": []}'
    # The forward mode's environment keeps brotli 1.1 (mitmproxy 11.0 pins it): no output cap there.
    monkeypatch.setattr(limits, "_BROTLI_BOUNDED", False)
    with pytest.raises(limits.LimitExceeded, match=r"br request bodies need brotli>=1.2") as refused:
        limits.decode_body(body, "br", max_bytes=1 << 20, max_ratio=100)
    assert (refused.value.status, refused.value.event) == (415, "unsupported_encoding")
