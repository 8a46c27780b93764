"""A tiny OpenAI-compatible chat server on loopback, for the real ChatOpenAI client.

Implements ``POST /v1/chat/completions`` (streamed as SSE chunks, or whole).
``server.mode`` picks the behaviour: "ok", "404", "429", "500", "slow" (answers after
``server.delay`` seconds), "break" (an error event after a few tokens).
The reply repeats what the client sent, so tests see the history arrive.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeOpenAIServer(ThreadingHTTPServer):
    daemon_threads = True
    mode = "ok"
    delay = 2.0
    requests: list[dict[str, Any]]

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up is part of the tests

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/v1"


def reply_tokens(body: dict[str, Any]) -> list[str]:
    """The reply to a request: how many messages came, and the last one."""
    messages = body.get("messages", [])
    last = messages[-1]["content"] if messages else ""
    text = f"I got {len(messages)} messages. You said: {last}"
    words = text.split(" ")
    return [words[0]] + [" " + word for word in words[1:]]


class Handler(BaseHTTPRequestHandler):
    server: FakeOpenAIServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the test output clean

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.requests.append(body)
        if self.path != "/v1/chat/completions":
            return self.send_json(404, {"error": {"message": "not found"}})
        mode = self.server.mode
        if mode == "429":
            return self.send_json(
                429,
                {
                    "error": {
                        "message": "Rate limit reached",
                        "type": "requests",
                        "code": "rate_limit_exceeded",
                    }
                },
            )
        if mode == "404":
            # What Ollama's OpenAI-compatible endpoint says of an unknown model.
            model = body.get("model", "")
            return self.send_json(
                404,
                {
                    "error": {
                        "message": f'model "{model}" not found, try pulling it first',
                        "type": "api_error",
                    }
                },
            )
        if mode == "500":
            return self.send_json(
                500,
                {
                    "error": {
                        "message": "The server had an error",
                        "type": "server_error",
                    }
                },
            )
        if mode == "slow":
            time.sleep(self.server.delay)
        tokens = reply_tokens(body)
        if not body.get("stream"):
            return self.send_json(200, self.completion("".join(tokens), body))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.send_chunk(body, {"role": "assistant", "content": ""})
        for position, token in enumerate(tokens):
            if mode == "break" and position == 3:
                # How the API reports an error once the stream has started.
                error = {"error": {"message": "overloaded", "type": "server_error"}}
                self.wfile.write(b"data: " + json.dumps(error).encode() + b"\n\n")
                self.wfile.flush()
                self.close_connection = True
                return
            self.send_chunk(body, {"content": token})
        self.send_chunk(body, {}, finish_reason="stop")
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True

    def completion(self, text: str, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    def send_chunk(
        self,
        body: dict[str, Any],
        delta: dict[str, Any],
        finish_reason: str | None = None,
    ) -> None:
        chunk = {
            "id": "chatcmpl-test",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        self.wfile.flush()

    def send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def openai_server() -> Iterator[FakeOpenAIServer]:
    """Run the server on a free loopback port for the duration of the block."""
    server = FakeOpenAIServer(("127.0.0.1", 0), Handler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
