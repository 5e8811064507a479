"""Build a tiny random-weight Gemma 4 checkpoint, locally and deterministically, with the env's transformers.

Runs INSIDE the environment under test (stdlib + the stack). Argument: JSON with ``out``, ``architecture``,
``features`` (per_layer, moe, k_eq_v), ``seed``. A transformers that does not know Gemma 4 fails here, honestly.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import ProbeFailure, main

CORPUS = (
    "the quick brown fox jumps over the lazy dog . a tiny model answers every question with a few words . "
    "triton serves models , vllm serves models , transformers loads configs . one two three four five six "
    "seven eight nine ten . hello world ! how are you ? i am fine , thank you . gemma is a family of models ."
)
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<mask>"]
# The multimodal class's placeholder tokens: tokenizer attribute -> (token, config field of its id).
MM_TOKENS = {
    "image_token": ("<image_soft_token>", "image_token_id"),
    "boi_token": ("<start_of_image>", "boi_token_id"),
    "eoi_token": ("<end_of_image>", "eoi_token_id"),
    "audio_token": ("<audio_soft_token>", "audio_token_id"),
    "boa_token": ("<start_of_audio>", "boa_token_id"),
    "eoa_token": ("<end_of_audio>", "eoa_token_index"),
    "video_token": ("<|video|>", "video_token_id"),
}
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>"
    "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n{{ message['content'] }}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
VOCAB = 512
COMPLETE = ".complete"  # written last: a folder without it is not a checkpoint
IMAGE_SEQ_LENGTH = 280  # transformers' Gemma4Processor default (processing_gemma4.py, image_seq_length)


def build_tokenizer(out: Path) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=SPECIALS + [token for token, _ in MM_TOKENS.values()],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([CORPUS] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        extra_special_tokens={attr: token for attr, (token, _) in MM_TOKENS.items()},
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def save_processor(out: Path, tokenizer: Any) -> None:
    """The multimodal class needs its processor (image, audio, video) beside the tokenizer."""
    from transformers.models.gemma4 import feature_extraction_gemma4, processing_gemma4, video_processing_gemma4

    try:
        from transformers.models.gemma4.image_processing_gemma4 import Gemma4ImageProcessor as Images
    except ImportError:  # no torchvision backend: the PIL one
        from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil as Images
    processor = processing_gemma4.Gemma4Processor(
        feature_extractor=feature_extraction_gemma4.Gemma4AudioFeatureExtractor(),
        image_processor=Images(),
        tokenizer=tokenizer,
        video_processor=video_processing_gemma4.Gemma4VideoProcessor(),
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)


def text_config_kwargs(features: dict[str, Any], vocab: int) -> dict[str, Any]:
    # Full-attention layers after sliding ones (Gemma's pattern); with per-layer KV sharing the shared tail must
    # find an earlier layer of each type, so six layers.
    layer_types = ["sliding_attention", "sliding_attention", "full_attention"] * 2
    layers = len(layer_types)
    kw: dict[str, Any] = dict(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        global_head_dim=32,
        max_position_embeddings=2048,
        sliding_window=16,
        layer_types=layer_types,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        vocab_size_per_layer_input=vocab,
        hidden_size_per_layer_input=16 if features.get("per_layer") else 0,
        num_kv_shared_layers=2 if features.get("per_layer") else 0,
        attention_k_eq_v=bool(features.get("k_eq_v")),
    )
    if features.get("moe"):
        kw.update(enable_moe_block=True, num_experts=4, top_k_experts=2, moe_intermediate_size=32)
    return kw


def build(args: dict[str, Any]) -> dict[str, Any]:
    import torch
    import transformers

    out = Path(args["out"])
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(int(args.get("seed", 0)))
    arch = args["architecture"]
    features = args.get("features", {})
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if "gemma4" not in CONFIG_MAPPING_NAMES:
        raise ProbeFailure(
            "model-type-unknown",
            f"transformers {transformers.__version__} has no Gemma 4 (no 'gemma4' in CONFIG_MAPPING_NAMES)",
        )
    try:
        from transformers import Gemma4TextConfig
    except ImportError as exc:  # the model type is known: something under it does not import
        raise ProbeFailure(
            "import-error", f"transformers {transformers.__version__} knows gemma4 but its classes do not import: {exc}"
        ) from exc
    tokenizer = build_tokenizer(out)
    vocab = max(VOCAB, len(tokenizer))
    text = Gemma4TextConfig(**text_config_kwargs(features, vocab))
    if arch == "Gemma4ForCausalLM":
        text.architectures = [arch]
        model = transformers.Gemma4ForCausalLM(text)
    elif arch == "Gemma4ForConditionalGeneration":
        from transformers import Gemma4Config

        ids = {field: tokenizer.convert_tokens_to_ids(token) for token, field in MM_TOKENS.values()}
        config = Gemma4Config(text_config=text.to_dict(), **_tiny_towers(features), **ids)
        config.architectures = [arch]
        model = transformers.Gemma4ForConditionalGeneration(config)
        save_processor(out, tokenizer)
    else:
        raise ProbeFailure("arch-unsupported", f"no tiny builder for {arch}")
    model = model.to(torch.float32)  # greedy ids are compared across engines: no bf16 rounding ties
    model.save_pretrained(out, safe_serialization=True)
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    config = json.loads((out / "config.json").read_text())
    return {
        "detail": f"tiny {arch} ({size / 1e6:.1f} MB) written by transformers {transformers.__version__}",
        "evidence": {
            "architecture": config.get("architectures"),
            "model_type": config.get("model_type"),
            "bytes": size,
            "parameters": sum(p.numel() for p in model.parameters()),
            "transformers": transformers.__version__,
        },
    }


def _tiny_towers(features: dict[str, Any]) -> dict[str, Any]:
    """Tiny vision (and audio, where the variant has it) towers; unknown fields are left to defaults."""
    out: dict[str, Any] = {}
    try:
        from transformers.models.gemma4.configuration_gemma4 import Gemma4VisionConfig

        out["vision_config"] = Gemma4VisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            # Soft tokens per image: vLLM reads this field; some transformers releases do not define it. The
            # value is the Gemma4Processor's own default image_seq_length, so processor and tower agree.
            default_output_length=IMAGE_SEQ_LENGTH,
        ).to_dict()
    except ImportError:
        pass
    if features.get("audio"):
        from transformers.models.gemma4.configuration_gemma4 import Gemma4AudioConfig

        out["audio_config"] = Gemma4AudioConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).to_dict()
    return out


def build_once(args: dict[str, Any]) -> dict[str, Any]:
    """``build`` into a private folder beside ``out``, then renamed to ``out``: nobody reads a partial checkpoint,
    and two builds of the same one at once (the build is deterministic) leave one complete copy."""
    out = Path(args["out"])
    if (out / COMPLETE).exists():
        return {"detail": f"reused tiny {args['architecture']}", "evidence": {"path": str(out), "reused": True}}
    tmp = out.with_name(f"{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        result = build({**args, "out": str(tmp)})
        (tmp / COMPLETE).write_text("")
        if not (out / COMPLETE).exists():  # else another build finished first: its copy is the same
            shutil.rmtree(out, ignore_errors=True)  # a copy without the marker is a crashed build's
            os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["evidence"]["path"] = str(out)
    return result


if __name__ == "__main__":
    main(build_once)
