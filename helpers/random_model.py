"""A random-weight checkpoint of a given architecture, built from a config and a local tokenizer.

For a machine that reaches no model hub and takes only small files (the GPU check of `scripts/gpu_check.py`):
no weights that matter fit, so the check builds a model of the config's architecture (SmolLM2's: Llama's) with
random weights, and the real tokenizer. Such a model says nothing about accuracy; it exercises every code path
that loading, LoRA, training, saving and generation take.

    python -m helpers.random_model --config-dir outputs/gpu-kit/tokenizer --out /tmp/llama-random
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch

from helpers.files import write_dir_atomically

# Unsloth's loader reads these endings of a model's name as precision markers (a 16-bit or 4-bit upload) and
# changes how it loads (unsloth/models/loader.py): a local checkpoint must not end with one.
RESERVED_ENDINGS = ("-bf16", "-bnb-4bit")
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def build_random_checkpoint(
    out_dir: str | os.PathLike,
    config_dir: str | os.PathLike,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.bfloat16,
    **config_changes: Any,
) -> Path:
    """Write `out_dir`: a model of `config_dir`'s config.json with random weights (seeded), and its tokenizer.

    Args:
        config_dir: a folder with config.json and the tokenizer files (no weights needed).
        config_changes: config fields to change, e.g. `num_hidden_layers=2` for a smaller model.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    out = Path(out_dir)
    if out.name.lower().endswith(RESERVED_ENDINGS):
        raise ValueError(
            f"{out}: a model folder ending in {' or '.join(RESERVED_ENDINGS)} is read by Unsloth as a "
            "precision marker. Choose another name."
        )
    if not (Path(config_dir) / "config.json").is_file():
        raise FileNotFoundError(f"No config.json in {config_dir}: pass the folder of a checkpoint's config.")
    config = AutoConfig.from_pretrained(config_dir)
    unknown = sorted(key for key in config_changes if not hasattr(config, key))
    if unknown:
        raise ValueError(f"{config.model_type} configs have no fields {unknown}.")
    for key, value in config_changes.items():
        setattr(config, key, value)
    tokenizer = AutoTokenizer.from_pretrained(config_dir)
    if len(tokenizer) > config.vocab_size:
        raise ValueError(
            f"The tokenizer has {len(tokenizer)} tokens, more than vocab_size={config.vocab_size}."
        )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if (Path(config_dir) / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(config_dir)

    write_dir_atomically(out, lambda tmp: (model.save_pretrained(tmp), tokenizer.save_pretrained(tmp)))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config-dir", type=Path, required=True, help="folder with config.json and a tokenizer"
    )
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    parser.add_argument("--layers", type=int, help="num_hidden_layers (default: the config's)")
    args = parser.parse_args(argv)
    changes = {"num_hidden_layers": args.layers} if args.layers else {}
    out = build_random_checkpoint(
        args.out, args.config_dir, seed=args.seed, dtype=DTYPES[args.dtype], **changes
    )
    print(out)


if __name__ == "__main__":
    main()
