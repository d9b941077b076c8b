"""A no-op mitmproxy addon: the cheapest addon a user of mitmproxy would put in front of an LLM API.

Loaded by benchmarks/compare/run.py into `mitmdump --mode reverse:...` (mitmproxy 11.0, from
.venv-mitm). Its hooks run on every flow and do nothing, except one thing any LLM user must
do: mitmproxy buffers a whole response body before it forwards it, so without
`flow.response.stream = True` a streamed (SSE) answer would reach the client only at its
end. Turning streaming on for event streams is what makes its time to first token
comparable at all.
"""

from __future__ import annotations

from mitmproxy import http


class NoOp:
    def request(self, flow: http.HTTPFlow) -> None:
        pass

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None and "text/event-stream" in flow.response.headers.get("content-type", ""):
            flow.response.stream = True

    def response(self, flow: http.HTTPFlow) -> None:
        pass


addons = [NoOp()]
