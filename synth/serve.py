"""Serve a backend as an OpenAI-compatible chat-completions endpoint on a local port.

`python -m synth serve` puts a transformers model behind `/v1/chat/completions` so that tools that
speak the OpenAI API (and our `OpenAIBackend`) can use it. Concurrent requests with the same sampling
params are gathered into one batch (up to `batch_size`, waiting at most `batch_wait_s` for company).
`fail_requests` makes the first N requests fail with HTTP 503, to exercise clients' retries.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from synth.backends import Backend, SamplingParams

log = logging.getLogger(__name__)


class _Batcher:
    """One worker thread that owns the model and runs queued requests in batches."""

    def __init__(self, backend: Backend, batch_size: int, batch_wait_s: float):
        self.backend, self.batch_size, self.batch_wait_s = backend, batch_size, batch_wait_s
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True, name="synth-serve-batcher")
        self.thread.start()

    def submit(self, messages, params: SamplingParams, seed: int | None) -> Future:
        fut: Future = Future()
        self.queue.put((messages, params, seed, fut))
        return fut

    def _run(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch, deadline = [first], time.monotonic() + self.batch_wait_s
            while len(batch) < self.batch_size:
                try:
                    item = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    self.queue.put(None)
                    break
                batch.append(item)
            by_params: dict[SamplingParams, list] = {}
            for item in batch:
                by_params.setdefault(item[1], []).append(item)
            for params, items in by_params.items():
                try:
                    # a request without a seed gets seed 0: the server is deterministic by default
                    results = self.backend.generate([i[0] for i in items], params,
                                                    [i[2] if i[2] is not None else 0 for i in items])
                    for item, result in zip(items, results):
                        item[3].set_result(result)
                except Exception as e:  # reported to each client as HTTP 500
                    for item in items:
                        item[3].set_exception(e)

    def close(self) -> None:
        self.queue.put(None)


def build_server(backend: Backend, host: str = "127.0.0.1", port: int = 0, batch_size: int = 16,
                 batch_wait_s: float = 0.02, fail_requests: int = 0) -> ThreadingHTTPServer:
    """An HTTP server (not yet serving: call `serve_forever`, e.g. in a thread); port 0 picks a free one."""
    batcher = _Batcher(backend, batch_size, batch_wait_s)
    failures = {"left": fail_requests}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):  # route the default stderr lines to logging
            log.debug("%s " + fmt, self.address_string(), *args)

        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path.rstrip("/") == "/v1/models":
                self._reply(200, {"object": "list", "data": [{"id": backend.generator, "object": "model"}]})
            else:
                self._reply(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._reply(404, {"error": {"message": f"no route {self.path}"}})
                return
            with lock:
                fail = failures["left"] > 0
                failures["left"] -= fail
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                messages = body["messages"]
                params = SamplingParams(int(body.get("max_tokens") or 256), float(body.get("temperature", 1.0)),
                                        float(body.get("top_p", 1.0)))
            except (ValueError, KeyError, TypeError) as e:
                self._reply(400, {"error": {"message": f"bad request: {e!r}"}})
                return
            if fail:
                self._reply(503, {"error": {"message": "injected failure (fail_requests)"}})
                return
            try:
                result = batcher.submit(messages, params, body.get("seed")).result()
            except Exception as e:
                self._reply(500, {"error": {"message": f"{type(e).__name__}: {e}"}})
                return
            self._reply(200, {
                "id": f"chatcmpl-{id(result):x}", "object": "chat.completion", "created": int(time.time()),
                "model": backend.generator,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                             "finish_reason": result.finish_reason}],
                "usage": {"prompt_tokens": result.n_prompt_tokens,
                          "completion_tokens": result.n_completion_tokens,
                          "total_tokens": result.n_prompt_tokens + result.n_completion_tokens}})

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.batcher = batcher  # type: ignore[attr-defined]
    return server


def start_server_thread(server: ThreadingHTTPServer) -> threading.Thread:
    """Serve in a daemon thread; stop with `server.shutdown()`."""
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="synth-serve")
    thread.start()
    return thread
