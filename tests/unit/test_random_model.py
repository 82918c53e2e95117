"""The random-weight checkpoint the GPU check builds (helpers.random_model), built and loaded on the CPU."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import models, random_model

SMALL = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
         "num_key_value_heads": 2, "head_dim": 16}  # fmt: skip


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2's config and tokenizer files, without its weights (what the GPU kit carries)."""
    source, target = models.materialize_smollm2(), tmp_path_factory.mktemp("tokenizer")
    for path in source.iterdir():
        if path.suffix != ".safetensors":
            shutil.copy(path, target / path.name)
    return target


def test_builds_a_seeded_model_of_the_configs_architecture(config_dir: Path, tmp_path: Path) -> None:
    first = random_model.build_random_checkpoint(tmp_path / "a", config_dir, seed=1, **SMALL)
    again = random_model.build_random_checkpoint(tmp_path / "b", config_dir, seed=1, **SMALL)
    other = random_model.build_random_checkpoint(tmp_path / "c", config_dir, seed=2, **SMALL)
    weights = {
        name: load_file(path / "model.safetensors")
        for name, path in (("a", first), ("b", again), ("c", other))
    }
    assert weights["a"].keys() == weights["b"].keys()
    assert all(torch.equal(weights["a"][k], weights["b"][k]) for k in weights["a"])
    assert not all(torch.equal(weights["a"][k], weights["c"][k]) for k in weights["a"])
    assert {t.dtype for t in weights["a"].values()} == {torch.bfloat16}
    model, tokenizer = models.load_model(first)
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 2
    assert model.config.vocab_size == 49152 and model.config.tie_word_embeddings
    assert (
        tokenizer.eos_token == models.SMOLLM2_EOS and tokenizer.chat_template
    )  # the real tokenizer, unchanged
    ids = tokenizer("What is 2 + 3?", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 4


def test_a_name_unsloth_reads_as_a_precision_marker_is_refused(config_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="precision marker"):
        random_model.build_random_checkpoint(tmp_path / "llama-bf16", config_dir, **SMALL)
    assert not (tmp_path / "llama-bf16").exists()


def test_bad_config_input_is_named(config_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no fields \['num_layerz'\]"):
        random_model.build_random_checkpoint(tmp_path / "m", config_dir, num_layerz=2)
    with pytest.raises(FileNotFoundError, match="No config.json in"):
        random_model.build_random_checkpoint(tmp_path / "m", tmp_path)
    with pytest.raises(ValueError, match="more than vocab_size=100"):
        random_model.build_random_checkpoint(tmp_path / "m", config_dir, **SMALL, vocab_size=100)
    assert not (tmp_path / "m").exists()
