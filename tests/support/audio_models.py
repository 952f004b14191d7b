"""Tiny randomly initialised HuBERT / wav2vec 2.0 checkpoints (needs transformers and torch), saved by the tests
themselves so that the `hubert` / `wav2vec2` front ends run without a download."""

from __future__ import annotations

SMALL = {"block_ms": 400, "left_ms": 200, "right_ms": 100}  # AudioModelConfig blocks of 20 rows: several blocks in a short clip


def tiny_checkpoint(path, kind="hubert", hidden=32, seed=0, **over):
    """save_pretrained of a random tiny HubertModel / Wav2Vec2Model (2 layers, the standard 50 Hz conv strides
    and kernels, conv width 16) -> path. `over`: more config fields."""
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    common = dict(hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2, intermediate_size=2 * hidden,
                  conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    common.update(over)
    torch.manual_seed(seed)
    if kind == "hubert":
        model = transformers.HubertModel(transformers.HubertConfig(**common))
    else:
        model = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**common))
    model.save_pretrained(path)
    return path
