"""Turn a model spec string into an LLM, loading each model once per process.

Specs: ``default`` (embedded SmolLM2; also ``smollm2`` and the other names of
:data:`memory_agent.defaults.DEFAULT_MODEL_NAMES`), a model folder or LoRA adapter folder,
a ``.gguf`` file, ``openai:MODEL@http://host:port/v1``, ``scripted:FILE.json``
(canned replies, for reproducible demos and CLI tests), ``echo`` (a
deterministic rule-following model for service tests and benchmarks), or any object that
already has ``generate`` (returned unchanged). Loaded models are cached by
spec, because the extraction, manager and answer roles usually share one
model and loading it three times would triple memory and start-up time.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

from memory_agent.defaults import DEFAULT_MODEL_NAMES
from memory_agent.errors import ConfigError, ModelNotFound
from memory_agent.llms.base import LLM

__all__ = ["resolve_llm", "BACKENDS", "clear_cache"]


def _default(_: str) -> LLM:
    from memory_agent.llms.transformers_backend import TransformersLLM

    return TransformersLLM.default()


def _local(spec: str) -> LLM:
    from memory_agent.llms.transformers_backend import TransformersLLM

    return TransformersLLM(Path(spec).expanduser())


def _openai(spec: str) -> LLM:
    from memory_agent.llms.openai_backend import OpenAICompatibleLLM

    body = spec[len("openai:") :]
    model, sep, url = body.partition("@")
    if not sep or not model or not url.startswith(("http://", "https://")):
        raise ConfigError(f"bad OpenAI spec {spec!r}; expected openai:MODEL@http://host:port/v1")
    return OpenAICompatibleLLM(model, url)


def _scripted(spec: str) -> LLM:
    """``scripted:FILE.json``: canned replies for reproducible demos and CLI tests.

    The file holds a JSON list of replies or ``{"replies": [...], "default": "..."}``.
    """
    import json

    from memory_agent.llms.scripted import ScriptedLLM

    path = Path(spec[len("scripted:") :]).expanduser()
    if not path.is_file():
        raise ModelNotFound(f"no script file at {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not JSON: {exc}") from exc
    if isinstance(data, list):
        data = {"replies": data}
    replies, default = data.get("replies", []), data.get("default")
    if not isinstance(replies, list) or not all(isinstance(r, str) for r in replies) or not (
        default is None or isinstance(default, str)
    ):
        raise ConfigError(f"{path}: expected a list of strings or {{'replies': [...], 'default': str}}")
    return ScriptedLLM(replies, default=default)


def _echo(spec: str) -> LLM:
    from memory_agent.llms.echo import EchoLLM

    _, _, delay = spec.partition(":")
    try:
        seconds = float(delay) if delay else 0.0
    except ValueError:
        raise ConfigError(f"bad echo spec {spec!r}; use echo or echo:SECONDS") from None
    if not 0 <= seconds <= 60:
        raise ConfigError(f"echo delay must be 0-60 seconds, got {seconds}")
    return EchoLLM(seconds)


# Backend name -> factory taking the spec string. Plain dict so callers can list them.
BACKENDS: dict[str, Callable[[str], LLM]] = {
    "default": _default,
    "echo": _echo,
    "transformers": _local,
    "openai": _openai,
    "scripted": _scripted,
}

_cache: dict[str, LLM] = {}
_lock = threading.Lock()


def _backend_for(spec: str) -> tuple[str, str]:
    if spec in DEFAULT_MODEL_NAMES:  # one cache entry for every name of the embedded model
        return "default", "default"
    if spec == "echo" or spec.startswith("echo:"):
        return "echo", spec
    if spec.startswith("openai:"):
        return "openai", spec
    if spec.startswith("scripted:"):
        return "scripted", spec
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return "transformers", str(path.resolve())
    if path.is_dir():
        if (path / "config.json").is_file() or (path / "adapter_config.json").is_file():
            return "transformers", str(path.resolve())
        raise ModelNotFound(f"{spec!r} is a folder but holds no model (no config.json or adapter_config.json)")
    if path.suffix == ".gguf" or "/" in spec or spec.startswith("."):
        raise ModelNotFound(f"no model at {spec!r}")
    raise ConfigError(
        f"unknown model spec {spec!r}; use 'default', a model folder, a .gguf file, openai:MODEL@URL or echo"
    )


def resolve_llm(spec: Any) -> LLM:
    """Spec string or LLM object -> LLM (cached per spec within the process)."""
    if not isinstance(spec, (str, Path)):
        if callable(getattr(spec, "generate", None)):
            return spec
        raise ConfigError(f"not an LLM or model spec: {spec!r}")
    spec = str(spec).strip()
    if not spec:
        raise ConfigError("empty model spec")
    backend, key = _backend_for(spec)
    if backend == "scripted":  # a script is consumed as it is used: never share one
        return BACKENDS[backend](key)
    with _lock:  # two threads asking for one model must not load it twice
        if key not in _cache:
            _cache[key] = BACKENDS[backend](key)
        return _cache[key]


def clear_cache() -> None:
    """Forget loaded models (tests; freeing memory)."""
    with _lock:
        _cache.clear()
