"""Serving exported models over the TensorFlow Serving REST API, with ONNX Runtime."""
