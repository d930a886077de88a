"""Stage 3, features: images -> the backbone's pooled feature vectors, computed once per file and cached.

transforms (resize, crop, augmentation, views) -> runtime (the backbone exported to ONNX with static shapes,
`static_graph`, and optionally quantised to int8, `int8`, run by ONNX Runtime) -> extract (parallel batches) ->
cache (SQLite, keyed by file content). Names the command line offers live here, so that `vistrain --help` need not
import numpy or torch.
"""

PRECISIONS = ("fp32", "int8")  # see int8.Precision
AUTO = "auto"  # int8 where the CPU has int8 dot products, else fp32 (cpu.resolve_precision)
