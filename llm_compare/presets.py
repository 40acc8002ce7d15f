"""Prompt presets: named prompts in groups, read from a TOML file.

The app's preset picker and the batch report (`report --prompts GROUP|FILE`) share one file
format, assets/presets.toml: one `[[prompts]]` table per prompt with `group`, `label`, `text`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llm_compare.errors import UserError
from llm_compare.specs import ASSETS, read_toml

DEFAULT_PRESETS = ASSETS / "presets.toml"
FIELDS = ("group", "label", "text")


@dataclass(frozen=True)
class Preset:
    group: str
    label: str
    text: str


def load_presets(path: str | Path | None = None) -> list[Preset]:
    """Every preset in file order; any problem is a UserError naming the file and the entry."""
    path = Path(path) if path else DEFAULT_PRESETS
    data = read_toml(path, "preset file", "pass an existing TOML file")
    entries = data.get("prompts")
    if not isinstance(entries, list) or not entries:
        raise UserError(
            f"preset file {path} has no [[prompts]] tables; each prompt needs group, label and text "
            "(see assets/presets.toml)"
        )
    presets = []
    for n, entry in enumerate(entries, 1):
        where = f"preset file {path}: prompt #{n}"
        if not isinstance(entry, dict):
            raise UserError(f"{where} must be a [[prompts]] table")
        unknown = set(entry) - set(FIELDS)
        if unknown:
            raise UserError(f"{where} has unknown field(s) {', '.join(sorted(unknown))}; use group, label, text")
        for name in FIELDS:
            value = entry.get(name)
            if not isinstance(value, str) or not value.strip():
                raise UserError(f"{where} needs a non-empty string `{name}`")
        presets.append(Preset(entry["group"], entry["label"], entry["text"]))
    return presets


def groups(presets: list[Preset]) -> list[str]:
    """Group names in first-appearance order."""
    return list(dict.fromkeys(p.group for p in presets))


def load_suite(name_or_path: str | None = None, presets_path: str | Path | None = None) -> tuple[str, list[Preset]]:
    """A prompt suite for a batch report: a TOML preset file, or a group in the presets file.

    Default: the "seeds" group. Returns (suite name, presets).
    """
    name_or_path = name_or_path or "seeds"
    path = Path(name_or_path).expanduser()
    if name_or_path.endswith(".toml") or path.is_file():
        return path.stem, load_presets(path)
    presets = load_presets(presets_path)
    chosen = [p for p in presets if p.group == name_or_path]
    if not chosen:
        source = presets_path or DEFAULT_PRESETS
        raise UserError(
            f"no prompt group {name_or_path!r} in {source} and no such file; "
            f"groups: {', '.join(groups(presets))}, or pass a .toml preset file"
        )
    return name_or_path, chosen
