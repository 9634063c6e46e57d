"""Regenerates the Hugging Face model exports that test_hf_exports.py imports.

    pip install torch==2.13.0 transformers==5.24.0 onnxscript
    python test/exports/make_exports.py test/exports            # the tiny test models
    python test/exports/make_exports.py DIR --base              # full-sized ones, for benchmarks

Not run by the tests (PyTorch is not a test dependency): the .onnx files beside this
script are its output, committed. Each model is tiny (2 layers, hidden size 32, 4
heads, a vocabulary of 128), randomly initialized from a fixed seed (no download), and
exported as users export theirs: `torch.onnx.export` with the batch and sequence given
at run time. BERT comes five ways: by the TorchScript exporter at opsets 14 (LayerNorm
written out as ReduceMean, Pow, Sqrt) and 17, and by the dynamo exporter (PyTorch
2.13's default) at opset 18, with eager attention and with PyTorch's scaled
dot-product attention ("sdpa", transformers' default). DistilBERT, RoBERTa (position
ids by CumSum), ALBERT (token types by GatherElements), GPT-2 (Split, a causal mask,
GELU with tanh), ViT (a patch Conv), LLaMA (rotary embeddings: Cos, Sin, Neg; RMSNorm;
grouped-query attention), CLIP's text encoder (ArgMax pooling), DeBERTa-v2 (relative
positions: Log, Abs, Sign-like Where), MPNet, MobileBERT (Pad) and Swin (windows:
Mod, Pad) come by the TorchScript exporter at opset 17.
`--base` exports full-sized models instead, for benchmarks: BERT-base (110M parameters)
two ways, GPT-2 (124M) and a LLaMA of SmolLM2-135M's shape two ways.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers as hf

TEXT_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}


@dataclass(frozen=True)
class Export:
    name: str
    config: Callable[[], hf.PretrainedConfig]
    model: type
    inputs: list[str]
    exporter: str = "torchscript"
    opset: int = 17
    attention: str = "eager"


def _bert(**sizes) -> Callable[[], hf.PretrainedConfig]:
    return lambda: hf.BertConfig(**sizes)


TINY_BERT = _bert(vocab_size=128, max_position_embeddings=64, **TINY)
EXPORTS = [
    Export("bert_eager_torchscript_14", TINY_BERT, hf.BertModel, TEXT_INPUTS, opset=14),
    Export("bert_eager_torchscript_17", TINY_BERT, hf.BertModel, TEXT_INPUTS),
    Export("bert_sdpa_torchscript_17", TINY_BERT, hf.BertModel, TEXT_INPUTS, attention="sdpa"),
    Export("bert_eager_dynamo_18", TINY_BERT, hf.BertModel, TEXT_INPUTS, "dynamo", 18),
    Export("bert_sdpa_dynamo_18", TINY_BERT, hf.BertModel, TEXT_INPUTS, "dynamo", 18, "sdpa"),
    Export(
        "distilbert_torchscript_17",
        lambda: hf.DistilBertConfig(vocab_size=128, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64),
        hf.DistilBertModel,
        TEXT_INPUTS[:2],
    ),
    Export("roberta_torchscript_17", lambda: hf.RobertaConfig(vocab_size=128, max_position_embeddings=70, **TINY), hf.RobertaModel, TEXT_INPUTS[:2]),
    Export(
        "albert_torchscript_17",
        lambda: hf.AlbertConfig(vocab_size=128, embedding_size=16, max_position_embeddings=64, **TINY),
        hf.AlbertModel,
        TEXT_INPUTS[:2],
    ),
    Export("gpt2_torchscript_17", lambda: hf.GPT2Config(vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_positions=64), hf.GPT2Model, TEXT_INPUTS[:2]),
    Export("vit_torchscript_17", lambda: hf.ViTConfig(image_size=32, patch_size=8, **TINY), hf.ViTModel, ["pixel_values"]),
    Export(
        "llama_torchscript_17",
        lambda: hf.LlamaConfig(vocab_size=128, num_key_value_heads=2, max_position_embeddings=64, **TINY),
        hf.LlamaModel,
        TEXT_INPUTS[:2],
    ),
    Export(
        "clip_text_torchscript_17",
        lambda: hf.CLIPTextConfig(vocab_size=128, max_position_embeddings=64, **TINY),
        hf.CLIPTextModel,
        TEXT_INPUTS[:2],
    ),
    Export("deberta_v2_torchscript_17", lambda: hf.DebertaV2Config(vocab_size=128, max_position_embeddings=64, **TINY), hf.DebertaV2Model, TEXT_INPUTS[:2]),
    Export("mpnet_torchscript_17", lambda: hf.MPNetConfig(vocab_size=128, max_position_embeddings=70, **TINY), hf.MPNetModel, TEXT_INPUTS[:2]),
    Export(
        "mobilebert_torchscript_17",
        lambda: hf.MobileBertConfig(vocab_size=128, embedding_size=16, intra_bottleneck_size=16, true_hidden_size=16, max_position_embeddings=64, **TINY),
        hf.MobileBertModel,
        TEXT_INPUTS[:2],
    ),
    Export(
        "swin_torchscript_17",
        lambda: hf.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4),
        hf.SwinModel,
        ["pixel_values"],
    ),
]
SMOLLM_135M = hf.LlamaConfig(  # SmolLM2-135M's shape: a LLaMA as small ones are built now
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=2048,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
)
BASE_EXPORTS = [
    Export("bert_base_eager_torchscript_17", hf.BertConfig, hf.BertModel, TEXT_INPUTS),
    Export("bert_base_sdpa_dynamo_18", hf.BertConfig, hf.BertModel, TEXT_INPUTS, "dynamo", 18, "sdpa"),
    Export("gpt2_base_torchscript_17", hf.GPT2Config, hf.GPT2Model, TEXT_INPUTS[:2]),
    Export("smollm_135m_torchscript_17", lambda: SMOLLM_135M, hf.LlamaModel, TEXT_INPUTS[:2]),
    Export("smollm_135m_sdpa_dynamo_18", lambda: SMOLLM_135M, hf.LlamaModel, TEXT_INPUTS[:2], "dynamo", 18, "sdpa"),
]


class Outputs(torch.nn.Module):
    """A transformers model with its inputs by position and its last hidden state (and
    pooled output, where it has one) as a tuple."""

    def __init__(self, model: torch.nn.Module, inputs: list[str]):
        super().__init__()
        self.model = model
        self.inputs = inputs

    def forward(self, *args):
        out = self.model(**dict(zip(self.inputs, args)))
        pooled = getattr(out, "pooler_output", None)
        return (out.last_hidden_state,) if pooled is None else (out.last_hidden_state, pooled)


def _example(export: Export, config: hf.PretrainedConfig) -> tuple[torch.Tensor, ...]:
    if export.inputs == ["pixel_values"]:
        return (torch.randn(2, 3, config.image_size, config.image_size),)
    ids = torch.randint(0, config.vocab_size, (2, 7))
    return (ids, torch.ones_like(ids), torch.zeros_like(ids))[: len(export.inputs)]


def export(folder: Path, spec: Export) -> None:
    torch.manual_seed(0)
    config = spec.config()
    config._attn_implementation = spec.attention
    model = Outputs(spec.model(config), spec.inputs).eval()
    args = _example(spec, config)
    outputs = ["last_hidden_state", "pooler_output"][: len(model(*args))]
    options: dict = {"input_names": spec.inputs, "output_names": outputs, "opset_version": spec.opset}
    dims = {0: "batch"} if spec.inputs == ["pixel_values"] else {0: "batch", 1: "sequence"}
    if spec.exporter == "dynamo":
        named = {axis: torch.export.Dim(name) for axis, name in dims.items()}
        options |= {"dynamo": True, "external_data": False, "dynamic_shapes": {"args": tuple(named for _ in spec.inputs)}}
    else:
        options |= {"dynamo": False, "dynamic_axes": {name: dims for name in [*spec.inputs, outputs[0]]}}
    torch.onnx.export(model, args, str(folder / f"{spec.name}.onnx"), **options)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--base", action="store_true", help="export full-sized models (BERT-base, GPT-2, SmolLM2-135M's shape) instead of the tiny ones")
    arguments = parser.parse_args()
    for spec in BASE_EXPORTS if arguments.base else EXPORTS:
        export(arguments.folder, spec)
