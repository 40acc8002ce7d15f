"""Prompt presets (assets/presets.toml): the seed prompts first, then anything users add.

Minimal loader kept by the UI until the store branch's fuller one lands.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from llm_compare.errors import UserError
from llm_compare.specs import ASSETS

DEFAULT_PRESETS = ASSETS / "presets.toml"


@dataclass(frozen=True)
class Preset:
    group: str
    name: str
    prompt: str


def load_presets(path: str | Path | None = None) -> list[Preset]:
    path = Path(path) if path else DEFAULT_PRESETS
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"presets file {path} does not exist; pass an existing TOML file") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"presets file {path} is not valid TOML: {e}") from None
    presets = []
    for i, entry in enumerate(data.get("presets", [])):
        if not isinstance(entry, dict) or not str(entry.get("prompt", "")).strip():
            raise UserError(f"presets file {path}: entry {i + 1} needs a non-empty `prompt`")
        prompt = entry["prompt"]
        presets.append(Preset(group=entry.get("group", ""), name=entry.get("name") or prompt[:40], prompt=prompt))
    return presets
