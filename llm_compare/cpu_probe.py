"""Defaults measured on this CPU, not fitted to one: the transformers precision and the threads a stream uses.

CPUs differ in ways that flip these choices. bfloat16 halves the bytes read per decoded token, but
on a CPU without native bf16 arithmetic (AVX2-only AMD EPYC) its prompt pass is compute-bound and
ran 4x slower than float32 at Qwen-7B widths, so a 300-token prompt took 225 s to its first token
against 55 s. Thread counts flip too: a small llama.cpp model ran 4x slower on 2 threads than on 1 on
an Intel box, and faster on 2 on an AMD one. So both are measured here, once per machine (the
cache key names the CPU model, its flags and the torch/llama.cpp versions: `machine.cached_probe`),
in a few seconds at first use:

- **precision** (`dtype_costs`): for the model's width (hidden x MLP), the time of one typical turn,
  a ~300-token prompt pass (a matrix product, `F.linear` over the prompt's rows) plus ~200 decoded
  tokens (a matrix-vector product each, as the decode path runs it), per candidate precision. The
  candidates keep the model's answers (float32, bfloat16; int8 and float16 change them and are only
  used when asked for). The cheapest that fits in free memory becomes the default for a model whose
  precision nobody chose (`dtype = "auto"`, the default; for a big model directory a quantized GGUF
  export may win instead: dtype_choice.py). `LLM_COMPARE_DTYPE` or `--dtype-a/-b` override it.
- **threads** (`best_threads`): seconds per decoded token of the loaded model itself with 1 thread
  and with every core, per backend and model size (and for torch, whether llama.cpp has run in the
  process: they share the OpenMP runtime). The faster count is what a lone stream gets; several
  streams at once share the cores (threads.py). `LLM_COMPARE_THREADS` or `--threads-a/-b` override it.

`python -m llm_compare doctor` prints what was measured and chosen; `bench/dtypes.py` and
`bench/threads.py` print it beside whole-model measurements.
"""

from __future__ import annotations

import math
import os
import threading
import time
from typing import Callable

from llm_compare.architecture.sources import source_widths
from llm_compare.machine import cached_probe, machine_key, probe_results
from llm_compare.threads import cpu_cores, use_torch_threads

CANDIDATES = ("float32", "bfloat16")  # precisions that keep the model's answers
DECODE_BYTES = 384 * 2**20  # decode is timed over this much float32 weight: more than a CPU's caches
# ...in at most this many copies: a tiny test model's weight would need 49152, whose per-call overhead
# (minutes on a busy machine: `doctor` on a tiny model) measures Python, not memory
MAX_COPIES = 1024
DTYPE_ENV = "LLM_COMPARE_DTYPE"
TURN_PROMPT, TURN_NEW = 300, 200  # the representative turn the precision is chosen for
DEFAULT_WIDTH = (2048, 5632)  # hidden, MLP width when the model's config does not say
THREADS_ENV_NOTE = "LLM_COMPARE_THREADS caps every stream"


def torch_kernels() -> str:
    """torch's version and the kernels it may use (ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA change them)."""
    import torch

    return (f"torch {torch.__version__} {torch.backends.cpu.get_cpu_capability()} "
            f"onednn<={os.environ.get('ONEDNN_MAX_CPU_ISA', 'any')}")


