"""Tiny random vision-language models of the families the MLLM embedders are built on, saved as
local Hugging Face folders (model + processor), offline: Qwen2-VL (the hierarchical-prompt paper),
Qwen2.5-Omni thinker (LCO-Emb) and LLaVA-NeXT (UniME). Word-level tokenizers over a small
vocabulary stand in for the real BPE ones; the chat templates render messages as the families' do."""

from __future__ import annotations

from pathlib import Path

import torch

QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                "<|video_pad|>"]
OMNI_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_bos|>", "<|vision_eos|>", "<|IMAGE|>",
                "<|VIDEO|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]
WORDS = ["system", "user", "assistant", "a", "red", "star", "blue", "circle", "given", "image", "text", "represent",
         "the", "in", "one", "word.", "word:", "summarize", "above", "find", "me", "an", "that", "matches", "caption:",
         "provided", "describe", "only", "given,", "image,", "text/image", "[INST]", "[/INST]", "summary", "sentence",
         "<image>", "photo", "of", "left"]
TINY_TEXT = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
             "num_key_value_heads": 2, "max_position_embeddings": 256}
MROPE = {"type": "mrope", "mrope_section": [1, 1, 2], "rope_type": "default"}

# the families' chat templates, reduced to what embedding prompts use (system / user, image and text parts)
QWEN_CHAT = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% for c in message['content'] %}"
             "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}"
             "{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
OMNI_CHAT = QWEN_CHAT.replace("<|vision_start|><|image_pad|><|vision_end|>", "<|vision_bos|><|IMAGE|><|vision_eos|>")


def word_tokenizer(special: list[str], **extra: object):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(special + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=special[0]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=special[0], eos_token="<|im_end|>" if
                                   "<|im_end|>" in special else special[0], additional_special_tokens=special, **extra)


def save_tiny_qwen2_vl(folder: Path, seed: int = 0) -> Path:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    tok = word_tokenizer(QWEN_SPECIAL)
    ids = tok.get_vocab()
    cfg = Qwen2VLConfig(
        text_config={**TINY_TEXT, "vocab_size": len(ids), "rope_scaling": MROPE, "bos_token_id": 0, "eos_token_id": 2},
        vision_config={"depth": 1, "embed_dim": 16, "hidden_size": 16, "num_heads": 2, "mlp_ratio": 2, "patch_size": 14,
                       "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(seed)
    Qwen2VLForConditionalGeneration(cfg).save_pretrained(str(folder))
    pixels = {"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 4}
    Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(size=pixels), tokenizer=tok,
                     video_processor=Qwen2VLVideoProcessor(), chat_template=QWEN_CHAT).save_pretrained(str(folder))
    return folder


def save_tiny_omni_thinker(folder: Path, seed: int = 0) -> Path:
    from transformers import WhisperFeatureExtractor
    from transformers.models.qwen2_5_omni import (
        Qwen2_5OmniProcessor,
        Qwen2_5OmniThinkerConfig,
        Qwen2_5OmniThinkerForConditionalGeneration,
    )
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    tok = word_tokenizer(OMNI_SPECIAL, extra_special_tokens={
        "image_token": "<|IMAGE|>", "audio_token": "<|AUDIO|>", "video_token": "<|VIDEO|>",
        "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
        "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"})
    ids = tok.get_vocab()
    cfg = Qwen2_5OmniThinkerConfig(
        audio_config={"num_mel_bins": 16, "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 16,
                      "d_model": 16, "output_dim": 16, "n_window": 4, "max_source_positions": 32},
        vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16,
                       "fullatt_block_indexes": [0], "patch_size": 14, "spatial_merge_size": 2,
                       "temporal_patch_size": 2, "window_size": 28},
        text_config={**TINY_TEXT, "vocab_size": len(ids), "rope_scaling": MROPE},
        audio_token_index=ids["<|AUDIO|>"], image_token_index=ids["<|IMAGE|>"], video_token_index=ids["<|VIDEO|>"],
        audio_start_token_id=ids["<|audio_bos|>"], audio_end_token_id=ids["<|audio_eos|>"], user_token_id=ids["user"])
    cfg.vision_start_token_id, cfg.vision_end_token_id = ids["<|vision_bos|>"], ids["<|vision_eos|>"]
    torch.manual_seed(seed)
    Qwen2_5OmniThinkerForConditionalGeneration(cfg).save_pretrained(str(folder))
    pixels = {"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 4}
    Qwen2_5OmniProcessor(image_processor=Qwen2VLImageProcessor(size=pixels), video_processor=Qwen2VLVideoProcessor(),
                         feature_extractor=WhisperFeatureExtractor(feature_size=16), tokenizer=tok,
                         chat_template=OMNI_CHAT).save_pretrained(str(folder))
    return folder


def save_tiny_llava_next(folder: Path, seed: int = 0) -> Path:
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextImageProcessor, LlavaNextProcessor

    tok = word_tokenizer(["<unk>", "<s>", "</s>", "<image>"], extra_special_tokens={"image_token": "<image>"})
    ids = tok.get_vocab()
    cfg = LlavaNextConfig(
        vision_config={"model_type": "clip_vision_model", "hidden_size": 16, "intermediate_size": 32,
                       "num_attention_heads": 2, "num_hidden_layers": 2, "image_size": 16, "patch_size": 8},
        text_config={"model_type": "mistral", **TINY_TEXT, "vocab_size": len(ids)},
        image_token_index=ids["<image>"], image_grid_pinpoints=[[16, 16], [16, 32], [32, 16]],
        vision_feature_layer=-1, vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    LlavaNextForConditionalGeneration(cfg).save_pretrained(str(folder))
    proc = LlavaNextImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16},
                              image_grid_pinpoints=[[16, 16], [16, 32], [32, 16]])
    LlavaNextProcessor(image_processor=proc, tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                       image_token="<image>", num_additional_image_tokens=1).save_pretrained(str(folder))
    return folder
