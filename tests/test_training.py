"""GRPO smoke runs on a tiny random model built here (no download, a few seconds).

The model is a 1-layer Llama with hidden size 16 and a WordLevel tokenizer
whose vocabulary contains the answer marker, so random sampling sometimes
produces a "valid" answer. A text-hash reward is added next to ours so that the
two completions of a group differ in reward (otherwise GRPO's advantage is 0
and nothing moves). Checked: the reward functions are called, the weights
change, metrics.csv / reward_curve.png / the checkpoint are written, and the
checkpoint loads back through ``resolve_llm`` into ``Memory``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")

@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny matmuls on a shared CPU: thread hand-offs cost 100x the math; use one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


WORDS = (
    "**Answer:** yes no paris london red blue caroline melanie went to the park on may 7 2023 "
    "she he painted a sunrise lake ADD UPDATE DELETE NOOP memory fact user assistant system"
).split()


def _tiny_tokenizer():
    """The embedded SmolLM2 tokenizer when its cached folder exists (no download), else a WordLevel one.

    The real tokenizer matters for the Memory test: the pipeline stops the
    manager at a blank line, and transformers' stop strings need a
    byte-level vocabulary.
    """
    from memory_agent.embedded import smollm2_cache_path, smollm2_is_cached

    if smollm2_is_cached():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(smollm2_cache_path())
    return _wordlevel_tokenizer()


def _wordlevel_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<pad>", "<eos>", "<|im_start|>", "<|im_end|>"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(set(WORDS)))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="<eos>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tok.chat_template = (
        "{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
        "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
    )
    return tok


def _tiny_model_folder(path: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _tiny_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _answer_dataset(n: int = 4):
    from datasets import Dataset

    rows = [
        {
            "prompt": [{"role": "user", "content": "where did caroline go on may 7"}],
            "question": "where did caroline go",
            "answer": "the park",
        }
        for _ in range(n)
    ]
    return Dataset.from_list(rows)


def _config(out: Path, **overrides):
    from training.config import load_config

    values = dict(
        task="answer",
        output_dir=str(out / "trainer"),
        device="cpu",
        max_steps=2,
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=6,
        learning_rate=5e-2,
        temperature=1.0,
        seed=0,
        beta=0.0,
        lora_r=4,
        lora_alpha=8,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    values.update(overrides)
    return load_config(None, **values)


def _text_reward(completions, **kwargs):
    """Different texts get different rewards (a CRC), so every group has a nonzero advantage."""
    import zlib

    from training.rewards import completion_text

    return [zlib.crc32(completion_text(c).encode()) % 1000 / 1000 for c in completions]


class _Spy:
    """Wraps a reward to record that TRL called it, keeping its name."""

    def __init__(self, fn):
        self.fn = fn
        self.calls = 0
        self.__name__ = getattr(fn, "__name__", "spy")

    def __call__(self, completions, **kwargs):
        self.calls += 1
        return self.fn(completions, **kwargs)


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One LoRA run and one full fine-tuning run, shared by the tests below."""
    from training.rewards import AnswerReward, OutputCounter
    from training.trainer import run_grpo

    root = tmp_path_factory.mktemp("grpo")
    base = _tiny_model_folder(root / "base")
    results = {}
    for kind, use_lora in (("lora", True), ("full", False)):
        out = root / kind
        counter = OutputCounter()
        answer = _Spy(AnswerReward("f1", counter=counter))
        length = _Spy(_text_reward)
        cfg = _config(out, use_lora=use_lora)
        from training.trainer import build_grpo_trainer  # noqa: F401  (import cost outside the timing)

        captured = {}

        class _Capture:
            def on_train_begin(self, args, state, control, model=None, **kw):
                captured["before"] = _state(model)

            def __getattr__(self, name):  # every other callback event: no-op
                return lambda *a, **k: None

        trainer, result = run_grpo(
            cfg,
            _answer_dataset(),
            [answer, length],
            out,
            counters={"answer": counter},
            model=str(base),
            extra_callbacks=[_Capture()],
        )
        results[kind] = dict(
            out=out,
            base=base,
            trainer=trainer,
            result=result,
            spies=(answer, length),
            counter=counter,
            before=captured["before"],
            after=_state(trainer.model),
        )
    return results


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_reward_functions_called_and_weights_change(runs, kind):
    run = runs[kind]
    answer, length = run["spies"]
    assert answer.calls >= 2 and length.calls >= 2
    assert run["counter"].total == answer.calls * 2  # 1 prompt x 2 generations per step
    changed = [k for k in run["before"] if not torch.equal(run["before"][k], run["after"][k])]
    assert changed, "no trainable weight changed"
    if kind == "lora":
        assert all("lora_" in k for k in run["before"])


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_outputs_written(runs, kind):
    from training.callbacks import read_metrics

    run = runs[kind]
    out = run["out"]
    rows = read_metrics(out / "metrics.csv")
    assert [r["step"] for r in rows] == [1.0, 2.0]
    assert all(r["reward"] is not None and r["valid_rate"] is not None for r in rows)
    assert all(r["entropy"] is not None and r["step_seconds"] is not None for r in rows)
    assert (out / "reward_curve.png").stat().st_size > 1000
    summary = run["result"].summary()
    assert summary["steps"] == 2 and summary["reward_first"] is not None
    if kind == "lora":
        cfg = json.loads((out / "adapter_config.json").read_text())
        assert cfg["base_model_name_or_path"] == str(Path(run["base"]).resolve())
        assert (out / "adapter_model.safetensors").is_file()
    else:
        assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_checkpoint_loads_with_resolve_llm(runs, kind):
    llms = pytest.importorskip("memory_agent.llms")
    llm = llms.resolve_llm(str(runs[kind]["out"]))
    (reply,) = llm.generate([[{"role": "user", "content": "where did caroline go"}]], max_new_tokens=3)
    assert isinstance(reply, str)
    # the trained weights, not the base: compare one trainable tensor
    trained = dict(runs[kind]["trainer"].model.named_parameters())
    loaded = dict(llm.model.named_parameters())
    key = next(k for k in runs[kind]["after"] if k in loaded)
    assert torch.allclose(loaded[key].float(), trained[key].detach().float())


