"""Model registry: ONNX signatures and reference samples, stored in MLflow."""
