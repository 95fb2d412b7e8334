"""The GAN itself: models, the pure step functions, condition sources, checkpoints, synthetic sets."""
