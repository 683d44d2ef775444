"""The normalization layers normswap bundles, written with keras.ops only.

Each is registered as "normswap>ClassName", so models that use them load with
`keras.models.load_model` after `import normswap`.
"""

from normswap.layers.channel_affine import ChannelAffine

__all__ = ["ChannelAffine"]
