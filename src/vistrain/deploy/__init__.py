"""Layer 7, deploy: a trained run as one exported file (ONNX or TorchScript, preprocessing inside), or behind
HTTP (`serve`)."""
