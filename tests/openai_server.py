"""A local OpenAI-compatible server for tests: `/v1/models` and a streamed `/v1/chat/completions`
whose reply a test scripts.

`OpenAIServer(reply)` listens on a free local port; every chat request's JSON body is kept in
`requests`, then `reply(handler, body)` answers it with the handler's helpers (`send_json`, or
`start_stream` / `send_event` / `end_stream` for a server-sent-events reply). Use it as a context
manager: it serves in a daemon thread and, on exit, releases handlers waiting on `release` and
closes the socket.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Sequence


def completion_chunk(text: str | None = None, finish: str | None = None, usage: dict | None = None) -> dict:
    """One `chat.completion.chunk` event: a piece of text, a finish reason, or a usage block."""
    event = {"id": "x", "object": "chat.completion.chunk", "choices": []}
    if text is not None or finish:
        event["choices"] = [{"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}]
    if usage:
        event["usage"] = usage
    return event


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/v1/models":
            self.send_json(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in self.server.models]})
        else:
            self.send_json(404, {"error": {"message": "no such route"}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        if self.path != "/v1/chat/completions":
            return self.send_json(404, {"error": {"message": f"no route {self.path}"}})
        try:
            self.server.reply(self, body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a test of timeouts or stops)

    def send_json(self, code: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_stream(self) -> None:
        """Headers of a chunked server-sent-events reply."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def send_raw(self, text: str) -> None:
        """One HTTP chunk of the stream, exactly `text` (malformed events included)."""
        data = text.encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def send_event(self, event: dict) -> None:
        self.send_raw("data: " + json.dumps(event) + "\n\n")

    def end_stream(self) -> None:
        self.send_raw("data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")

    def stream_text(self, text: str) -> None:
        """A whole reply: the text as one piece, the stop, the end."""
        self.start_stream()
        self.send_event(completion_chunk(text))
        self.send_event(completion_chunk(finish="stop"))
        self.end_stream()


class OpenAIServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, reply: Callable[[Handler, dict], None], models: Sequence[str] = ("only-model",)):
        super().__init__(("127.0.0.1", 0), Handler)
        self.reply, self.models = reply, list(models)
        self.requests: list[dict] = []
        self.release = threading.Event()  # set on exit: ends handlers that wait on it (a silent server)
        self.disconnected = threading.Event()  # for a reply that sees the client hang up

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> "OpenAIServer":
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()
