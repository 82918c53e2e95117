"""Model loading, LoRA, and saved variants on the CPU model: `pytest tests/unit/test_models.py`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import decoding, models


def test_smollm2_tokenizer_has_the_config_eos_and_a_pad(smollm2) -> None:
    model, tokenizer = smollm2
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == 2
    assert tokenizer.pad_token_id == 2 and tokenizer.padding_side == "left"
    assert model.config.eos_token_id == 2 and model.gsm8k_backend == "transformers"
    assert getattr(model.config, "quantization_config", None) is None  # the GGUF marker is gone


def test_a_greedy_answer_ends_at_im_end(smollm2) -> None:
    model, tokenizer = smollm2
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        tokenize=False,
        add_generation_prompt=True,
    )
    (done,) = decoding.stream_completions(
        model,
        tokenizer,
        [prompt],
        [decoding.Request(0, 0, 0)],
        temperature=0,
        top_p=1,
        max_new_tokens=32,
        max_rows=1,
    )
    assert done.finish_reason == "stop" and done.n_tokens < 32 and "Paris" in done.text


def test_materialized_checkpoint_is_cached() -> None:
    path = models.materialize_smollm2()
    assert (path / "model.safetensors").exists() and models.materialize_smollm2() == path


def test_auto_backend_is_transformers_without_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert models.resolve_backend("auto") == ("transformers", "no CUDA device")
    with pytest.raises(RuntimeError, match="needs a CUDA GPU.*no CUDA device"):
        models.resolve_backend("unsloth")
    with pytest.raises(ValueError, match="Unknown backend 'tpu'"):
        models.resolve_backend("tpu")


def test_unknown_model_alias_is_refused() -> None:
    with pytest.raises(ValueError, match="Unknown model 'smollm3'.*smollm2-135m"):
        models.load_model("smollm3")


def test_saved_variant_reloads_with_the_same_weights(smollm2, tmp_path: Path) -> None:
    model, tokenizer = models.load_model(models.SMOLLM2_ALIAS)
    lora = models.add_lora(model, r=4, alpha=8)
    with torch.no_grad():  # make the adapter do something: fresh LoRA B matrices are zero
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.fill_(0.01)
    target = models.save_variant(
        lora,
        tokenizer,
        tmp_path,
        "SFT_1",
        {"base_model": "smollm2-135m", "parent": "base"},
        extras={"log_history.csv": "step,loss\n1,0.5\n"},
    )
    manifest = json.loads((target / "manifest.json").read_text())
    assert (target / "log_history.csv").read_text() == "step,loss\n1,0.5\n"
    assert manifest["name"] == "SFT_1" and manifest["backend"] == "transformers"
    assert manifest["versions"]["transformers"] and manifest["parent"] == "base"
    assert list(target.glob("*.safetensors"))

    merged, _ = models.load_model(models.SMOLLM2_ALIAS, adapter=target)
    ids = tokenizer("2 + 2 =", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = lora(input_ids=ids).logits
        base = smollm2[0](input_ids=ids).logits
        assert torch.allclose(merged(input_ids=ids).logits, expected, atol=1e-4)
        assert not torch.allclose(base, expected, atol=1e-3)  # the adapter changed the model
    trainable, _ = models.load_model(models.SMOLLM2_ALIAS, adapter=target, trainable=True)
    assert any(p.requires_grad for p in trainable.parameters())
    assert trainable.gsm8k_adapter == str(target)


def test_adapter_without_manifest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="No manifest.json in .*save_variant"):
        models.load_model(models.SMOLLM2_ALIAS, adapter=tmp_path)


def test_adapter_of_another_base_is_refused(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(
        json.dumps({"base_model": models.ORIGINAL_MODEL, "parent": "base"})
    )
    with pytest.raises(
        ValueError, match="trained on base 'unsloth/Llama-3.2-1B-Instruct', not 'smollm2-135m'"
    ):
        models.load_model(models.SMOLLM2_ALIAS, adapter=tmp_path)


def test_save_variant_requires_lineage_and_keeps_old_files_on_error(smollm2, tmp_path: Path) -> None:
    model, tokenizer = smollm2
    with pytest.raises(ValueError, match="lacks \\['parent'\\]"):
        models.save_variant(model, tokenizer, tmp_path, "SFT_1", {"base_model": "x"})
    keep = tmp_path / "models" / "ORPO_1"
    keep.mkdir(parents=True)
    (keep / "manifest.json").write_text("{}")

    class Broken:
        def save_pretrained(self, path):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        models.save_variant(Broken(), tokenizer, tmp_path, "ORPO_1", {"base_model": "x", "parent": "base"})
    assert (keep / "manifest.json").read_text() == "{}"  # the earlier variant survives a failed save
    assert [p.name for p in keep.parent.iterdir()] == ["ORPO_1"]  # no temporary directory left behind
