"""The document encoder as one self-contained graph: TorchScript (ml-commons ``TORCH_SCRIPT``) and ONNX.

The graph is ``SparseEncoder.forward`` itself (the training path: MLM logits, log(1 + relu),
masked max or sum pooling, the l0 activation, special tokens zeroed, pruning), so an exported
model computes exactly what the checkpoint computes. Shapes are traced with a padded batch, so
the graphs take any batch size and length.
"""

from __future__ import annotations

import warnings
from typing import Dict

import torch
from torch import nn

from sparse.errors import UserError
from sparse.modeling.encoder import SparseEncoder

# texts of different lengths, so the traced example carries padding
_EXAMPLE_TEXTS = ["a sparse encoder exported for serving", "short text"]


class DocumentEncoderGraph(nn.Module):
    """``{"input_ids", "attention_mask"} -> {"output": (batch, vocab) document weights}``.

    ml-commons hands a TorchScript model one dict input (DJL names its tensors
    ``input1.input_ids`` / ``input1.attention_mask``) and reads the ``output`` entry.
    """

    def __init__(self, encoder: SparseEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return {"output": self.encoder(features["input_ids"], features["attention_mask"])}


class _PositionalGraph(nn.Module):
    """The same graph with positional inputs: ONNX names inputs by position."""

    def __init__(self, encoder: SparseEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids, attention_mask)


def _example(encoder: SparseEncoder) -> dict[str, torch.Tensor]:
    return {k: v.to(encoder.device) for k, v in encoder.tokenize(_EXAMPLE_TEXTS).items()}


def trace_document_encoder(encoder: SparseEncoder, path: str) -> str:
    """Trace the document encoder to a TorchScript file at ``path`` (fp32, CPU)."""
    encoder = encoder.float().cpu().eval()
    graph = DocumentEncoderGraph(encoder).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on constants
        try:
            traced = torch.jit.trace(graph, example_inputs=(_example(encoder),), strict=False)
        except Exception as exc:  # tracing failures come from the model code; say which model
            raise UserError(f"cannot trace {type(encoder.mlm).__name__} to TorchScript: {exc}") from None
    traced.save(path)
    return path


def export_onnx(encoder: SparseEncoder, path: str, opset: int = 17) -> str:
    """Write the document encoder as ONNX (inputs ``input_ids``, ``attention_mask``; output ``output``)."""
    if not onnx_available():  # torch's exporter needs it
        raise UserError("ONNX export needs the onnx package: pip install onnx")
    encoder = encoder.float().cpu().eval()
    example = _example(encoder)
    dynamic = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
               "output": {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_PositionalGraph(encoder).eval(), (example["input_ids"], example["attention_mask"]),
                          path, input_names=["input_ids", "attention_mask"], output_names=["output"],
                          dynamic_axes=dynamic, opset_version=opset, dynamo=False)
    return path


def onnx_available() -> bool:
    """Whether ONNX export can run here (the onnx package is installed)."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        return False
    return True
