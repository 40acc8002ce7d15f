"""The registry file: parsing, resolution, and clear errors for every mistake a user makes in it."""

from __future__ import annotations

import re

import pytest

from llm_compare.errors import UserError
from llm_compare.params import GenerationParams
from llm_compare.specs import DEFAULT_REGISTRY, load_registry, spec_from_source


def test_shipped_registry_has_the_default_pair():
    reg = load_registry()
    assert reg.path == DEFAULT_REGISTRY
    a, b = reg.resolve(None, "a"), reg.resolve(None, "b")
    assert a.source == b.source == "embedded:smollm2" and a.dtype != b.dtype


def test_paths_urls_and_hub_ids_become_adhoc_specs(tmp_path):
    assert spec_from_source(str(tmp_path)).source == str(tmp_path)
    assert spec_from_source("http://127.0.0.1:8000/v1").backend == "openai"
    assert spec_from_source("org/model").source == "org/model"


@pytest.mark.parametrize(
    "text, message",
    [
        ("models = 3 [", "not valid TOML"),
        ("[other]\nx = 1", "no [models.NAME]"),
        ('[models.a]\nlabel = "x"', "needs a `source`"),
        ('[models.a]\nsource = "x"\nsize = 3', "unknown field"),
        ('[models.a]\nsource = "x"\nbackend = "onnx"', "unknown backend"),
        ('[models.a]\nsource = "x"\ndtype = "int4"', "unknown dtype"),
        ('default_pair = ["a", "zz"]\n[models.a]\nsource = "x"', "'zz'"),
    ],
)
def test_registry_mistakes(tmp_path, text, message):
    path = tmp_path / "models.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=re.escape(message)):
        load_registry(path)


def test_generation_params_are_validated():
    for bad, named in ((dict(max_new_tokens=0), "max new tokens"), (dict(temperature=0), "temperature"),
                       (dict(top_p=1.5), "top-p"), (dict(repetition_penalty=0), "repetition penalty")):
        with pytest.raises(UserError, match=f"^{named} .*got {list(bad.values())[0]}"):
            GenerationParams(**bad)
    greedy = GenerationParams(temperature=0, greedy=True)  # temperature does not matter when greedy
    assert (greedy.greedy, greedy.temperature) == (True, 0)
