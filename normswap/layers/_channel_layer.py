"""The base of every bundled per-channel layer: its axis, weight options and config."""

import keras

from normswap.layers._axes import check_axis
from normswap.layers._weights import set_weight_options, weight_options_config


class ChannelLayer(keras.layers.Layer):
    """What the bundled normalization layers share, whatever their statistics.

    One channel `axis` (checked by `check_axis`), per-channel weights configured by the
    Keras-style `<weight>_initializer/regularizer/constraint` arguments — each layer lists
    those it takes, with their defaults, once, in its `weight_options` (see
    `_weights.weight_arguments`), and receives them through `**kwargs` — float32 weights
    under mixed precision
    (`autocast = False`), masks passed through unchanged, an output of the input's
    shape, and a `get_config` holding `axis` and every weight option; subclasses add
    their own arguments to it. Not a layer to use on its own.
    """

    weight_options = {}  # `<weight>_<kind>` argument -> default, for the subclass's weights

    def __init__(self, axis=-1, **kwargs):
        options = {key: kwargs.pop(key, default) for key, default in self.weight_options.items()}
        super().__init__(**kwargs)
        self.axis = check_axis(axis, type(self).__name__)
        set_weight_options(self, **options)
        self.supports_masking = True
        self.autocast = False

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"axis": self.axis, **weight_options_config(self)})
        return config
