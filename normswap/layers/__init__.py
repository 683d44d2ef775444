"""The normalization layers normswap bundles, written with keras.ops only.

Each is registered as "normswap>ClassName", so models that use them load with
`keras.models.load_model` after `import normswap`.
"""

from normswap.layers.batch_layer_normalization import BatchLayerNormalization
from normswap.layers.batch_renormalization import BatchRenormalization
from normswap.layers.channel_affine import ChannelAffine
from normswap.layers.evonorm import EvoNormS0
from normswap.layers.evonorm_b0 import EvoNormB0
from normswap.layers.filter_response_normalization import FRN, FilterResponseNormalization
from normswap.layers.switch_normalization import SwitchNormalization
from normswap.layers.weight_standardization import (
    WSConv1D,
    WSConv2D,
    WSConv3D,
    WSDepthwiseConv2D,
    kernel_fan_in,
    standardize_kernel,
)

__all__ = [
    "FRN",
    "BatchLayerNormalization",
    "BatchRenormalization",
    "ChannelAffine",
    "EvoNormB0",
    "EvoNormS0",
    "FilterResponseNormalization",
    "SwitchNormalization",
    "WSConv1D",
    "WSConv2D",
    "WSConv3D",
    "WSDepthwiseConv2D",
    "kernel_fan_in",
    "standardize_kernel",
]
