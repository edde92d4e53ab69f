"""Local causal LMs through transformers, batched for CPU throughput.

On a CPU the 135M default model makes ~17 tokens/s one conversation at a time
but ~200 tokens/s at batch 32, so everything here is about batching well:
conversations are sorted by prompt length (less padding), left-padded (so all
rows continue from the same position), generated together, then put back in
the caller's order.

Loads any local causal-LM folder, a GGUF file, a LoRA adapter folder (peft; the
base comes from the adapter's ``base_model_name_or_path`` or from the folder
you pass), the embedded default (:meth:`TransformersLLM.default`), or an
already-built ``(model, tokenizer)`` pair so training code can wrap the policy
it is optimising. ``.model`` and ``.tokenizer`` are public for that reason.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from memory_agent.defaults import DEFAULT_MODEL_NAMES
from memory_agent.errors import BackendError, ModelNotFound
from memory_agent.llms.base import Messages, Usage, truncate_at_stop

__all__ = ["TransformersLLM", "pick_device", "set_cpu_threads"]

# Hub ids that mean "the embedded SmolLM2" when an adapter names its base:
# offline, we resolve them to the converted local copy instead of the hub.
_SMOLLM2_IDS = frozenset(DEFAULT_MODEL_NAMES)


def _cache_kwarg() -> str:
    # transformers 5.x renamed `past_key_values` to `cache` (the old name warns).
    import transformers

    return "cache" if int(transformers.__version__.split(".")[0]) >= 5 else "past_key_values"


_CACHE_KWARG = _cache_kwarg()


def set_cpu_threads(threads: int | None = None) -> int:
    """Pick torch's CPU thread count: explicit, ``$MEMORY_AGENT_THREADS``, or the idle cores.

    On a shared machine, more threads than idle cores is catastrophic: the
    OpenMP workers spin-wait for each other while other processes hold the
    cores (measured here: 104 s with 2 threads vs 9 s with 1 thread for the
    same batch at load 7 on 2 cores). So "auto" uses the cores not already
    busy, at least one.
    """
    import os

    import torch

    if threads is None and os.environ.get("MEMORY_AGENT_THREADS"):
        threads = int(os.environ["MEMORY_AGENT_THREADS"])
    if threads is None:
        cores = os.cpu_count() or 1
        busy = _busy_cores(cores)
        threads = max(1, min(cores, int(cores - busy + 0.5)))
    torch.set_num_threads(max(1, threads))
    return torch.get_num_threads()


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) jiffies from /proc/stat; None where there is no /proc (macOS, Windows)."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return fields[3] + (fields[4] if len(fields) > 4 else 0), sum(fields)


def _busy_cores(cores: int, window: float = 0.3) -> float:
    """Cores other processes keep busy right now.

    Sampled over ``window`` seconds: the 1-minute load average lags by about a
    minute, so a job started right after another one ended saw a "busy"
    machine and ran on one thread of two (measured on conv-41 ingest: 1.4 s per
    turn instead of 0.9). The load average is the fallback where /proc is missing.
    """
    import os

    first = _cpu_times()
    if first is None:
        try:
            return os.getloadavg()[0]
        except (AttributeError, OSError):  # not available on every platform
            return 0.0
    time.sleep(window)
    second = _cpu_times()
    if second is None or second[1] <= first[1]:
        return 0.0
    idle = (second[0] - first[0]) / (second[1] - first[1])
    return cores * (1.0 - idle)


def pick_device(device: str = "auto") -> str:
    """``auto`` -> cuda, then mps, then cpu."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _default_dtype(device: str):
    import torch

    # bf16 halves memory and is fast on GPUs; CPU bf16 matmuls are slow or
    # unsupported on many chips, so CPU stays float32.
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def _resolve_base(name: str) -> str:
    if name in _SMOLLM2_IDS:
        from memory_agent.embedded import ensure_smollm2

        return str(ensure_smollm2())
    return name


