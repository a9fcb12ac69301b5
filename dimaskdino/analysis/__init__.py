"""Analyses of trained models: the layer-by-layer probe of the detection-segmentation imbalance."""
