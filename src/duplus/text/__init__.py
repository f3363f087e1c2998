"""Prompts and the text encoder: templates, a frozen Hugging Face encoder, an embedding cache."""

from duplus.text.cache import EmbeddingCache
from duplus.text.encoder import DEFAULT_ENCODER, POOLINGS, TextEncoder
from duplus.text.prompts import sample_t2_prompt, single_prompt_text, t2_prompts

__all__ = [
    "DEFAULT_ENCODER",
    "POOLINGS",
    "EmbeddingCache",
    "TextEncoder",
    "sample_t2_prompt",
    "single_prompt_text",
    "t2_prompts",
]
