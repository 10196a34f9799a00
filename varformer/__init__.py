"""VarFormer: image restoration with VAR's distribution-alignment prior (CVPR 2025), trainable and fast."""
__version__ = "0.1.0"
