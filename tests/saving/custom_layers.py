"""The Keras 3 twin of keras2_writer.py's tf_keras custom layer: same name, same config."""

import keras


class ScaleShift(keras.layers.Layer):
    """x * scale + offset, a learned per-channel scale."""

    def __init__(self, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.offset = offset

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],),
                                     initializer="ones")

    def call(self, inputs):
        return inputs * self.scale + self.offset

    def get_config(self):
        return {**super().get_config(), "offset": self.offset}
