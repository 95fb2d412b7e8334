"""Utility evaluation: downstream segmentation on real held-out patients, image quality, sweeps."""
