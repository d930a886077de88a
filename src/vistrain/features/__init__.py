"""Stage 3, features: images -> the backbone's pooled feature vectors, computed once per file and cached.

transforms (resize, crop, augmentation, views) -> runtime (the backbone exported to ONNX, run by ONNX Runtime)
-> extract (parallel batches) -> cache (SQLite, keyed by file content).
"""
