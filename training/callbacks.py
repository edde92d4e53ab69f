"""Per-step training metrics: ``metrics.csv``, ``reward_curve.png`` and a progress line with ETA.

GRPO fails quietly: the reward can plateau because every group has the same
reward (no signal: ``frac_reward_zero_std`` near 1), because the policy
stopped writing valid output, because the entropy collapsed, or because the
adapter simply does not move. So every logged step records TRL's reward
mean/std, ``frac_reward_zero_std``, entropy and KL; the rewards' own
:class:`~training.rewards.RewardStats` (valid rate, operation mix, reward
components); and the norm of the LoRA update since GRPO started
(``lora_update_norm``: the Frobenius norm of the change of every adapted
weight ``scale * B @ A``, summed in quadrature). It starts at 0 and grows
only if GRPO changes the policy. The CSV is rewritten whole on each log, so
it is always a valid file, even when a run is killed.
"""

from __future__ import annotations

import csv
import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

__all__ = ["MetricsCallback", "COLUMNS", "plot_metrics", "read_metrics", "lora_delta", "lora_update_norm"]

#: Fixed CSV columns; the rewards' own statistics are appended after them.
COLUMNS = (
    "step", "reward", "reward_std", "frac_reward_zero_std", "valid_rate", "lora_update_norm", "lora_norm",
    "completion_length", "clipped_ratio", "kl", "entropy", "loss", "learning_rate", "step_seconds",
)
# Our column -> the keys TRL 1.x logs it under, first found wins.
_SOURCES: dict[str, tuple[str, ...]] = {
    "reward": ("reward",),
    "reward_std": ("reward_std",),
    "frac_reward_zero_std": ("frac_reward_zero_std",),
    "completion_length": ("completions/mean_length", "completion_length"),
    "clipped_ratio": ("completions/clipped_ratio",),
    "kl": ("kl",),
    "entropy": ("entropy",),
    "loss": ("loss",),
    "learning_rate": ("learning_rate",),
}


def _num(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def lora_delta(model: Any) -> dict[str, Any]:
    """Each LoRA-adapted module's weight change ``scale * B @ A`` (CPU float32 tensors)."""
    import torch

    out = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            a, b = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
            if not isinstance(a, torch.nn.ModuleDict) or "default" not in a:
                continue
            scale = module.scaling["default"]
            out[name] = (b["default"].weight.float() @ a["default"].weight.float() * scale).cpu()
    return out


def lora_update_norm(now: Mapping[str, Any], start: Mapping[str, Any] | None = None) -> float:
    """Frobenius norm of ``now - start`` over all modules (``start=None``: of ``now``)."""
    total = 0.0
    for name, delta in now.items():
        diff = delta - start[name] if start is not None else delta
        total += float((diff * diff).sum())
    return math.sqrt(total)


class MetricsCallback(TrainerCallback):
    """One row per logged step to ``out_dir/metrics.csv``; plots at the end; echoes progress to stderr."""

    def __init__(self, out_dir: str | Path, stats: Mapping[str, Any] | None = None, plot: bool = True,
                 echo: bool = True):
        self.out_dir = Path(out_dir)
        self.stats = dict(stats or {})
        self.plot = plot
        self.echo = echo
        self.rows: list[dict[str, Any]] = []
        self._step_start: float | None = None
        self._step_seconds: list[float] = []
        self._pending_seconds: list[float] = []
        self._lora_start: dict[str, Any] | None = None

    # -- timing and the adapter at the start -----------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None:
            self._lora_start = lora_delta(model) or None

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._step_start is not None:
            seconds = time.perf_counter() - self._step_start
            self._step_seconds.append(seconds)
            self._pending_seconds.append(seconds)
            self._step_start = None

    @property
    def step_seconds(self) -> list[float]:
        return list(self._step_seconds)

    # -- logging ----------------------------------------------------------------------
    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        logs = logs or {}
        if not any(key in logs for sources in _SOURCES.values() for key in sources if key != "learning_rate"):
            return  # e.g. the final train summary (train_runtime, ...)
        row: dict[str, Any] = {"step": state.global_step}
        for column, keys in _SOURCES.items():
            row[column] = next((_num(logs[k]) for k in keys if k in logs), None)
        for stats in self.stats.values():
            row.update({k: round(v, 6) for k, v in stats.window().items()})
        if model is not None and self._lora_start is not None:
            now = lora_delta(model)
            row["lora_update_norm"] = lora_update_norm(now, self._lora_start)
            row["lora_norm"] = lora_update_norm(now)
        row["step_seconds"] = (sum(self._pending_seconds) / len(self._pending_seconds)
                               if self._pending_seconds else None)
        self._pending_seconds.clear()
        self.rows.append(row)
        self._write()
        if self.echo:
            self._echo(row, state)

    def _echo(self, row: dict[str, Any], state: Any) -> None:
        shown = ", ".join(f"{k}={row[k]:.3g}" for k in ("reward", "reward_std", "frac_reward_zero_std", "valid_rate",
                                                         "lora_update_norm", "entropy") if row.get(k) is not None)
        eta = ""
        if self._step_seconds and state.max_steps:
            left = (state.max_steps - state.global_step) * sum(self._step_seconds) / len(self._step_seconds)
            eta = f", ETA {int(left // 60)}m{int(left % 60):02d}s"
        print(f"GRPO step {row['step']}/{state.max_steps}: {shown}{eta}", file=sys.stderr, flush=True)

    def on_train_end(self, args, state, control, **kwargs):
        self._write()
        if self.plot and self.rows:
            plot_metrics(self.rows, self.out_dir / "reward_curve.png")

    def _columns(self) -> list[str]:
        extra = sorted({k for r in self.rows for k in r} - set(COLUMNS))
        return [*COLUMNS, *extra]

    def _write(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.out_dir / "metrics.csv.tmp"
        columns = self._columns()
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in columns})
        tmp.replace(self.out_dir / "metrics.csv")


