"""GRPO end to end on a tiny random model built here (no download, a few seconds per run).

The model is a 1-layer Llama with hidden size 16 over a small word-level
vocabulary. Its output head is biased towards ``NOOP`` so that, sampled at
temperature 1, some completions are valid manager decisions and others are
not: the real dense reward then has spread inside groups, and GRPO has
something to learn from. Checked: the cold start and GRPO both run through
``training.run.train``; some group has reward spread; the adapter moves
during GRPO (not only during the SFT); metrics, the plot and the adapter are
written; the adapter loads back into ``Memory``; the stop-string hook works
with the real tokenizer; the CLI runs a stage.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")

WORDS = ("NOOP ADD: UPDATE DELETE 0 1 **Answer:** Relevant: alice lives in paris lisbon moved from to has a cat "
         "works as nurse the").split()


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny matmuls on a shared CPU: thread hand-offs cost more than the math."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _wordlevel_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<pad>", "<eos>", "<|im_start|>", "<|im_end|>"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(set(WORDS)))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>",
                                  additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tok.chat_template = ("{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> "
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")
    return tok


def _tiny_model_folder(path: Path, tok) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        # A constant direction in the residual stream (embedding dim 0) read by the output head
        # as a bias: "NOOP" and the end of a reply get a head start, so at temperature 1 some
        # samples are valid decisions and others are not.
        model.model.embed_tokens.weight[:, 0] = 10.0
        model.lm_head.weight[:, 0] = 0.0
        model.lm_head.weight[tok.convert_tokens_to_ids("NOOP"), 0] = 0.75
        model.lm_head.weight[tok.eos_token_id, 0] = 0.25
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _config(out: Path, base: Path, task: str = "manager", **overrides):
    from training.config import load_config

    values = dict(task=task, model=str(base), device="cpu", embedder="hashing", data="synthetic:2:1",
                  val="synthetic:1:9", val_limit=3, output_dir=str(out / "_trainer"), max_steps=3,
                  per_device_train_batch_size=1, gradient_accumulation_steps=4, num_generations=4,
                  max_completion_length=6, generation_kwargs={}, learning_rate=5e-2, temperature=1.0, seed=0,
                  lora_r=4, lora_alpha=8, cold_start=True, cold_start_examples=4, cold_start_epochs=1.0,
                  cold_start_batch_size=2, cold_start_learning_rate=1e-3, gate_prompts=2, max_episodes=6)
    values.update(overrides)
    return load_config(None, **values)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    tok = _wordlevel_tokenizer()
    return _tiny_model_folder(root / "base", tok), tok


@pytest.fixture(scope="module")
def manager_run(tiny, tmp_path_factory):
    from memory_agent.llms import ScriptedLLM
    from memory_store import HashingEmbedder
    from training.run import Resources, train

    base, tok = tiny
    out = tmp_path_factory.mktemp("run") / "manager"
    # Validation runs the product's generate(), whose stop strings need a byte-level tokenizer;
    # a scripted model stands in for it here (GRPO itself samples the tiny model).
    res = Resources(embedder=HashingEmbedder(64), tokenizer=tok, load_llm=lambda path: ScriptedLLM(default="NOOP"))
    summary = train(_config(out, base), out, resources=res)
    return out, summary


def test_grpo_has_reward_spread_and_moves_the_adapter(manager_run):
    from training.callbacks import read_metrics

    out, summary = manager_run
    rows = read_metrics(out / "metrics.csv")
    assert [r["step"] for r in rows] == [1.0, 2.0, 3.0]
    assert any(r["frac_reward_zero_std"] < 1.0 for r in rows), "no group had reward spread"
    assert all(r["lora_update_norm"] is not None for r in rows)
    assert rows[-1]["lora_update_norm"] > 0  # GRPO itself changed the adapter...
    # ...on top of the cold start: the final adapter differs from the SFT adapter it continued
    from safetensors.torch import load_file

    sft = load_file(str(out / "cold_start" / "adapter_model.safetensors"))
    final = load_file(str(out / "adapter_model.safetensors"))
    assert sft.keys() == final.keys() and any(not torch.equal(sft[k], final[k]) for k in sft)
    assert all(v.dtype == torch.float16 for v in final.values())  # shipped small
    assert {"valid_rate", "ops_noop", "recall"} <= set(rows[0])


def test_run_writes_summary_gate_and_plot(manager_run):
    out, summary = manager_run
    saved = json.loads((out / "train_summary.json").read_text())
    assert saved["steps"] == 3 and saved["episodes"] <= 6 and saved["sft_episodes"] == 4
    assert saved["cold_start"]["steps"] == 2  # one epoch of 4 examples at batch 2
    gate = saved["gate"]
    assert gate["tries"] and {"valid_rate", "distinct_per_group", "passed"} <= set(gate["tries"][0])
    for key in ("val_before", "val_after_cold_start", "val_after"):
        assert saved[key]["all"]["n"] == 3
    assert saved["config"]["loss_type"] == "dr_grpo" and saved["config"]["scale_rewards"] == "none"
    assert (out / "reward_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"].endswith("base")


def test_sft_and_grpo_prompts_are_disjoint(tiny, tmp_path):
    from memory_store import HashingEmbedder
    from training.episodes import GoldReplay, load_conversations, manager_episodes, split_episodes

    eps = manager_episodes(load_conversations("synthetic:2:1"), GoldReplay(), HashingEmbedder(64))
    sft, grpo = split_episodes([e for e in eps if e.gold is not None], 4)
    assert not {e.id for e in sft} & {e.id for e in grpo}


def test_adapter_plugs_into_memory(manager_run, tmp_path, scripted):
    from safetensors.torch import load_file

    from memory_agent.llms import resolve_llm
    from memory_agent.memory import Memory
    from memory_store import HashingEmbedder, MemoryStore

    out, _ = manager_run
    policy = resolve_llm(str(out))
    assert policy.model.peft_config["default"].r == 4
    saved = load_file(str(out / "adapter_model.safetensors"))
    loaded = dict(policy.model.named_parameters())
    key = next(k for k in saved if "lora_B" in k)
    match = loaded[key.replace("lora_B.weight", "lora_B.default.weight")]
    assert torch.allclose(match.float(), saved[key].float(), atol=1e-3)  # the trained weights, not a fresh adapter
    store = MemoryStore(tmp_path / "m", embedder=HashingEmbedder(64))
    with Memory(store, extract_llm=scripted(default="- Alice lives in Paris"), manager_llm=scripted(default="NOOP"),
                answer_llm=policy) as mem:
        mem.add([{"speaker": "Alice", "text": "I live in Paris."}], user_id="u", timestamp="2023-05-01")
        reply = mem.answer("Where does Alice live?", user_id="u")
    assert mem.answer_llm is policy and isinstance(reply.raw, str)  # generated, parsed and counted


def test_stop_strings_end_grpo_samples_like_the_product():
    """With the real tokenizer, generation stops at the manager's blank line and ends in a pad."""
    from memory_agent.embedded import smollm2_cache_path, smollm2_is_cached

    if not smollm2_is_cached():
        pytest.skip("needs the embedded tokenizer (memory-agent setup)")
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    from training.trainer import attach_stop_strings

    tok = AutoTokenizer.from_pretrained(smollm2_cache_path())
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    nl = tok.convert_tokens_to_ids("Ċ")
    with torch.no_grad():  # a constant direction read as a bias: "\n" is nearly certain, so the sample is "\n\n"
        model.model.embed_tokens.weight[:, 0] = 10.0
        model.lm_head.weight[:, 0] = 0.0
        model.lm_head.weight[nl, 0] = 5.0
    attach_stop_strings(model, tok)
    config = GenerationConfig(max_new_tokens=8, do_sample=False, stop_strings=["\n\n"], pad_token_id=tok.pad_token_id,
                              eos_token_id=tok.eos_token_id)
    prompt = tok("ADD: x", return_tensors="pt")["input_ids"]
    out = model.generate(input_ids=prompt, generation_config=config)
    new = out[0, prompt.shape[1]:].tolist()
    assert new == [nl, nl, tok.pad_token_id]  # stopped at the blank line; the pad marks it as not truncated


