"""Inference, below training: devices, loaded models (PyTorch or ONNX), inputs, and running a model over data.

Evaluation, prediction, explanation, export and the public API use this package; training uses it too. Nothing
here imports training code. `exports`, `inputs` and `onnx` do not import torch, so the server can use them.
"""
