"""normswap: swap the BatchNormalization layers of trained Keras models.

    import normswap
    new_model = normswap.swap(model, "groupnorm")          # or a layer class
    result = normswap.convert(model, "fold")               # .model and .report
    print(normswap.plan(model, "frn").to_dict())           # what would happen

Every model normswap writes loads with `keras.models.load_model` after `import normswap`.
"""

__version__ = "0.1.0"

from normswap._quiet import import_keras_quietly

import_keras_quietly()

from normswap import layers
from normswap.calibration.statistics import recompute_statistics
from normswap.convert import Conversion, convert, plan, swap
from normswap.errors import (
                             InputFileError,
                             NormswapError,
                             NothingToConvertError,
                             SaveError,
                             UnsafeModelError,
                             UnsupportedModelError,
                             UsageError,
                             VerificationError,
)
from normswap.graph import find_sites
from normswap.layers import (
                             FRN,
                             BatchLayerNormalization,
                             BatchRenormalization,
                             ChannelAffine,
                             EvoNormB0,
                             EvoNormS0,
                             FilterResponseNormalization,
                             SwitchNormalization,
                             WSConv1D,
                             WSConv2D,
                             WSConv3D,
                             WSDepthwiseConv2D,
)
from normswap.saving import load_model, save_model
from normswap.targets import all_targets, get_target

__all__ = [
    "FRN", "BatchLayerNormalization", "BatchRenormalization", "ChannelAffine", "Conversion",
    "EvoNormB0", "EvoNormS0", "FilterResponseNormalization", "InputFileError", "NormswapError",
    "NothingToConvertError", "SaveError", "SwitchNormalization", "UnsafeModelError",
    "UnsupportedModelError", "UsageError", "VerificationError", "WSConv1D", "WSConv2D",
    "WSConv3D", "WSDepthwiseConv2D", "all_targets", "convert", "find_sites", "get_target",
    "layers", "load_model", "plan", "recompute_statistics", "save_model", "swap",
]
