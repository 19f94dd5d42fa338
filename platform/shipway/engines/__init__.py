"""Engine compilation: what a build does to a registered FP32 ONNX model.

calibration (ranges from data, once) → quantize (Q/DQ encoding per target) →
selective (keep the most sensitive layers in FP32 until the gate passes) →
evaluate (the accuracy gate's inputs) → benchmark (side by side, one run);
tensorrt compiles a Q/DQ or FP16 model into a plan where TensorRT and a GPU exist.
"""
