"""Layer 4, the model: the head on the features, each task's loss and metrics, and a trained run on disk.

tasks (loss and activation per task) and heads (the new layers) make the model; metrics score it; run_dir is the
run directory's one schema; predictor loads a run and predicts image files. Names the command line offers live
here, so that `vistrain --help` need not import torch.
"""

HEADS = ("mlp", "linear", "logistic")  # see heads.build_head
