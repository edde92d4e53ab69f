"""The trained policies that ship with the package: the product's default manager and answer agent.

Two small LoRA adapters over the embedded SmolLM2-135M-Instruct, trained by
this project's CPU recipes (``memory-agent train policies``): ``manager/``
(GRPO with the dense recall reward, after a cold start on gold edits) and
``answer/`` (GRPO with the F1 reward). ``scores.json`` records their
validation at training time, so a retrain can be compared with them.

Whose model: :func:`role_specs` decides what each role runs. The adapters are
for the embedded model only: with ``llm="default"`` and ``policy="default"``
the manager and the answer agent use them; ``policy=None`` (``--untrained``)
uses the plain embedded model everywhere; a folder with ``manager/`` and
``answer/`` subfolders (what ``memory-agent train policies --out DIR``
writes) uses those. Explicit ``manager_llm``/``answer_llm`` always win, and
any other ``llm`` is used as given. Extraction always runs the base model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from memory_agent.errors import ConfigError

__all__ = ["POLICY_DIR", "ROLES", "shipped", "shipped_scores", "role_specs"]

POLICY_DIR = Path(__file__).resolve().parent
ROLES = ("manager", "answer")


def shipped(role: str) -> Path | None:
    """The packaged adapter folder of ``role``, or None when this installation has none."""
    if role not in ROLES:
        raise ConfigError(f"unknown policy role {role!r}; use one of {ROLES}")
    folder = POLICY_DIR / role
    return folder if (folder / "adapter_model.safetensors").is_file() else None


def shipped_scores() -> dict[str, Any]:
    """Validation of the shipped adapters when they were trained (``scores.json``)."""
    path = POLICY_DIR / "scores.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _from_folder(folder: Path, role: str) -> str:
    sub = folder / role
    if not (sub / "adapter_config.json").is_file():
        raise ConfigError(f"policy folder {folder} has no {role}/ adapter (adapter_config.json)")
    return str(sub)


def role_specs(llm: Any, manager_llm: Any, answer_llm: Any, policy: Any) -> tuple[Any, Any]:
    """``(manager spec, answer spec)`` for ``Memory``; ``None`` means "the same as ``llm``"."""
    if policy is None:
        return manager_llm, answer_llm
    embedded = isinstance(llm, str) and llm == "default"
    if policy == "default":
        if not embedded:  # the shipped adapters fit the embedded model only; another model runs as given
            return manager_llm, answer_llm
        return (manager_llm if manager_llm is not None else str(_shipped_or_fail("manager")),
                answer_llm if answer_llm is not None else str(_shipped_or_fail("answer")))
    if not embedded:
        raise ConfigError(f"policy folder {policy!r} holds adapters for the embedded model, but llm is {llm!r}: "
                          "pass the adapters as manager_llm / answer_llm instead")
    folder = Path(str(policy)).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"unknown policy {policy!r}: use 'default', None or a folder with manager/ and answer/")
    return (manager_llm if manager_llm is not None else _from_folder(folder, "manager"),
            answer_llm if answer_llm is not None else _from_folder(folder, "answer"))


def _shipped_or_fail(role: str) -> Path:
    path = shipped(role)
    if path is None:
        raise ConfigError(f"this installation has no shipped {role} policy ({POLICY_DIR / role}); "
                          "use policy=None (--untrained) or a policy folder")
    return path
