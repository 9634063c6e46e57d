"""Regenerates the Hugging Face BERT exports that test_hf_exports.py imports.

    pip install torch==2.13.0 transformers==5.24.0 onnxscript
    python test/exports/make_exports.py test/exports

Not run by the tests (PyTorch is not a test dependency): the .onnx files beside this
script are its output, committed. A 2-layer BERT with hidden size 32, 4 heads and a
vocabulary of 128, randomly initialized from a fixed seed (no download), exported as
users export theirs: `torch.onnx.export` with the batch and sequence given at run time,
by the TorchScript exporter at opsets 14 (LayerNorm written out as ReduceMean, Pow,
Sqrt) and 17, and by the dynamo exporter (PyTorch 2.13's default) at opset 18; eager
attention and PyTorch's scaled dot-product attention ("sdpa", transformers' default).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from transformers import BertConfig, BertModel

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
OUTPUTS = ["last_hidden_state", "pooler_output"]
EXPORTS = [("eager", "torchscript", 14), ("eager", "torchscript", 17), ("sdpa", "torchscript", 17), ("eager", "dynamo", 18), ("sdpa", "dynamo", 18)]


class Outputs(torch.nn.Module):
    """BertModel with its inputs by keyword and its two outputs as a tuple."""

    def __init__(self, bert: BertModel):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return out.last_hidden_state, out.pooler_output


def export(folder: Path, attention: str, exporter: str, opset: int) -> None:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    config._attn_implementation = attention
    model = Outputs(BertModel(config, add_pooling_layer=True)).eval()
    args = (torch.randint(0, 128, (2, 7)), torch.ones(2, 7, dtype=torch.int64), torch.zeros(2, 7, dtype=torch.int64))
    options: dict = {"input_names": INPUTS, "output_names": OUTPUTS, "opset_version": opset}
    if exporter == "dynamo":
        batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
        options |= {"dynamo": True, "external_data": False, "dynamic_shapes": {name: {0: batch, 1: sequence} for name in INPUTS}}
    else:
        options |= {"dynamo": False, "dynamic_axes": {name: {0: "batch", 1: "sequence"} for name in [*INPUTS, OUTPUTS[0]]}}
    torch.onnx.export(model, args, str(folder / f"bert_{attention}_{exporter}_{opset}.onnx"), **options)


if __name__ == "__main__":
    for spec in EXPORTS:
        export(Path(sys.argv[1]), *spec)
