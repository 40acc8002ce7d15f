"""OpenAI-compatible backend: any server with a streaming /v1/chat/completions endpoint.

llama.cpp's server, vLLM, Ollama, LM Studio and hosted APIs speak this protocol, so a deployed
model can be compared against a local one. The request runs in a worker thread on a private
asyncio loop: a stop cancels the read at once and closes the HTTP stream (the server sees the
disconnect and stops generating), and every wait is bounded by `spec.timeout_s`.

Token counts come from the final `usage` block (`stream_options.include_usage`) when the server
sends one; otherwise each content chunk counts as one token, which is exact for llama.cpp and
vLLM and approximate for servers that batch several tokens into one chunk. Time to first token
and tokens/s are what this client observes, network included.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from typing import Iterator

import httpx

from llm_compare.backends.base import Backend, Chunk, Messages, run_in_worker
from llm_compare.chat_formats import normalize_messages
from llm_compare.errors import UserError
from llm_compare.params import GenerationParams


def chat_url(base: str) -> str:
    """The chat completions URL for a base URL given with or without /v1 (or the full path)."""
    base = base.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    if base.endswith("/v1"):
        return base + "/chat/completions"
    return base + "/v1/chat/completions"


def error_detail(body: bytes) -> str:
    """The human part of an error response ({"error": {"message": ...}} or {"detail": ...} or text)."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:200] or "(empty body)"
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data.get("message")))
        if isinstance(err, dict):
            err = err.get("message") or err
        if err:
            return str(err)[:200]
    return text[:200]


# Sampling fields outside OpenAI's API that llama.cpp, vLLM and others accept: sent so a server's
# own defaults (llama.cpp's: repeat penalty 1.1, top-k 40, min-p 0.05) do not skew a comparison.
EXTENSIONS = ("repetition_penalty", "repeat_penalty", "top_k", "min_p")
# Request variants, fullest first: a server that rejects a field (HTTP 400/422 naming it) is asked
# again without it (hosted APIs refuse the extensions; older servers refuse stream_options).
ATTEMPTS = ((True, True), (False, True), (False, False))  # (with extensions, with usage block)


def request_body(model: str, messages: Messages, params: GenerationParams, extensions: bool, usage: bool) -> dict:
    body = {
        "model": model,
        "messages": normalize_messages(messages),
        "stream": True,
        "max_tokens": params.max_new_tokens,
        "temperature": 0.0 if params.greedy else params.temperature,
        "top_p": 1.0 if params.greedy else params.top_p,
    }
    if params.seed is not None:
        body["seed"] = params.seed
    if extensions:
        body.update(dict.fromkeys(EXTENSIONS[:2], params.repetition_penalty), top_k=0, min_p=0.0)
    if usage:
        body["stream_options"] = {"include_usage": True}
    return body


