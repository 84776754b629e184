"""tinyddpm: denoising diffusion probabilistic models from first principles."""
__version__ = "0.1.0"
