"""Layer 1, data: image files and their labels in (folders, flat Kaggle-named folders, label CSVs), samples out.

Nothing here imports torch: the data layer is what `split`, `check` and the start of `train` share.
"""