class TransformersLLM:
    """A local causal LM: ``LLM``, ``TokenCounting`` (its tokenizer) and ``UsageReporting``."""

    usage: Usage

    def __init__(
        self,
        path_or_model: Any,
        *,
        tokenizer: Any = None,
        device: str = "auto",
        dtype: Any = None,
        adapter: str | Path | None = None,
        batch_size: int = 32,
        gguf_file: str | None = None,
        threads: int | None = None,
    ):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.batch_size = batch_size
        self.usage = Usage()
        self.device = pick_device(device)
        self.dtype = dtype if dtype is not None else _default_dtype(self.device)
        self.name = "in-memory model"

        if isinstance(path_or_model, tuple) and len(path_or_model) == 2:
            path_or_model, tokenizer = path_or_model
        if isinstance(path_or_model, (str, Path)):
            if self.device == "cpu":
                set_cpu_threads(threads)
            model, tokenizer = self._load(Path(path_or_model), tokenizer, gguf_file, adapter)
        else:
            if tokenizer is None:
                raise BackendError("an in-memory model needs its tokenizer: TransformersLLM((model, tokenizer))")
            model = path_or_model
            if adapter is not None:
                model = self._with_adapter(model, Path(adapter))
            # An in-memory model (training's policy) stays where its owner put it.
            try:
                self.device = str(next(model.parameters()).device)
            except (StopIteration, AttributeError):
                pass
        self.model = model
        self.tokenizer = tokenizer
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.eval()
        # Reuse the KV cache of a prompt prefix shared by a whole batch (see _generate_chunk).
        self.share_prefix = True
        self._prefix_kv: dict[tuple[int, ...], Any] = {}

    # ------------------------------------------------------------------ loading
    @classmethod
    def default(cls, **kwargs: Any) -> "TransformersLLM":
        """The embedded SmolLM2-135M-Instruct (converted to a cached folder on first use)."""
        from memory_agent.embedded import ensure_smollm2

        llm = cls(ensure_smollm2(), **kwargs)
        llm.name = "default (SmolLM2-135M-Instruct)"
        return llm

    def _load(self, path: Path, tokenizer: Any, gguf_file: str | None, adapter: str | Path | None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = str(path)
        if path.is_file() and path.suffix == ".gguf":
            path, gguf_file = path.parent, path.name
        if not path.exists():
            raise ModelNotFound(f"no model at {path}")
        kwargs: dict[str, Any] = {"dtype": self.dtype}
        if gguf_file:
            kwargs["gguf_file"] = gguf_file
            if not (path / gguf_file).is_file():
                raise ModelNotFound(f"no GGUF file {gguf_file!r} in {path}")

        adapter_dir: Path | None = Path(adapter) if adapter is not None else None
        base_path: str = str(path)
        if (path / "adapter_config.json").is_file():
            # `path` itself is a LoRA checkpoint: find its base model.
            adapter_dir = path
            cfg = json.loads((path / "adapter_config.json").read_text())
            base = cfg.get("base_model_name_or_path")
            if not base:
                raise ModelNotFound(f"{path}/adapter_config.json names no base_model_name_or_path")
            base_path = _resolve_base(base)
            kwargs.pop("gguf_file", None)
        elif not gguf_file and not (path / "config.json").is_file():
            raise ModelNotFound(f"{path} is not a model folder (no config.json or adapter_config.json)")

        tok_source = adapter_dir if adapter_dir is not None and (adapter_dir / "tokenizer_config.json").is_file() else Path(base_path)
        try:
            if tokenizer is None:
                tok_kwargs = {"gguf_file": gguf_file} if kwargs.get("gguf_file") else {}
                tokenizer = AutoTokenizer.from_pretrained(tok_source, **tok_kwargs)
            model = AutoModelForCausalLM.from_pretrained(base_path, **kwargs)
        except OSError as exc:
            raise ModelNotFound(f"could not load a causal LM from {base_path}: {exc}") from exc
        if self.device != "cpu":
            model = model.to(self.device)
        if adapter_dir is not None:
            model = self._with_adapter(model, adapter_dir)
        return model, tokenizer

    @staticmethod
    def _with_adapter(model: Any, adapter_dir: Path):
        if not (adapter_dir / "adapter_config.json").is_file():
            raise ModelNotFound(f"{adapter_dir} is not a LoRA adapter folder (no adapter_config.json)")
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(adapter_dir))

    # --------------------------------------------------------------- generation
    def _encode_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        if getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):  # BatchEncoding in newer versions
                ids = ids["input_ids"]
            return list(ids)
        # No template (a bare base model): a plain transcript is the honest fallback.
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
        return self.tokenizer(text)["input_ids"]

    # ------------------------------------------------------- TokenCounting
    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        """Prompt length in tokens, as the model will see it (prompts are budgeted with this)."""
        return len(self._encode_prompt(messages))

    def count_text_tokens(self, text: str) -> int:
        """Tokens of plain text, no special tokens (the Answer Agent budgets memory lines with this)."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @property
    def context_window(self) -> int | None:
        """The model's context length: its config's ``max_position_embeddings``, else the tokenizer's limit."""
        n = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
        if isinstance(n, int) and n > 0:
            return n
        n = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(n, int) and 0 < n < 10_000_000:
            return n
        return None

    def generate(self, batch: list[Messages], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 stop: list[str] | None = None) -> list[str]:
        if not batch:
            return []
        encoded = [self._encode_prompt(m) for m in batch]
        # Sort by length so each chunk pads little; restore order at the end.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        outputs: list[str] = [""] * len(batch)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            texts = self._generate_chunk([encoded[i] for i in chunk], max_new_tokens, temperature, stop)
            for i, text in zip(chunk, texts):
                outputs[i] = text
        return outputs

    def _generate_chunk(self, prompts: list[list[int]], max_new_tokens: int, temperature: float, stop):
        import torch

        pad_id = self.tokenizer.pad_token_id
        eos_id = self.tokenizer.eos_token_id
        # Prompts of one pipeline step share a long prefix (system prompt + few-shot
        # example): on a CPU, prefill dominates, so that prefix is encoded once and
        # its KV cache reused by every row. Rows are laid out as
        # [prefix][left padding][own suffix]; the attention mask hides the padding
        # and generate() derives position ids from the mask, so every row sees
        # exactly the positions it would see alone.
        prefix = self._common_prefix(prompts) if self.share_prefix else 0
        suffixes = [p[prefix:] for p in prompts]
        width = max(len(s) for s in suffixes)
        n = len(prompts)
        input_ids = torch.full((n, prefix + width), pad_id, dtype=torch.long)
        attention = torch.zeros((n, prefix + width), dtype=torch.long)
        if prefix:
            input_ids[:, :prefix] = torch.tensor(prompts[0][:prefix], dtype=torch.long)
            attention[:, :prefix] = 1
        for row, suf in enumerate(suffixes):  # left-pad the suffixes: rows end together
            input_ids[row, prefix + width - len(suf) :] = torch.tensor(suf, dtype=torch.long)
            attention[row, prefix + width - len(suf) :] = 1
        device = self.device
        gen_kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "pad_token_id": pad_id,
            "eos_token_id": eos_id,
        }
        if temperature and temperature > 0:
            gen_kwargs.update(do_sample=True, temperature=float(temperature), top_p=1.0, top_k=0)
        else:
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if stop:
            # Ends generation early; the text is still truncated below because a
            # row keeps generating until the whole batch is done.
            gen_kwargs.update(stop_strings=list(stop), tokenizer=self.tokenizer)
        t0 = time.perf_counter()
        try:
            with torch.inference_mode():
                if prefix:
                    gen_kwargs[_CACHE_KWARG] = self._prefix_cache(tuple(prompts[0][:prefix]), n)
                out = self.model.generate(
                    input_ids=input_ids.to(device), attention_mask=attention.to(device), **gen_kwargs
                )
        except torch.cuda.OutOfMemoryError as exc:  # pragma: no cover - GPU only
            raise BackendError(f"out of GPU memory at batch size {n}; lower batch_size") from exc
        elapsed = time.perf_counter() - t0
        new = out[:, prefix + width :].tolist()
        texts = []
        completion = 0
        for row in new:
            # A finished row is filled with pad (= eos here): count up to the first eos/pad.
            used = len(row)
            for j, tok in enumerate(row):
                if tok == eos_id or tok == pad_id:
                    used = j + (1 if tok == eos_id else 0)
                    break
            completion += used
            texts.append(truncate_at_stop(self.tokenizer.decode(row[:used], skip_special_tokens=True), stop).strip())
        self.usage.prompt_tokens += sum(len(p) for p in prompts)
        self.usage.completion_tokens += completion
        self.usage.calls += 1
        self.usage.seconds += elapsed
        return texts

    # Below this many shared tokens, reusing a cache is not worth the bookkeeping.
    _MIN_SHARED_PREFIX = 24

    def _common_prefix(self, prompts: list[list[int]]) -> int:
        if len(prompts) < 2:
            return 0
        first = prompts[0]
        limit = min(len(p) for p in prompts) - 1  # every row keeps >= 1 token of its own
        k = 0
        while k < limit and all(p[k] == first[k] for p in prompts):
            k += 1
        return k if k >= self._MIN_SHARED_PREFIX else 0

    def _prefix_cache(self, prefix: tuple[int, ...], n: int):
        """KV cache of ``prefix`` repeated for ``n`` rows (the encoded prefix is memoised)."""
        import copy

        import torch

        cached = self._prefix_kv.get(prefix)
        if cached is None:
            ids = torch.tensor([list(prefix)], dtype=torch.long, device=self.device)
            out = self.model(input_ids=ids, use_cache=True)
            cached = out.cache if _CACHE_KWARG == "cache" else out.past_key_values
            if len(self._prefix_kv) >= 8:  # a handful of prompt templates at most
                self._prefix_kv.pop(next(iter(self._prefix_kv)))
            self._prefix_kv[prefix] = cached
        cache = copy.deepcopy(cached)  # generate() extends the cache in place
        cache.batch_repeat_interleave(n)
        return cache

    def __repr__(self) -> str:
        return f"TransformersLLM({self.name!r}, device={self.device!r}, batch_size={self.batch_size})"
