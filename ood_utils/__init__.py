"""ood_utils: the helper package and answer key of the CLIP out-of-distribution course."""
__version__ = "0.1.0"
