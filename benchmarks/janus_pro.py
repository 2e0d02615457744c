"""Randomly initialised Janus-Pro-1B / -7B with their published configurations, for speed checks on a GPU.

The sizes are those of deepseek-ai/Janus-Pro-{1B,7B} config.json (language_config, vision/aligner/gen_* configs).
transformers' Janus sub-config defaults are the Janus-Pro-1B ones: SigLIP-L/16 at 384 px (hidden 1024, 24 layers,
16 heads, mlp_ratio 4 -> 576 tokens) and the VQ-16 tokenizer (16384 codes, embed_dim 8, base 128 channels x
(1,1,2,2,4), latent 256, 2 res blocks) are shared by both; only the projections into the LM follow its width
(2048 on 1B, 4096 on 7B). `mini` keeps the layout at a size a CPU runs in seconds: the dry run of a GPU script.

The tokenizer is the tiny word-level one (its ids fit in the 102400 vocabulary): prompts are a few tokens shorter
than a real checkpoint's, which leaves the cost of 576 image tokens unchanged.
"""

from __future__ import annotations

import torch


def janus_pro(hidden: int, intermediate: int, layers: int, heads: int) -> dict:
    """A Janus-Pro configuration: the LM's sizes vary, SigLIP-L/16 at 384 px and VQ-16 are shared, and the
    projections into the LM follow its width."""
    return dict(text=dict(vocab_size=102400, hidden_size=hidden, intermediate_size=intermediate,
                          num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                          max_position_embeddings=16384, rms_norm_eps=1e-6),
                vision=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, image_size=384,
                            patch_size=16, mlp_ratio=4.0, projection_dim=hidden, depth=2, num_image_tokens=576),
                vq=dict(num_embeddings=16384, embed_dim=8, base_channels=128, channel_multiplier=[1, 1, 2, 2, 4],
                        latent_channels=256, num_res_blocks=2, projection_dim=hidden, image_token_embed_dim=hidden))


ARCHS = {
    "7b": janus_pro(hidden=4096, intermediate=11008, layers=30, heads=32),
    "1b": janus_pro(hidden=2048, intermediate=5632, layers=24, heads=16),
    "mini": dict(text=dict(vocab_size=102400, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                           rms_norm_eps=1e-6),
                 vision=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=64,
                             patch_size=16, mlp_ratio=2.0, projection_dim=128, depth=2, num_image_tokens=16),
                 vq=dict(num_embeddings=16384, embed_dim=8, base_channels=32, channel_multiplier=[1, 1, 2, 2, 4],
                         latent_channels=32, num_res_blocks=1, projection_dim=128, image_token_embed_dim=128,
                         num_patches=4)),
}
NAMES = {"7b": "Janus-Pro-7B", "1b": "Janus-Pro-1B", "mini": "mini Janus-Pro layout"}


def build(arch: str, device: str, dtype: torch.dtype = torch.bfloat16):
    """A JanusAdapter over a randomly initialised model of `arch` ('7b', '1b', 'mini'), built on `device`
    ('meta' builds the shapes without memory)."""
    from transformers import JanusConfig, JanusForConditionalGeneration, JanusVisionConfig, JanusVQVAEConfig
    from transformers import LlamaConfig

    from benchmarks.adapter_speed import PROMPTS
    from ospo.model import JanusAdapter
    from ospo.tiny import BASE_WORDS, IMAGE, build_processor, build_tokenizer

    if arch not in ARCHS:
        raise ValueError(f"unknown arch '{arch}'; choose one of {sorted(ARCHS)}")
    spec = ARCHS[arch]
    tokenizer = build_tokenizer(list(BASE_WORDS) + " ".join(PROMPTS).split())
    text = LlamaConfig(**spec["text"], bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    config = JanusConfig(text_config=text, vision_config=JanusVisionConfig(**spec["vision"]),
                         vq_config=JanusVQVAEConfig(**spec["vq"]),
                         image_token_id=tokenizer.convert_tokens_to_ids(IMAGE), tie_word_embeddings=False)
    with torch.device(device):
        model = JanusForConditionalGeneration._from_config(config, dtype=dtype)
    processor = build_processor(tokenizer, config.vision_config.image_size, config.vision_config.num_image_tokens)
    return JanusAdapter(model, processor, name=f"random {NAMES[arch]}")
