"""Layer 3, features: images -> the backbone's pooled feature vectors, computed once per file and cached.

transforms (resize, crop, augmentation, views) -> runtime (the backbone exported to ONNX with static shapes,
`static_graph`, and optionally quantised to int8, `int8`, run by ONNX Runtime) -> extract (parallel batches) ->
cache (SQLite, keyed by file content and `precision`).
"""