# ------------------------------------------------------------------ the CLI, end to end
@pytest.fixture(scope="module")
def cli_runs(runs, tmp_path_factory):
    """``memory-agent train answer|manager`` on the tiny model (LLM-free banks, 1 step each)."""
    from click.testing import CliRunner

    from memory_agent.cli import cli

    import yaml

    from training.config import read_recipe

    base = str(runs["lora"]["base"])
    root = tmp_path_factory.mktemp("cli")
    # The CPU recipe, shrunk: the point is the wiring, not the learning.
    recipe = dict(read_recipe("cpu_smollm2.yaml"), max_completion_length=8, num_generations=2,
                  per_device_train_batch_size=2, gradient_accumulation_steps=1, retrieve_k=8, max_episodes=4)
    (root / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    out = {}
    for task in ("manager", "answer"):
        target = root / task
        args = [
            "train", task, "--data", "synthetic:2", "--val", "synthetic:1:9", "--val-limit", "2",
            "--out", str(target), "--config", str(root / "tiny.yaml"), "--max-steps", "1",
            "--model", base, "--answer-model", base, "--embedder", "hashing", "--bank-source", "observations",
            "--device", "cpu",
        ] + (["--cold-start", "--cold-start-steps", "1", "--cold-start-examples", "3", "--learning-rate", "1e-4"]
             if task == "answer" else [])
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        out[task] = (target, result.output)
    return out


@pytest.mark.parametrize("task", ["manager", "answer"])
def test_cli_train_writes_summary(cli_runs, task):
    target, output = cli_runs[task]
    assert f"trained {task}: 1 steps" in output
    summary = json.loads((target / "train_summary.json").read_text())
    assert summary["task"] == task and summary["steps"] == 1
    assert summary["episodes"] > 0 and summary["checkpoint_loads"] is True
    for key in ("wall_seconds", "seconds_per_step_mean", "reward_first", "valid_rate_first", "val_before", "val_after"):
        assert summary[key] is not None, key
    assert summary["val_before"]["n"] == 2
    if task == "answer":  # trained with --cold-start: validated before it, after it and at the end
        assert summary["cold_start"]["steps"] == 1 and summary["val_after_cold_start"]["n"] == 2
        assert summary["cold_start"]["examples"] == min(3, summary["episodes"])  # --cold-start-examples
        assert summary["config"]["learning_rate"] == 1e-4  # --learning-rate
        assert (target / "cold_start" / "cold_start.json").is_file()
    assert (target / "metrics.csv").is_file() and (target / "reward_curve.png").is_file()
    assert (target / "adapter_config.json").is_file()


def test_checkpoints_plug_into_memory(cli_runs, scripted, tmp_path):
    """A trained manager/answer folder is what Memory takes as manager_llm / answer_llm."""
    pytest.importorskip("memory_agent.memory")
    from memory_agent.embedded import smollm2_is_cached

    if not smollm2_is_cached():
        pytest.skip("stop strings need a byte-level tokenizer; run `memory-agent setup` first")
    from memory_agent.llms import resolve_llm
    from memory_agent.memory import Memory
    from memory_store import HashingEmbedder, MemoryStore

    manager = resolve_llm(str(cli_runs["manager"][0]))
    answer = resolve_llm(str(cli_runs["answer"][0]))
    extract = scripted(default="- Maya lives in Lyon")
    store = MemoryStore(tmp_path / "m", embedder=HashingEmbedder(64))
    with Memory(store, extract_llm=extract, manager_llm=manager, answer_llm=answer) as mem:
        assert mem.manager_llm is manager and mem.answer_llm is answer
        mem.add([{"speaker": "Maya", "text": "I live in Lyon."}], user_id="u", timestamp="2023-05-01")
        mem.add([{"speaker": "Maya", "text": "I still live in Lyon."}], user_id="u", timestamp="2023-05-02")
        reply = mem.answer("Where does Maya live?", user_id="u")
    assert isinstance(reply.raw, str)  # the tiny model's text; parsed and counted, whatever it is


@pytest.mark.parametrize(
    "n_items, n, picked",
    [(10, 20, list(range(10))), (10, 10, list(range(10))), (10, 5, [0, 2, 4, 6, 8]), (10, 3, [0, 3, 6]), (5, 0, [])],
)
def test_cold_start_examples_are_spread_over_the_episodes(n_items, n, picked):
    from training.run import _spread

    assert _spread(list(range(n_items)), n) == picked


# ------------------------------------------------------------------ config
def test_config_recipes_and_overrides(tmp_path):
    from trl import GRPOConfig

    from memory_agent.errors import ConfigError
    from training.config import EXTRA_FIELDS, load_config, read_recipe

    cfg = load_config("cpu_smollm2.yaml", task="manager", max_steps=3, device="cpu", output_dir=str(tmp_path))
    assert isinstance(cfg, GRPOConfig)  # goes straight to GRPOTrainer
    assert cfg.max_steps == 3 and cfg.use_cpu and not cfg.bf16 and cfg.target_device == "cpu"
    assert cfg.policy_spec == "default" and cfg.num_generations == 4 and cfg.logging_steps == 1
    assert load_config(None, task="answer", answer_model="x", device="cpu").policy_spec == "x"
    assert {"reward_metric", "bank_source", "cold_start", "use_lora"} <= EXTRA_FIELDS
    gpu = read_recipe("gpu_8b.yaml")  # parsed and checked (building it needs a GPU)
    assert gpu["use_vllm"] is True and gpu["vllm_mode"] == "server" and gpu["device"] == "cuda"
    for bad in ({"bogus": 1}, {"task": "judge"}, {"reward_metric": "bleu"}, {"bank_source": "x"}):
        with pytest.raises(ConfigError):
            load_config(None, device="cpu", **bad)
    with pytest.raises(ConfigError):
        load_config(tmp_path / "missing.yaml")