class OpenAIBackend(Backend):
    def __init__(self, spec):
        self.spec = spec
        self.url = chat_url(spec.source)
        self.model_name = spec.remote_model
        self.context_length = None
        self.load_seconds = 0.0
        self.resident_bytes = 0
        self.headers = {"Accept": "text/event-stream"}
        if spec.api_key_env:
            key = os.environ.get(spec.api_key_env)
            if not key:
                raise UserError(
                    f"model {spec.name!r}: environment variable {spec.api_key_env} (its API key) is not set; "
                    f"export {spec.api_key_env}=... before starting"
                )
            self.headers["Authorization"] = f"Bearer {key}"

    def count_prompt_tokens(self, messages: Messages) -> None:
        return None  # the server's tokenizer is not available here

    def stream(self, messages: Messages, params: GenerationParams, stop: threading.Event,
               threads: int | None = None) -> Iterator[Chunk]:  # threads: the server's own business
        def request(emit):
            asyncio.run(self._run_until_stopped(messages, params, stop, emit))

        yield from run_in_worker(request, stop, f"openai-{self.spec.name}")

    async def _run_until_stopped(self, messages, params, stop: threading.Event, emit) -> None:
        task = asyncio.create_task(self._request(messages, params, emit))
        while not task.done():
            if stop.is_set():
                task.cancel()
                break
            await asyncio.wait({task}, timeout=0.05)
        try:
            await task
        except asyncio.CancelledError:
            pass  # stopped by the user: the client closed the stream

    async def _request(self, messages, params: GenerationParams, emit) -> None:
        t = self.spec.timeout_s
        async with httpx.AsyncClient(timeout=httpx.Timeout(t), headers=self.headers) as client:
            try:
                model = self.model_name or await self._only_model(client)
                for i, (extensions, usage) in enumerate(ATTEMPTS):
                    body = request_body(model, messages, params, extensions, usage)
                    async with client.stream("POST", self.url, json=body) as response:
                        if response.status_code in (400, 422) and i + 1 < len(ATTEMPTS):
                            detail = error_detail(await response.aread())
                            if any(name in detail for name in EXTENSIONS + ("stream_options",)):
                                continue  # ask again without the fields this server refuses
                            raise UserError(f"{self.url} rejected the request (HTTP {response.status_code}: {detail})")
                        await self._check_status(response, model)
                        await self._read_events(response, emit)
                        return
            except httpx.TimeoutException:
                raise UserError(
                    f"{self.url} sent nothing for {t:g} s; check the server or raise timeout_s for {self.spec.name!r}"
                ) from None
            except httpx.ConnectError as e:
                raise UserError(f"cannot reach {self.url} ({e}); check the server is running and the URL is right") from None
            except (httpx.RemoteProtocolError, httpx.ReadError) as e:
                raise UserError(f"{self.url} closed the connection mid-reply ({e or type(e).__name__}); see the server's log") from None
            except httpx.HTTPError as e:
                raise UserError(f"request to {self.url} failed: {type(e).__name__}: {e}") from None

    async def _only_model(self, client: httpx.AsyncClient) -> str:
        """The server's model name when the spec names none and the server serves exactly one."""
        models_url = self.url.rsplit("/chat/completions", 1)[0] + "/models"
        hint = f"set remote_model for {self.spec.name!r}"
        response = await client.get(models_url)
        if response.status_code in (401, 403):
            await self._check_status(response, "?")
        if response.status_code != 200:
            raise UserError(f"{models_url} answered HTTP {response.status_code}; {hint}")
        try:
            names = [m["id"] for m in response.json()["data"]]
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{models_url} did not list models; {hint}") from None
        if len(names) != 1:
            raise UserError(f"{models_url} serves {len(names)} models ({', '.join(names[:5])}); {hint}")
        self.model_name = names[0]
        return names[0]

    async def _check_status(self, response: httpx.Response, model: str) -> None:
        code = response.status_code
        if code == 200:
            return
        detail = error_detail(await response.aread())
        if code in (401, 403):
            how = f"check {self.spec.api_key_env}" if self.spec.api_key_env else "set api_key_env to the variable holding the key"
            raise UserError(f"{self.url} refused the request (HTTP {code}: {detail}); {how}")
        if code == 404:
            raise UserError(
                f"{self.url} answered 404 ({detail}); check the model name {model!r} (remote_model) and the base URL"
            )
        raise UserError(f"{self.url} answered HTTP {code}: {detail}")

    async def _read_events(self, response: httpx.Response, emit) -> None:
        """Parse the SSE stream into Chunks; the final usage block corrects the token count."""
        counted, first_at, finished, usage = 0, None, False, None
        if "text/event-stream" not in response.headers.get("content-type", "text/event-stream"):
            raise UserError(f"{self.url} did not stream (content-type {response.headers.get('content-type')}); is it OpenAI-compatible?")
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue  # blank separators, comments (": ping"), event names
            data = line[5:].strip()
            if data == "[DONE]":
                finished = True
                break
            try:
                event = json.loads(data)
                if "error" in event:
                    raise UserError(f"{self.url} reported an error mid-reply: {error_detail(data.encode())}")
                choices = event.get("choices") or []
                delta = (choices[0].get("delta") or {}) if choices else {}
                text = delta.get("content") or ""
                if choices and choices[0].get("finish_reason"):
                    finished = True
                usage = event.get("usage") or usage
            except (ValueError, AttributeError, TypeError, IndexError):
                raise UserError(f"{self.url} sent a malformed chunk ({data[:80]!r}); is it an OpenAI-compatible server?") from None
            if text:
                if first_at is None:
                    first_at = time.perf_counter()
                counted += 1
                emit(Chunk(text=text, tokens=1, first_token_at=first_at))
        if not finished:
            raise UserError(f"{self.url} closed the stream before the reply ended; see the server's log")
        if usage:
            completion = usage.get("completion_tokens")
            extra = completion - counted if isinstance(completion, int) else 0
            emit(Chunk(text="", tokens=extra, first_token_at=first_at, prompt_tokens=usage.get("prompt_tokens")))