def _timed(fn: Callable[[], object], budget_s: float = 0.25, max_runs: int = 15) -> float:
    """Fastest seconds of `fn()` after one warm-up, repeated up to `budget_s` (at least 3 runs).

    The fastest run, not the median: other processes only ever slow a run down, so the minimum is
    the best estimate of what this CPU does, and a busy moment at first use is not cached as a fact."""
    fn()
    times, start = [], time.perf_counter()
    while len(times) < 3 or (len(times) < max_runs and time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _in_thread(fn: Callable[[], object]):
    """Run `fn` in a fresh OS thread (torch thread counts are per thread: the caller's stays as it was)."""
    out: list = []
    worker = threading.Thread(target=lambda: out.append(fn()), name="cpu-probe")
    worker.start()
    worker.join()
    return out[0]


def measure_turn_costs(hidden: int, mlp: int, dtypes=CANDIDATES) -> dict:
    """Seconds of one representative turn's matmuls on one [mlp x hidden] weight, per dtype.

    Decoding is timed over enough copies of the weight to exceed any CPU cache (DECODE_BYTES in
    float32), per copy: a model's decode step reads its weights from memory, and one small weight
    alone would sit in cache and hide what halving its bytes buys (at SmolLM2's width the two
    precisions then tied while the whole model decoded 1.44x faster in bf16)."""
    import torch
    import torch.nn.functional as F

    rows = min(TURN_PROMPT, max(8, int(2e9 / (2 * hidden * mlp))))  # keep the probe to seconds
    copies = min(MAX_COPIES, -(-DECODE_BYTES // (4 * hidden * mlp)))
    out = {}

    def run():
        use_torch_threads(cpu_cores())
        gen = torch.Generator().manual_seed(0)
        base = torch.randn(mlp, hidden, generator=gen) * 0.02
        with torch.inference_mode():
            for name in dtypes:
                dtype = getattr(torch, name)
                ws = [base.to(dtype, copy=True) for _ in range(copies)]
                x = torch.randn(rows, hidden, generator=gen).to(dtype)
                v = x[0].contiguous()
                decode = _timed(lambda: [F.linear(v[None], w) for w in ws]) / copies
                if dtype == torch.bfloat16:  # the backend may use torch.mv instead (MatvecLinear)
                    decode = min(decode, _timed(lambda: [torch.mv(w, v) for w in ws]) / copies)
                prefill = _timed(lambda: F.linear(x, ws[0]), budget_s=0.5, max_runs=5) * TURN_PROMPT / rows
                out[name] = {"prefill_s": prefill, "decode_s": decode, "turn_s": prefill + TURN_NEW * decode}
                del ws, x, v

    _in_thread(run)
    return out


MATVEC_INPUTS = 64  # inputs mv must match F.linear on, bitwise (a few differing sums show up in 1 of ~15)
MATVEC_GAIN = 0.8  # mv must take at most this share of F.linear's time: a 5 % margin flipped with noise


def measure_matvec(out_features: int, in_features: int) -> dict:
    """bf16 one-row product at this shape: `torch.mv` vs `F.linear` time, and whether they agree bitwise.

    The two kernels may sum in another order; then a few outputs land on the other side of a bf16
    rounding step, for about 1 input in 15 at SmolLM2's 1536 -> 576 on a Zen 4 (3 inputs all agreed,
    and the greedy reply changed). So equality is checked on MATVEC_INPUTS inputs (up to ~1 s)."""
    import torch
    import torch.nn.functional as F

    def run():
        use_torch_threads(cpu_cores())
        gen = torch.Generator().manual_seed(0)
        w = (torch.randn(out_features, in_features, generator=gen) * 0.02).bfloat16()
        x0 = torch.randn(in_features, generator=gen).bfloat16()
        with torch.inference_mode():
            equal, start = True, time.perf_counter()
            for i in range(MATVEC_INPUTS):
                x = x0 if i == 0 else torch.randn(in_features, generator=gen).bfloat16()
                equal = torch.equal(torch.mv(w, x), F.linear(x[None], w)[0])
                if not equal or (i >= 8 and time.perf_counter() - start > 1.0):
                    break
            mv_s = _timed(lambda: torch.mv(w, x0), budget_s=0.1)
            linear_s = _timed(lambda: F.linear(x0[None], w), budget_s=0.1)
        return {"mv_s": mv_s, "linear_s": linear_s, "bitwise_equal": equal,
                "use_mv": equal and mv_s < MATVEC_GAIN * linear_s}

    return _in_thread(run)


def matvec_pays(out_features: int, in_features: int) -> bool:
    """Whether bf16 decode should use `torch.mv` at this shape here: faster, and bitwise equal to F.linear.

    Both vary by CPU: on a Zen 4 with avx512_bf16, mv differed from F.linear in a few elements at
    4096 -> 11008 (not at 4096 -> 4096), on AVX2-only CPUs it matched everywhere tried."""
    key = machine_key("matvec", torch_kernels(), f"{out_features}x{in_features}", f"inputs{MATVEC_INPUTS}", f"gain{MATVEC_GAIN}")
    return bool(cached_probe("matvec", key, lambda: measure_matvec(out_features, in_features))["use_mv"])


def dtype_costs(hidden: int, mlp: int) -> dict:
    """The cached per-dtype turn costs at this width on this machine (measured on first use)."""
    key = machine_key("dtype", torch_kernels(), f"{hidden}x{mlp}", ",".join(CANDIDATES), f"decode>{DECODE_BYTES}", f"copies<={MAX_COPIES}")
    return cached_probe("dtype", key, lambda: measure_turn_costs(hidden, mlp))


def ranked_dtypes(hidden: int, mlp: int) -> list[str]:
    """Candidate precisions, cheapest turn first."""
    costs = dtype_costs(hidden, mlp)
    return sorted(costs, key=lambda d: costs[d]["turn_s"])


def model_width(source: str) -> tuple[int, int]:
    """(hidden, MLP width) of a model (`architecture.sources.source_widths`), DEFAULT_WIDTH when unknown."""
    try:
        return source_widths(source) or DEFAULT_WIDTH
    except Exception:  # a width we cannot read only means the default width
        return DEFAULT_WIDTH


def size_bucket(weight_bytes: int | None) -> str:
    """Model sizes within a factor of 2 share one thread measurement."""
    return "unknown" if not weight_bytes else f"2^{round(math.log2(max(1, weight_bytes)))}"


def best_threads(backend: str, weight_bytes: int | None, seconds_per_token: Callable[[int], float],
                 extra: str = "") -> dict:
    """{"seconds": {threads: s/token}, "best": threads} for a lone stream of this backend and size.

    `seconds_per_token(n)` decodes with `n` threads and returns the fastest of a few passes' seconds
    (`_timed`: other processes only ever slow a pass down)."""
    counts = sorted({1, cpu_cores()})
    key = machine_key("threads", backend, size_bucket(weight_bytes), torch_kernels(), extra)

    def measure():
        rounds = [{str(n): seconds_per_token(n) for n in counts} for _ in range(2)]  # interleaved: fair under load
        seconds = {n: min(r[n] for r in rounds) for n in rounds[0]}
        label = f"{backend} {extra.split('|')[0]}, weights {size_bucket(weight_bytes)} bytes".strip()
        return {"seconds": seconds, "best": int(min(seconds, key=seconds.get)), "label": label}

    return cached_probe("threads", key, measure)


def summary_lines(hidden: int, mlp: int) -> list[str]:
    """What `doctor` prints: the measured turn costs at a width and what they choose."""
    costs = dtype_costs(hidden, mlp)
    ranked = sorted(costs, key=lambda d: costs[d]["turn_s"])
    lines = [f"default precision at width {hidden}x{mlp}: {ranked[0]} (a {TURN_PROMPT}-token prompt + "
             f"{TURN_NEW} new tokens on one {mlp}x{hidden} weight)"]
    for d in ranked:
        c = costs[d]
        lines.append(f"  {d:9s} turn {c['turn_s'] * 1000:7.1f} ms = prompt {c['prefill_s'] * 1000:6.1f} ms"
                     f" + {TURN_NEW} x decode {c['decode_s'] * 1000:.3f} ms")
    forced = os.environ.get(DTYPE_ENV)
    if forced:
        lines.append(f"  overridden: {DTYPE_ENV}={forced}")
    return lines


def threads_lines() -> list[str]:
    """The thread measurements cached so far (each model's first load on this machine makes one)."""
    known = probe_results("threads")
    lines = [f"threads for a lone stream: measured at each model size's first load; {len(known)} so far"
             + (f" ({THREADS_ENV_NOTE})" if os.environ.get("LLM_COMPARE_THREADS") else "")]
    for found in known.values():
        if isinstance(found, dict) and "seconds" in found:
            per = ", ".join(f"{n} thread(s) {s * 1000:.1f} ms/token" for n, s in found["seconds"].items())
            lines.append(f"  {found.get('label', 'a model')}: {per} -> {found['best']}")
    return lines
