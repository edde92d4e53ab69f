"""Per-step training metrics: ``metrics.csv`` and ``reward_curve.png``.

GRPO runs fail quietly: the reward can plateau because every group has the
same reward (no signal), because the policy stopped emitting parseable output,
or because the entropy collapsed. So every logged step records the reward
mean/std, the valid-output rate (from the rewards' counters), the completion
length, the KL to the reference and the policy entropy, and the plot shows
them side by side. The CSV is rewritten whole on each log so it is always a
valid file, even when a run is killed.
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

__all__ = ["MetricsCallback", "COLUMNS", "plot_metrics", "read_metrics"]

#: CSV columns; ``valid_rate`` comes from our counters, the rest from TRL's logs.
COLUMNS = (
    "step",
    "reward",
    "reward_std",
    "valid_rate",
    "completion_length",
    "kl",
    "entropy",
    "loss",
    "learning_rate",
    "frac_reward_zero_std",
    "step_seconds",
)
# Our column -> the keys TRL 1.x may log it under, first found wins.
_SOURCES: dict[str, tuple[str, ...]] = {
    "reward": ("reward",),
    "reward_std": ("reward_std",),
    "completion_length": ("completions/mean_length", "completion_length"),
    "kl": ("kl",),
    "entropy": ("entropy",),
    "loss": ("loss",),
    "learning_rate": ("learning_rate",),
    "frac_reward_zero_std": ("frac_reward_zero_std",),
}


def _num(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


class MetricsCallback(TrainerCallback):
    """Writes one row per logged step to ``out_dir/metrics.csv``; plots at the end.

    ``counters`` are :class:`~training.rewards.OutputCounter` objects; the
    valid-output rate of a step is the pooled rate of their windows.
    """

    def __init__(
        self, out_dir: str | Path, counters: Mapping[str, Any] | None = None, plot: bool = True, echo: bool = True
    ):
        self.out_dir = Path(out_dir)
        self.counters = dict(counters or {})
        self.plot = plot
        self.echo = echo
        self.rows: list[dict[str, Any]] = []
        self._step_start: float | None = None
        self._step_seconds: list[float] = []
        self._pending_seconds: list[float] = []
        self._seen: dict[str, tuple[int, int]] = {}

    # -- timing -----------------------------------------------------------------------
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
    def _valid_rate(self) -> float | None:
        """Pooled valid rate of all counters since the previous log (counts, not a mean of rates)."""
        valid = total = 0
        for name, counter in self.counters.items():
            seen_valid, seen_total = self._seen.get(name, (0, 0))
            valid += counter.valid - seen_valid
            total += counter.total - seen_total
            self._seen[name] = (counter.valid, counter.total)
        return valid / total if total else None

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if not any(key in logs for sources in _SOURCES.values() for key in sources if key != "learning_rate"):
            return  # e.g. the final train summary (train_runtime, ...)
        row: dict[str, Any] = {"step": state.global_step}
        for column, keys in _SOURCES.items():
            row[column] = next((_num(logs[k]) for k in keys if k in logs), None)
        row["valid_rate"] = self._valid_rate()
        row["step_seconds"] = (
            sum(self._pending_seconds) / len(self._pending_seconds) if self._pending_seconds else None
        )
        self._pending_seconds.clear()
        self.rows.append(row)
        self._write()
        if self.echo:
            shown = ", ".join(
                f"{k}={row[k]:.3g}" for k in ("reward", "reward_std", "valid_rate", "entropy", "kl", "step_seconds")
                if row.get(k) is not None
            )
            print(f"step {row['step']}/{state.max_steps}: {shown}", file=sys.stderr, flush=True)

    def on_train_end(self, args, state, control, **kwargs):
        self._write()
        if self.plot and self.rows:
            plot_metrics(self.rows, self.out_dir / "reward_curve.png")

    def _write(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.out_dir / "metrics.csv.tmp"
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in COLUMNS})
        tmp.replace(self.out_dir / "metrics.csv")


def read_metrics(path: str | Path) -> list[dict[str, float | None]]:
    """``metrics.csv`` back as a list of rows (empty cells -> None)."""
    with Path(path).open(newline="") as fh:
        return [{k: _num(v) if v != "" else None for k, v in row.items()} for row in csv.DictReader(fh)]


def plot_metrics(rows: list[Mapping[str, Any]], path: str | Path, title: str | None = None) -> Path:
    """Reward (± std) and valid rate, plus entropy and KL, against the step."""
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

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    xs, ys = series("reward")
    if xs:
        top.plot(xs, ys, marker="o", label="reward (mean)")
        _, std = series("reward_std")
        if len(std) == len(ys):
            top.fill_between(xs, [y - s for y, s in zip(ys, std)], [y + s for y, s in zip(ys, std)], alpha=0.2)
    vx, vy = series("valid_rate")
    if vx:
        top.plot(vx, vy, marker=".", linestyle="--", label="valid-output rate")
    top.set_ylabel("reward / rate")
    top.set_ylim(-0.05, 1.05)
    top.legend(loc="best")
    top.grid(alpha=0.3)
    ex, ey = series("entropy")
    if ex:
        bottom.plot(ex, ey, marker="o", color="tab:green", label="entropy")
    bottom.set_ylabel("entropy (nats/token)")
    bottom.ticklabel_format(axis="y", useOffset=False)
    kx, ky = series("kl")
    if kx:
        twin = bottom.twinx()
        twin.plot(kx, ky, marker=".", color="tab:red", label="KL")
        twin.set_ylabel("KL")
        twin.legend(loc="upper right")
    bottom.legend(loc="upper left")
    bottom.set_xlabel("step")
    bottom.grid(alpha=0.3)
    fig.suptitle(title or "GRPO training")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
