"""Datasets: COCO-format readers, BDD100K conversion, and the built-in synthetic dataset."""
