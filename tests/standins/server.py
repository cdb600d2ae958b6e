"""One HTTP server on 127.0.0.1 that speaks all three model APIs and logs every request.

Routes:
- HEAD/GET /                     200 (Claude Code probes the base URL)
- POST /v1/messages              Anthropic Messages (SSE when "stream": true); also /messages/count_tokens
- POST /v1/responses             OpenAI Responses (SSE when "stream": true)
- POST /v1/chat/completions      OpenAI chat completions (SSE when "stream": true)
- GET /v1/models, GET /api/v1/models, GET /v1/models/<id>, POST /api/show: harmless model metadata
- anything else                  404 with a JSON error (and logged, so a test can see what was probed)
A query string is ignored for routing (Claude Code calls /v1/messages?beta=true).
"""
from __future__ import annotations

import gzip
import json
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from tests.standins import anthropic, openai_chat, openai_responses
from tests.standins.wire import JsonReply, SseReply

_KNOWN_MODELS = ["standin-model"]


@dataclass
class LoggedRequest:
    method: str
    path: str  # without the query string
    query: str
    headers: dict[str, str]  # lower-case names
    raw: bytes = field(repr=False)
    body: Any = None  # parsed JSON, when it was JSON
    status: int = 0  # what the stand-in answered
    at: float = 0.0

    def strings(self) -> list[str]:
        """Every string value in the JSON body (or the raw body as text), decoded."""
        if self.body is None:
            return [self.raw.decode("utf-8", "replace")]
        found: list[str] = []
        stack = [self.body]
        while stack:
            value = stack.pop()
            if isinstance(value, str):
                found.append(value)
            elif isinstance(value, dict):
                stack.extend(value.values())
            elif isinstance(value, list):
                stack.extend(value)
        return found

    def contains(self, needle: str) -> bool:
        """True when one string of the body holds needle verbatim (escapes already resolved)."""
        return any(needle in s for s in self.strings())


class StandIn:
    """The running server; `url` is http://127.0.0.1:PORT, `requests` the log (thread-safe copy)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._log: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="standin-models", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        if not isinstance(host, str):  # an AF_INET server's getsockname() host is always a str
            raise TypeError(f"bug: stand-in server bound to a non-str host {host!r}")
        return f"http://{host}:{port}"

    def start(self) -> StandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def record(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._log.append(entry)

    @property
    def requests(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._log)

    def find(self, needle: str, path: str | None = None) -> list[LoggedRequest]:
        """Logged requests with a body string containing needle (optionally on one path)."""
        return [r for r in self.requests if (path is None or r.path == path) and r.contains(needle)]

    def paths(self) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.requests]


def start_standin() -> StandIn:
    """A stand-in on a free loopback port, serving in a daemon thread."""
    return StandIn().start()


def _decode(raw: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(raw)
    if encoding == "deflate":
        return zlib.decompress(raw)
    return raw


def _handler_for(standin: StandIn):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the real APIs; streams are chunked

        def log_message(self, *args):  # the request log replaces stderr chatter
            pass

        def _read(self) -> LoggedRequest:
            split = urlsplit(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            raw = b""
            if "chunked" in headers.get("transfer-encoding", ""):
                raw = self._read_chunked()
            elif headers.get("content-length"):
                raw = self.rfile.read(int(headers["content-length"]))
            entry = LoggedRequest(self.command, split.path.rstrip("/") or "/", split.query, headers, raw,
                                  at=time.time())
            try:
                data = _decode(raw, headers.get("content-encoding", ""))
                entry.body = json.loads(data) if data else None
            except (ValueError, OSError, zlib.error):
                entry.body = None
            return entry

        def _read_chunked(self) -> bytes:
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()

        def do_HEAD(self):
            entry = self._read()
            entry.status = 200
            standin.record(entry)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            self._dispatch()

        def do_POST(self):
            self._dispatch()

        def _dispatch(self):
            entry = self._read()
            reply = _route(entry)
            entry.status = reply.status if isinstance(reply, JsonReply) else 200
            standin.record(entry)
            try:
                if isinstance(reply, SseReply):
                    self._send_sse(reply)
                else:
                    self._send_json(reply)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _send_json(self, reply: JsonReply):
            data = json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _send_sse(self, reply: SseReply):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            for chunk in reply.encode():
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler


def _route(entry: LoggedRequest) -> JsonReply | SseReply:
    body = entry.body if isinstance(entry.body, dict) else {}
    path = entry.path
    if entry.method == "POST" and path.endswith("/messages/count_tokens"):
        return anthropic.count_tokens(body)
    if entry.method == "POST" and path.endswith("/messages"):
        return anthropic.respond(body)
    if entry.method == "POST" and path.endswith("/responses"):
        return openai_responses.respond(body)
    if entry.method == "POST" and path.endswith("/chat/completions"):
        return openai_chat.respond(body)
    if entry.method == "GET" and path.endswith("/models"):
        return openai_chat.models(_KNOWN_MODELS)
    if entry.method == "GET" and "/models/" in path:
        model = path.split("/models/", 1)[1]
        return JsonReply(200, {"id": model, "object": "model", "created": 0, "owned_by": "standin",
                               "context_length": 200_000})
    if entry.method == "POST" and path == "/api/show":  # Ollama's model info probe: "not Ollama"
        return JsonReply(404, {"error": "not an Ollama server"})
    if entry.method == "GET" and path == "/":
        return JsonReply(200, {"standin": True})
    return JsonReply(404, {"error": {"message": f"stand-in has no route {entry.method} {path}",
                                     "type": "not_found"}})
