"""Layer 6, analysis: what a trained model is sure of, unsure of and wrong about, as tables, CSV files and the
self-contained HTML report; scoring a run on labelled data (`evaluate`); the augmentation preview."""