def read_metrics(path: str | Path) -> list[dict[str, float | None]]:
    """``metrics.csv`` back as a list of rows (empty cells -> None)."""
    with Path(path).open(newline="") as fh:
        return [{k: _num(v) if v != "" else None for k, v in row.items()} for row in csv.DictReader(fh)]


def plot_metrics(rows: list[Mapping[str, Any]], path: str | Path, title: str | None = None) -> Path:
    """Three panels against the step: reward (± std) and valid rate; signal (zero-std groups) and
    operation mix; the LoRA update norm and entropy."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on training machines
    import matplotlib.pyplot as plt

    def series(name: str) -> tuple[list[float], list[float]]:
        xs, ys = [], []
        for r in rows:
            y = _num(r.get(name))
            if y is not None:
                xs.append(float(r["step"]))
                ys.append(y)
        return xs, ys

    fig, (top, mid, bottom) = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    xs, ys = series("reward")
    if xs:
        top.plot(xs, ys, marker="o", ms=3, label="reward (mean)")
        _, std = series("reward_std")
        if len(std) == len(ys):
            top.fill_between(xs, [y - s for y, s in zip(ys, std)], [y + s for y, s in zip(ys, std)], alpha=0.2)
    vx, vy = series("valid_rate")
    if vx:
        top.plot(vx, vy, marker=".", linestyle="--", label="valid-output rate")
    top.set_ylabel("reward / rate")
    top.legend(loc="best", fontsize=8)
    top.grid(alpha=0.3)
    for name, style in (("frac_reward_zero_std", "k-"), ("ops_add", "b:"), ("ops_update", "g:"),
                        ("ops_delete", "r:"), ("ops_noop", "m:")):
        x, y = series(name)
        if x:
            mid.plot(x, y, style, label=name.replace("_", " "))
    mid.set_ylabel("share of samples")
    mid.set_ylim(-0.05, 1.05)
    mid.legend(loc="best", fontsize=8, ncol=3)
    mid.grid(alpha=0.3)
    lx, ly = series("lora_update_norm")
    if lx:
        bottom.plot(lx, ly, marker="o", ms=3, color="tab:purple", label="LoRA update norm since GRPO start")
    bottom.set_ylabel("||dW||_F")
    bottom.legend(loc="upper left", fontsize=8)
    ex, ey = series("entropy")
    if ex:
        twin = bottom.twinx()
        twin.plot(ex, ey, color="tab:green", alpha=0.6, label="entropy")
        twin.set_ylabel("entropy (nats/token)")
        twin.legend(loc="lower right", fontsize=8)
    bottom.set_xlabel("step")
    bottom.grid(alpha=0.3)
    fig.suptitle(title or "GRPO training")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
