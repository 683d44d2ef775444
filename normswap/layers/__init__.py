"""The normalization layers normswap bundles, written with keras.ops only.

Each is registered as "normswap>ClassName", so models that use them load with
`keras.models.load_model` after `import normswap`.

The `Keras2*` layers are compatibility layers: each computes what a third-party Keras 2
layer computed where no normswap or Keras layer does, so that `normswap.load_model` can
load that layer's trained `.h5` files with their function (see `normswap/saving/seeds/`).
For new models use the layers they stand in for.
"""

from normswap.layers.batch_layer_normalization import BatchLayerNormalization
from normswap.layers.batch_renormalization import BatchRenormalization
from normswap.layers.channel_affine import ChannelAffine
from normswap.layers.evonorm import EvoNormS0
from normswap.layers.evonorm_b0 import EvoNormB0
from normswap.layers.filter_response_normalization import FRN, FilterResponseNormalization
from normswap.layers.keras2_batch_layer_normalization import Keras2BatchLayerNormalization
from normswap.layers.keras2_group_normalization import Keras2GroupNormalization
from normswap.layers.keras2_instance_normalization import Keras2InstanceNormalization
from normswap.layers.keras2_switch_normalization import Keras2SwitchNormalization
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
    "Keras2BatchLayerNormalization",
    "Keras2GroupNormalization",
    "Keras2InstanceNormalization",
    "Keras2SwitchNormalization",
    "SwitchNormalization",
    "WSConv1D",
    "WSConv2D",
    "WSConv3D",
    "WSDepthwiseConv2D",
    "kernel_fan_in",
    "standardize_kernel",
]
