"""secgan: privacy-hardened distributed GAN training for medical images (AsynDGAN, hardened)."""

__version__ = "0.1.0"
