"""Layer 5, training: the head on cached features, then optionally the backbone's last blocks, in one epoch loop
that keeps the best weights across stages; the job that turns data into a run directory.
"""