def test_cli_trains_a_stage(tiny, tmp_path):
    from click.testing import CliRunner

    import yaml

    from memory_agent.cli import cli

    base, _tok = tiny
    recipe = {"task": "answer", "device": "cpu", "embedder": "hashing", "data": "synthetic:1:1", "max_steps": 1,
              "per_device_train_batch_size": 1, "gradient_accumulation_steps": 2, "num_generations": 2,
              "max_completion_length": 4, "cold_start": False, "max_episodes": 2, "lora_r": 2, "lora_alpha": 4,
              "val": "synthetic:1:3", "val_limit": 2, "gate_prompts": 1}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(cli, ["train", "answer", "--out", str(tmp_path / "a"), "--config",
                                      str(tmp_path / "tiny.yaml"), "--model", str(base), "--json",
                                      "--kind-weights", "1:1:0", "--cold-start-learning-rate", "1e-3"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert '"task": "answer"' in result.output  # --json prints the summary
    summary = json.loads((tmp_path / "a" / "train_summary.json").read_text())
    assert summary["task"] == "answer" and summary["steps"] == 1
    assert summary["config"]["kind_weights"] == {"new": 1, "change": 1, "repeat": 0}
    assert summary["gate"]["tries"] and "cold_start" not in summary  # the gate runs without a cold start too
    assert summary["config"]["cold_start_learning_rate"] == 1e-3
    assert (tmp_path / "a" / "adapter_model.safetensors").is_file()
    bad = CliRunner().invoke(cli, ["train", "answer", "--out", str(tmp_path / "b"), "--kind-weights", "2:1"])
    assert bad.exit_code == 2 and "NEW:CHANGE:REPEAT" in bad.output and not (tmp_path / "b").exists()


def test_config_recipes_and_defaults(tmp_path):
    from trl import GRPOConfig

    from memory_agent.defaults import MANAGER_MAX_NEW_TOKENS, MANAGER_STOP
    from memory_agent.errors import ConfigError
    from training.config import EXTRA_FIELDS, default_recipe, load_config, read_recipe

    assert default_recipe("manager", "cpu").name == "cpu-manager.yaml"
    assert default_recipe("answer", "cuda").name == "gpu-answer.yaml"
    cfg = load_config("cpu-manager.yaml", task="manager", max_steps=3, output_dir=str(tmp_path))
    assert isinstance(cfg, GRPOConfig) and cfg.max_steps == 3 and cfg.use_cpu and not cfg.bf16
    assert cfg.num_generations >= 8 and cfg.loss_type == "dr_grpo" and cfg.scale_rewards == "none"
    assert cfg.mask_truncated_completions and cfg.epsilon_high == 0.28 and cfg.beta == 0.0
    assert cfg.max_completion_length == MANAGER_MAX_NEW_TOKENS
    assert cfg.generation_kwargs == {"stop_strings": list(MANAGER_STOP)}
    assert getattr(cfg.lr_scheduler_type, "value", cfg.lr_scheduler_type) == "constant"
    assert {"bank_source", "cold_start", "shuffle_rewards", "lora_top_layers"} <= EXTRA_FIELDS
    for name in ("gpu-manager.yaml", "gpu-answer.yaml"):  # parsed and checked on a CPU (building needs a GPU)
        gpu = read_recipe(name)
        assert gpu["use_vllm"] is True and gpu["vllm_mode"] == "colocate" and gpu["device"] == "cuda"
        assert gpu["num_generations"] >= 8
        cfg = load_config(name, device="cpu", use_vllm=False, output_dir=str(tmp_path))  # every field is valid
        assert cfg.lora_r == 64
    for bad in ({"bogus": 1}, {"task": "judge"}, {"reward_metric": "bleu"}, {"bank_source": "x"},
                {"cold_start_epochs": 0}, {"kind_weights": {"neww": 1}}, {"kind_weights": {"new": -1}}):
        with pytest.raises(ConfigError):
            load_config(None, device="cpu", **bad)
    with pytest.raises(ConfigError, match="recipes"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("result,temperature,expected", [
    ({"passed": True, "valid_rate": 0.9, "distinct_per_group": 3}, 1.0, None),
    ({"passed": False, "valid_rate": 0.9, "distinct_per_group": 1.0}, 1.0, 1.2),  # no spread: hotter
    ({"passed": False, "valid_rate": 0.9, "distinct_per_group": 1.0}, 1.4, None),  # no hotter than the cap
    ({"passed": False, "valid_rate": 0.3, "distinct_per_group": 4.5}, 1.0, 0.8),  # spread, few valid: cooler
    ({"passed": False, "valid_rate": 0.3, "distinct_per_group": 4.5}, 0.6, None),  # no cooler than the floor
])
def test_gate_moves_the_temperature_the_right_way(result, temperature, expected):
    from training.config import load_config
    from training.run import _next_temperature

    config = load_config(None, device="cpu", gate_min_valid_rate=0.5, gate_min_distinct=1.5)
    assert _next_temperature(config, result, temperature) == expected
