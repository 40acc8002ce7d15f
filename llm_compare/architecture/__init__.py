"""Architecture facts of any model the project can load, read from config, tokenizer and GGUF header
(never the weights): `describe(spec)` for one model, `describe_many` for the comparison table."""

from __future__ import annotations

import logging

from llm_compare.architecture.bandwidth import memory_bandwidth
from llm_compare.architecture.facts import KEYS, describe
from llm_compare.errors import UserError

__all__ = ["KEYS", "describe", "describe_many"]


def describe_many(specs, measure_bandwidth: bool = True) -> list[dict]:
    """Facts per spec; a spec nothing can be read of becomes {"name", "error"} (never raises)."""
    bandwidth = None
    if measure_bandwidth:
        bandwidth = memory_bandwidth()
    out, read = [], {}
    for spec in specs:
        key = (spec.source, spec.backend)
        if key not in read:  # two specs of one file (bf16 / fp32) share its facts
            try:
                read[key] = describe(spec, bandwidth)
            except UserError as e:
                read[key] = {"source": spec.source, "error": str(e)}
            except Exception as e:  # noqa: BLE001 - odd files must not break a report or the tab
                logging.getLogger(__name__).warning("architecture of %s", spec.source, exc_info=True)
                read[key] = {"source": spec.source, "error": f"could not be read ({type(e).__name__}: {e})"}
        out.append(dict(read[key], name=spec.name, label=spec.label))
    return out
