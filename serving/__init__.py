"""The ONNX Runtime service (``serving.app``); it never imports torch."""
