"""From a checkpoint to serving: OpenSearch ml-commons artifacts, a sentence-transformers directory,
ONNX, and a model card (``python -m sparse.export``)."""
