"""Any OpenAI-compatible ``/v1/chat/completions`` server (vLLM, llama.cpp server, OpenAI...).

Plain httpx, no SDK: one POST per conversation, a thread pool bounds how many
are in flight, and transient failures (429, 5xx, timeouts, dropped
connections) are retried with exponential backoff. After the last retry the
call raises :class:`~memory_agent.errors.BackendError`; a failure is never
turned into an empty completion.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from memory_agent.errors import BackendError
from memory_agent.llms.base import Messages, Usage, truncate_at_stop

__all__ = ["OpenAICompatibleLLM"]

_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAICompatibleLLM:
    """An ``/v1/chat/completions`` server: :class:`~memory_agent.llms.base.LLM` and ``UsageReporting``
    (the server's own token counts). It has no tokenizer, so it is not ``TokenCounting``:
    prompts are budgeted with :func:`~memory_agent.llms.base.approx_tokens`."""

    usage: Usage

    def __init__(
        self,
        model: str,
        base_url: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60,
        max_retries: int = 3,
        concurrency: int = 8,
        backoff: float = 0.5,
    ):
        self.model = model
        base = base_url.rstrip("/")
        # Accept both ".../v1" and a bare host: the endpoint is always /v1/chat/completions.
        self.url = base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_retries = max_retries
        self.concurrency = max(1, concurrency)
        self.backoff = backoff
        self.usage = Usage()
        self.name = f"openai:{model}@{base_url}"

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _one(self, client: httpx.Client, messages: list[dict[str, str]], body: dict[str, Any]) -> tuple[str, dict]:
        payload = dict(body, messages=messages)
        last: str = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                resp = client.post(self.url, json=payload, headers=self._headers())
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status_code in _RETRY_STATUS:
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                continue
            if resp.status_code >= 400:
                raise BackendError(f"{self.url} answered HTTP {resp.status_code}: {resp.text[:300]}")
            try:
                data = resp.json()
                text = data["choices"][0]["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise BackendError(f"{self.url} returned an unexpected response: {resp.text[:300]}") from exc
            return text, data.get("usage") or {}
        raise BackendError(f"{self.url} failed after {self.max_retries + 1} attempts ({last})")

    def generate(self, batch: list[Messages], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 stop: list[str] | None = None) -> list[str]:
        if not batch:
            return []
        body: dict[str, Any] = {"model": self.model, "max_tokens": max_new_tokens, "temperature": temperature}
        if stop:
            body["stop"] = list(stop)[:4]  # the OpenAI API accepts at most 4
        t0 = time.perf_counter()
        with httpx.Client(timeout=self.timeout) as client:
            if len(batch) == 1:
                results = [self._one(client, batch[0], body)]
            else:
                with ThreadPoolExecutor(max_workers=min(self.concurrency, len(batch))) as pool:
                    results = list(pool.map(lambda m: self._one(client, m, body), batch))
        self.usage.calls += 1
        self.usage.seconds += time.perf_counter() - t0
        for _, u in results:
            self.usage.prompt_tokens += int(u.get("prompt_tokens", 0) or 0)
            self.usage.completion_tokens += int(u.get("completion_tokens", 0) or 0)
        return [truncate_at_stop(text, stop).strip() for text, _ in results]

    def __repr__(self) -> str:
        return f"OpenAICompatibleLLM({self.model!r}, {self.url!r})"
