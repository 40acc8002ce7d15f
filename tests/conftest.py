"""Shared test fixtures: a tiny random Llama-style chat model built here, and the embedded GGUF.

The tiny model is real transformers code end to end (tokenizer with a ChatML template, a
LlamaForCausalLM with random weights saved as safetensors), so loading, formatting and streaming
are exercised for real in milliseconds. Its text is meaningless; only ids and equality matter.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The seed-format fixtures live in shared/ beside the repository (here and in CI).
LEGACY_FIXTURES = Path(os.environ.get("LLM_COMPARE_LEGACY_FIXTURES", REPO.parent / "shared" / "fixtures" / "legacy"))
if os.environ.get("CI") and not LEGACY_FIXTURES.is_dir():  # CI must never skip them silently
    raise RuntimeError(f"legacy fixtures not found at {LEGACY_FIXTURES}; set LLM_COMPARE_LEGACY_FIXTURES")

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

USER_CACHE = Path.home() / ".cache" / "llm_compare"  # a test run never writes here (issue 20)


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """This test run's own cache folder (LLM_COMPARE_CACHE): probes, conversions and exports land there,
    shared by the whole session (the embedded model is converted once per run) and by the apps and
    servers tests start, which inherit the environment. Tests that need an empty cache set their own."""
    folder = tmp_path_factory.mktemp("llm_compare_cache")
    before = os.environ.get("LLM_COMPARE_CACHE")
    os.environ["LLM_COMPARE_CACHE"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("LLM_COMPARE_CACHE", None)
    else:
        os.environ["LLM_COMPARE_CACHE"] = before


def quiet_machine(mp) -> None:
    """Probes in this test see a quiet machine: what they measure is cached as on an idle box. A busy
    machine (CI, the other tests) rightly keeps a probe from caching; tests that check caching inject
    the quiet reading instead of depending on the machine being idle (issue 21, case 10)."""
    from llm_compare import machine

    mp.setattr(machine, "measured_with_others_share", lambda measure: (measure(), 0.0))
    mp.setattr(machine, "_UNCACHED", {})

def pytest_configure(config):
    """CI (CI=true) runs the slow tests too: they fit its time limit, and a developer's default run
    stays quick. An explicit -m on the command line wins."""
    if os.environ.get("CI") and config.option.markexpr == "not slow" and "-m" not in config.invocation_params.args:
        config.option.markexpr = ""


CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "The sky is blue because air scatters short wavelengths of sunlight more than long ones.",
    "Write a short poem about the sea, then explain its rhythm in one sentence.",
    "请说出以下两句话区别在哪里？ 冬天：能穿多少穿多少 夏天：能穿多少穿多少",
    "def add(a, b):\n    return a + b\n",
    "One, two, three, four, five, six, seven, eight, nine, ten.",
] * 20


def build_tiny_chat_model(directory, *, with_template: bool = True, context: int = 256, seed: int = 0):
    """Save a tiny random chat model (tokenizer + LlamaForCausalLM) into `directory`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
    )
    if with_template:
        fast.chat_template = CHATML
    fast.save_pretrained(directory)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(config)
    # A zero logit for <|im_end|> is below the best of ~400 random logits, so greedy replies run to
    # max_new_tokens (tests that need the model to end its reply use stop tokens of their own).
    with torch.no_grad():
        model.lm_head.weight[fast.eos_token_id] = 0.0
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-chat"))


@pytest.fixture(scope="session")
def tiny_spec(tiny_model_dir):
    from llm_compare.specs import ModelSpec

    return ModelSpec(name="tiny", source=str(tiny_model_dir), dtype="float32", label="Tiny random")


@pytest.fixture(scope="session")
def tiny_backend(tiny_spec):
    from llm_compare.backends import open_backend

    return open_backend(tiny_spec)


@pytest.fixture(scope="session")
def embedded_backend():
    """The shipped SmolLM2-135M GGUF through the transformers backend, in float32 (text depends on dtype)."""
    from llm_compare.backends import open_backend
    from llm_compare.specs import ModelSpec

    return open_backend(ModelSpec(name="smollm2-fp32", source="embedded:smollm2", dtype="float32"))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(cmd: list[str], ready_url: str, log_path: Path, *, env: dict | None = None, timeout_s: float = 180):
    """Run a server subprocess until `ready_url` answers 200; always stop it afterwards.

    Output goes to a file (a verbose server would fill a pipe and block); it is shown on failure.
    """
    import subprocess
    import sys
    import time

    import httpx

    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, *cmd], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"{cmd[:2]} exited with {proc.returncode}:\n{log_path.read_text(errors='replace')[-3000:]}")
                try:
                    if httpx.get(ready_url, timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"{cmd[:2]} did not come up:\n{log_path.read_text(errors='replace')[-3000:]}")
                time.sleep(0.3)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    """llama-cpp-python's OpenAI-compatible server on 127.0.0.1, serving the embedded GGUF."""
    from llm_compare.backends.llamacpp_amx import amx_state
    from llm_compare.loading import embedded_path

    port, path = free_port(), embedded_path("smollm2")
    cmd = ["-m", "llama_cpp.server", "--model", str(path), "--host", "127.0.0.1", "--port", str(port),
           "--n_threads", "1", "--n_ctx", "2048"]
    if amx_state(path) in ("broken", "off"):  # same micro-batching as the in-process backend
        cmd += ["--n_ubatch", "1"]
    url = f"http://127.0.0.1:{port}"
    with serve(cmd, url + "/v1/models", tmp_path_factory.mktemp("server") / "server.log"):
        yield url


def start_app_env() -> dict:
    """The environment `start_app` runs the app in: this one (the session's cache folder included)."""
    return {k: v for k, v in os.environ.items() if k != "GRADIO_ANALYTICS_ENABLED"} | {"PYTHONUNBUFFERED": "1"}


def start_app(args: list[str], workdir: Path):
    """`python app.py ARGS` on a free port (context manager yielding its URL), with Gradio's defaults
    as a user has them (usage statistics on: `launch()` then compares themes, which once crashed)."""
    port = free_port()
    env = start_app_env()
    url = f"http://127.0.0.1:{port}"

    @contextlib.contextmanager
    def running():
        with serve(["app.py", "--port", str(port), *args], url, workdir / "app.log", env=env):
            yield url

    return running()
