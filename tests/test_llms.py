"""LLM backends: scripted double, transformers batching on a tiny random Llama, OpenAI over HTTP, specs."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from memory_agent.errors import BackendError, ConfigError, ModelNotFound
from memory_agent.llms import LLM, ScriptedLLM, ScriptExhausted, truncate_at_stop

MSG = [{"role": "user", "content": "hi"}]


# ---------------------------------------------------------------- scripted
def test_scripted_replies_in_order_and_records_prompts():
    llm = ScriptedLLM(["a", lambda m: m[-1]["content"].upper()])
    out = llm.generate([MSG, [{"role": "user", "content": "yo"}]])
    assert out == ["a", "YO"]
    assert llm.prompts == [MSG, [{"role": "user", "content": "yo"}]]
    assert isinstance(llm, LLM)


def test_scripted_empty_queue_is_a_clear_error_unless_default():
    with pytest.raises(ScriptExhausted, match="no reply left"):
        ScriptedLLM([]).generate([MSG])
    assert ScriptedLLM([], default="NOOP").generate([MSG, MSG]) == ["NOOP", "NOOP"]


def test_stop_strings_truncate():
    assert truncate_at_stop("abc\n\ndef", ["\n\n"]) == "abc"
    assert truncate_at_stop("abc", None) == "abc"
    assert ScriptedLLM(["x END y"]).generate([MSG], stop=["END"]) == ["x "]


# ---------------------------------------------------------------- transformers (tiny model)
@pytest.fixture(scope="module")
def tiny_pair():
    """A random-initialised 1-layer Llama with a byte-level BPE tokenizer built here (no download)."""
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(["hello world, the quick brown fox jumps over the lazy dog. user system assistant"] * 5, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", bos_token="<|im_start|>", unk_token="<|endoftext|>"
    )
    fast.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.eos_token_id,
        initializer_range=0.5,  # spread logits: no near-ties for greedy decoding to flip on
    )
    model = LlamaForCausalLM(config).eval()
    return model, fast


def _conversations():
    system = {"role": "system", "content": "the quick brown fox jumps over the lazy dog " * 4}
    texts = ["hello", "hello world the quick brown fox", "dog", "the lazy dog jumps over hello world again and again"]
    return [[system, {"role": "user", "content": t}] for t in texts]


def test_batched_greedy_equals_one_by_one(tiny_pair):
    from memory_agent.llms import TransformersLLM

    llm = TransformersLLM(tiny_pair, batch_size=3)  # 4 prompts -> two chunks, unequal lengths
    convs = _conversations()
    batched = llm.generate(convs, max_new_tokens=8)
    single = [llm.generate([c], max_new_tokens=8)[0] for c in convs]
    assert batched == single
    llm.share_prefix = False  # plain left padding gives the same text as the shared-prefix cache
    assert llm.generate(convs, max_new_tokens=8) == batched
    assert llm.usage.calls == 2 + 4 + 2
    assert llm.usage.prompt_tokens > 0 and llm.usage.completion_tokens > 0 and llm.usage.seconds > 0
    assert llm.model is tiny_pair[0] and llm.tokenizer is tiny_pair[1]


def test_stop_strings_and_empty_batch(tiny_pair):
    from memory_agent.llms import TransformersLLM

    llm = TransformersLLM(tiny_pair)
    assert llm.generate([]) == []
    full = llm.generate([_conversations()[0]], max_new_tokens=12)[0]
    if len(full) > 3:
        stop = full[2:4]
        cut = llm.generate([_conversations()[0]], max_new_tokens=12, stop=[stop])[0]
        assert stop not in cut and full.startswith(cut)


def test_load_from_folder_adapter_and_spec_cache(tiny_pair, tmp_path):
    from peft import LoraConfig, get_peft_model

    from memory_agent.llms import TransformersLLM, clear_cache, resolve_llm

    model, tok = tiny_pair
    folder = tmp_path / "tiny"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    from_folder = TransformersLLM(folder)
    ref = TransformersLLM(tiny_pair)
    convs = _conversations()[:2]
    assert from_folder.generate(convs, max_new_tokens=5) == ref.generate(convs, max_new_tokens=5)

    peft_model = get_peft_model(
        type(model)(model.config), LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=True)
    )
    peft_model.base_model.model.load_state_dict(model.state_dict(), strict=False)
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(folder)
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    with_adapter = TransformersLLM(adapter)
    assert type(with_adapter.model).__name__.startswith("PeftModel")
    # LoRA B starts at zero: the adapted model still generates the base's text.
    assert with_adapter.generate(convs, max_new_tokens=5) == ref.generate(convs, max_new_tokens=5)

    clear_cache()
    a = resolve_llm(str(folder))
    assert resolve_llm(str(folder)) is a  # loaded once per process
    clear_cache()


def test_load_errors(tmp_path):
    from memory_agent.llms import TransformersLLM

    with pytest.raises(ModelNotFound):
        TransformersLLM(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="not a model folder"):
        TransformersLLM(tmp_path / "empty")
    with pytest.raises(BackendError, match="tokenizer"):
        TransformersLLM(object())


# ---------------------------------------------------------------- spec resolution
def test_resolve_llm_specs(tmp_path):
    from memory_agent.llms import BACKENDS, OpenAICompatibleLLM, resolve_llm

    assert {"default", "transformers", "openai"} <= set(BACKENDS)
    obj = ScriptedLLM([])
    assert resolve_llm(obj) is obj
    llm = resolve_llm("openai:gpt-x@http://127.0.0.1:9/v1")
    assert isinstance(llm, OpenAICompatibleLLM) and llm.url == "http://127.0.0.1:9/v1/chat/completions"
    assert resolve_llm("openai:gpt-x@http://127.0.0.1:9/v1") is llm
    with pytest.raises(ConfigError, match="unknown model spec"):
        resolve_llm("gpt-4-please")
    with pytest.raises(ModelNotFound):
        resolve_llm(str(tmp_path / "missing.gguf"))
    with pytest.raises(ConfigError, match="openai:MODEL@"):
        resolve_llm("openai:nourl")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ModelNotFound, match="holds no model"):
        resolve_llm(str(tmp_path / "folder"))
    with pytest.raises(ConfigError):
        resolve_llm(42)


# ---------------------------------------------------------------- OpenAI-compatible over HTTP
class _Server:
    def __init__(self, statuses):
        self.statuses = list(statuses)  # consumed per request; then 200
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                status = outer.statuses.pop(0) if outer.statuses else 200
                if status == 200:
                    reply = "echo: " + body["messages"][-1]["content"]
                    payload = {"choices": [{"message": {"content": reply}}],
                               "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
                else:
                    payload = {"error": "boom"}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_openai_retries_500_then_succeeds(monkeypatch):
    from memory_agent.llms import OpenAICompatibleLLM

    monkeypatch.setenv("TEST_KEY", "sekrit")
    with _Server([500]) as srv:
        llm = OpenAICompatibleLLM("m", srv.url, api_key_env="TEST_KEY", backoff=0.01, timeout=5)
        assert llm.generate([MSG], max_new_tokens=7, stop=["\n"]) == ["echo: hi"]
    assert len(srv.requests) == 2
    req = srv.requests[-1]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sekrit"
    assert req["body"]["max_tokens"] == 7 and req["body"]["stop"] == ["\n"] and req["body"]["model"] == "m"
    assert llm.usage.prompt_tokens == 3 and llm.usage.completion_tokens == 2


def test_openai_batch_keeps_order_and_fails_loudly():
    from memory_agent.llms import OpenAICompatibleLLM

    with _Server([]) as srv:
        llm = OpenAICompatibleLLM("m", srv.url, concurrency=4, timeout=5)
        batch = [[{"role": "user", "content": str(i)}] for i in range(10)]
        assert llm.generate(batch) == [f"echo: {i}" for i in range(10)]
    with _Server([503] * 10) as srv:
        llm = OpenAICompatibleLLM("m", srv.url, max_retries=2, backoff=0.01, timeout=5)
        with pytest.raises(BackendError, match="after 3 attempts"):
            llm.generate([MSG])
    with _Server([400]) as srv:
        with pytest.raises(BackendError, match="HTTP 400"):
            OpenAICompatibleLLM("m", srv.url, backoff=0.01, timeout=5).generate([MSG])
        assert len(srv.requests) == 1  # a client error is not retried


def test_openai_unreachable_server_is_backend_error():
    from memory_agent.llms import OpenAICompatibleLLM

    llm = OpenAICompatibleLLM("m", "http://127.0.0.1:9/v1", max_retries=1, backoff=0.01, timeout=1)
    with pytest.raises(BackendError):
        llm.generate([MSG])


def test_thread_picking_env_and_idle_cores(monkeypatch):
    import os

    import torch

    from memory_agent.llms import transformers_backend as tb

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("MEMORY_AGENT_THREADS", "1")
        assert tb.set_cpu_threads() == 1
        assert tb.set_cpu_threads(2) == 2  # an explicit count wins over the environment
        monkeypatch.delenv("MEMORY_AGENT_THREADS")
        cores = os.cpu_count() or 1
        assert 1 <= tb.set_cpu_threads() <= cores
        busy = tb._busy_cores(cores, window=0.05)
        assert 0.0 <= busy <= cores
        monkeypatch.setattr(tb, "_busy_cores", lambda cores, window=0.3: float(cores))  # everything busy
        assert tb.set_cpu_threads() == 1  # never zero threads
        monkeypatch.setattr(tb, "_busy_cores", lambda cores, window=0.3: 0.0)
        assert tb.set_cpu_threads() == cores
    finally:
        torch.set_num_threads(before)


def test_echo_model_follows_the_product_prompts():
    from memory_agent.llms import resolve_llm
    from memory_agent.prompts import answer_messages, extraction_messages, manager_messages

    echo = resolve_llm("echo")
    out = echo.generate([
        extraction_messages("Alice", "I moved to Lyon", "a moving van"),
        manager_messages(["Alice moved to Lyon", "Alice has a van"], ["Alice lives in Paris"]),
        answer_messages("Where does Alice live?", [("8 May 2023", "Alice moved to Lyon")]),
        answer_messages("Where?", []),
    ])
    assert out[0] == "- I moved to Lyon"
    assert out[1] == "ADD: Alice moved to Lyon\nADD: Alice has a van"
    assert out[2].endswith("**Answer:** Alice moved to Lyon") and "[0]" in out[2]
    assert out[3].endswith("**Answer:** unknown")
    assert echo.usage.calls == 1


@pytest.mark.parametrize("spec", ["echo:x", "echo:-1", "echo:100"])
def test_bad_echo_specs_are_config_errors(spec):
    from memory_agent.errors import ConfigError
    from memory_agent.llms import resolve_llm

    with pytest.raises(ConfigError):
        resolve_llm(spec)
