"""Batch Layer Normalization: batch and per-sample normalization mixed by 1/batch size."""

import keras
from keras import ops

from normswap.layers._axes import batch_axes
from normswap.layers._batch_stats import (
    BatchStatisticsLayer,
    global_batch_size,
    moments,
    reduce_mean,
    update_moving_average,
)
from normswap.layers._checks import check_flag
from normswap.layers._layouts import EarlierLayouts


def batch_layer_normalize(x, batch_mean, batch_variance, feature_mean, feature_variance,
                          feature_weight, epsilon):
    """w·(x − μ_F)/√(σ²_F + ε) + (1 − w)·(x − μ_B)/√(σ²_B + ε), w the feature weight 1/B."""
    feature_normalized = (x - feature_mean) * ops.rsqrt(feature_variance + epsilon)
    batch_normalized = (x - batch_mean) * ops.rsqrt(batch_variance + epsilon)
    return feature_weight * feature_normalized + (1.0 - feature_weight) * batch_normalized


def bias_corrected(average, count, momentum):
    """An exponential moving average started at 0, divided by 1 − momentumᶜᵒᵘⁿᵗ.

    After `count` updates m ← m·momentum + value·(1 − momentum) from m = 0, the average
    holds (1 − momentumᶜᵒᵘⁿᵗ) of the values' weight; dividing it out (as Adam corrects
    its moments) gives a weighted mean of the values seen, e.g. exactly B⁻¹ after any
    number of steps at one batch size B. At count 0 (nothing seen: a fresh or converted
    layer) and for momentum 1 (never updated) the average is returned unchanged.
    """
    count = ops.cast(count, average.dtype)
    seen = 1.0 - ops.power(ops.cast(momentum, average.dtype), count)
    corrected = average / ops.maximum(seen, 1e-30)
    return ops.where(ops.logical_and(count > 0, seen > 0), corrected, average)


FEATURE_STATISTICS = ("sample", "position")


@keras.saving.register_keras_serializable(package="normswap")
class BatchLayerNormalization(EarlierLayouts, BatchStatisticsLayer):
    """Batch Layer Normalization: batch and feature normalization weighted by 1/batch size.

    For an input with batch axis 0, channel axis `axis` and spatial axes S:

        μ_B, σ²_B = per-channel mean and biased variance over the batch and S
                    (what BatchNormalization uses)
        μ_F, σ²_F = feature statistics: with feature_statistics="sample", per sample
                    over S and the channels (a per-sample LayerNormalization over
                    everything but the batch); with "position", per sample and
                    position over the channels only (LayerNormalization(axis) at
                    each time step / pixel)
        y = γ · [ w·(x − μ_F)/√(σ²_F + ε) + (1 − w)·(x − μ_B)/√(σ²_B + ε) ] + β

    Training (`training=True` and `trainable`): w = 1/B with B the batch size of the
    call (dynamic: any batch size works, including a smaller last batch; the global batch
    size when synchronized). At B = 1 the batch term has weight 0, so the layer is a
    per-sample normalization and stays finite. Each training call updates, with
    `m ← m·momentum + value·(1 − momentum)`:

        moving_mean, moving_variance        ← μ_B, σ²_B (per channel, like Keras BN)
        moving_feature_mean, _variance      ← mean over the batch (and positions) of
                                              μ_F, σ²_F (scalars)
        moving_inverse_batch_size           ← 1/B
        step                                ← step + 1

    Inference: each of the four statistics comes from its moving average when its flag
    is set (`batch_moving_mean`, `batch_moving_var`, `feature_moving_mean`,
    `feature_moving_var`), else from the input itself (μ_B, σ²_B of the inference batch,
    μ_F, σ²_F of each sample). The defaults (batch moving, feature per sample) make
    inference independent of the other samples in the batch. The mixing weight at
    inference is that of training, not the inference batch size's inverse (a model
    trained at batch size 32 and evaluated one image at a time would otherwise switch to
    pure per-sample normalization, a different function from the one it was trained
    as): the bias-corrected moving average w = moving_inverse_batch_size /
    (1 − momentum^step). The average starts at 0, so uncorrected it would lag far
    behind (0.046 after 20 steps at batch size 4 with momentum 0.99, against the 0.25
    trained with); corrected, it is exactly 1/B after any number of steps at batch size
    B, and a weighted mean of the 1/B seen when B varies. At step 0 (a fresh or
    converted layer) w = moving_inverse_batch_size, itself. `inference_feature_weight()`
    returns w.

    Feature statistics per position or per sample. Over a sequence (N, T, F), "sample"
    pools the features of every time step, so each step's output depends on every other
    step of the sequence — later ones and padding included: the layer is not causal and
    a padded sequence normalizes differently from the unpadded one. "position" takes them
    per time step over the features, as the seed implementation and every recurrent use
    of layer normalization do: with moving batch statistics (the default flags), a step's
    output at inference depends on that step alone. (In training, the batch statistics
    still pool all positions of all samples, as BatchNormalization's do; masked positions
    count.) The default stays "sample" because it is what this layer computed before
    (saved models and converted networks keep their function) and because for
    convolutional feature maps — what normswap swaps BatchNormalization out of — it is
    the usual per-sample LayerNorm of a CNN (GroupNorm with one group), while per-pixel
    statistics over the channels are a different normalization. For sequence models
    choose "position". At rank 2 the two coincide.

    Why the feature moving statistics are scalars: per-sample statistics have no
    population value per sample. The seed kept one moving average per *slot* of a fixed
    batch (shape (batch_size, H, W, 1)), which averages unrelated samples that happened
    to share a slot and ties the layer to one batch size. Here they are the moving
    averages of the batch-mean of the per-sample (per-position) mean and variance: the
    typical sample's statistics, which replace a sample's own when the flags ask for them.

    Differences from the seed implementation, all defects there: batch statistics are
    per channel (not per position), the output is not divided by √C, no fixed batch size
    is needed, batch size 1 is finite, `get_config` round-trips, and the exponential
    moving averages need no callback to reset them each epoch.

    Carrying a trained BatchNormalization over: copy γ, β, moving mean and variance, ε,
    and leave moving_inverse_batch_size and step at their initial 0: inference then
    equals the BN (with the default flags). Training at batch size B mixes in the feature
    term at weight 1/B, and from the first training step on inference does too.

    Files saved by the earlier layout of this layer (no `step`, no feature_statistics
    in the config) load as the function they inferred: step = 0, so w is their
    moving_inverse_batch_size itself; training then counts from there. This works for
    `.keras` files, `.weights.h5` weights and legacy `.h5` files loaded with
    `keras.models.load_model`; old legacy `.h5` *weights* loaded into a model built by
    this version fail on the weight count.

    Args:
        axis: the channel axis (-1 for channels_last, 1 for channels_first).
        momentum: momentum of all moving averages. Defaults to 0.99.
        epsilon: added to both variances. Defaults to 1e-3.
        center, scale: whether to add β / multiply by γ.
        feature_statistics: "sample" (the default) or "position", see above.
        batch_moving_mean, batch_moving_var: at inference, use the moving batch mean /
            variance (True, the defaults) or the inference batch's own.
        feature_moving_mean, feature_moving_var: at inference, use the moving feature
            mean / variance (True) or each sample's own (False, the defaults).
        beta_initializer, gamma_initializer, moving_mean_initializer,
            moving_variance_initializer: initializers, zeros / ones / zeros / ones.
            The scalar feature statistics start at 0 and 1, the inverse batch size and
            the step at 0.
        beta_regularizer, gamma_regularizer, beta_constraint, gamma_constraint: as in
            Keras BatchNormalization.
        synchronized: with the TensorFlow backend under a tf.distribute strategy, compute
            the batch statistics and B over the global batch. Raises a ValueError on
            other backends.
        **kwargs: base Layer arguments (name, dtype, ...).

    Weights: `gamma`, `beta` (when scale/center); non-trainable `moving_mean`,
    `moving_variance` ((C,)), `moving_feature_mean`, `moving_feature_variance`,
    `moving_inverse_batch_size` and `step` (scalars).

    Reference: Ziaee, Çano, "Batch Layer Normalization, A new normalization layer for
    CNNs and RNNs", ICAART 2022, arXiv:2209.08898.
    """

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 feature_statistics="sample", batch_moving_mean=True, batch_moving_var=True,
                 feature_moving_mean=False, feature_moving_var=False, synchronized=False,
                 **kwargs):
        super().__init__(axis=axis, momentum=momentum, epsilon=epsilon, center=center, scale=scale,
                         synchronized=synchronized, **kwargs)
        name = type(self).__name__
        if feature_statistics not in FEATURE_STATISTICS:
            raise ValueError(
                f"{name}: `feature_statistics` must be 'sample' (per sample, over every "
                "axis but the batch) or 'position' (per sample and position, over the "
                f"channels). Received: feature_statistics={feature_statistics!r}"
            )
        self.feature_statistics = feature_statistics
        self.batch_moving_mean = check_flag(batch_moving_mean, name, "batch_moving_mean")
        self.batch_moving_var = check_flag(batch_moving_var, name, "batch_moving_var")
        self.feature_moving_mean = check_flag(feature_moving_mean, name,
                                              "feature_moving_mean")
        self.feature_moving_var = check_flag(feature_moving_var, name, "feature_moving_var")
        self.step = None

    def build_statistics(self, channels):
        super().build_statistics(channels)
        self.moving_feature_mean = self._scalar("moving_feature_mean", "zeros")
        self.moving_feature_variance = self._scalar("moving_feature_variance", "ones")
        self.moving_inverse_batch_size = self._scalar("moving_inverse_batch_size", "zeros")
        if not self.earlier_layout:
            self.step = self._scalar("step", "zeros")

    def _scalar(self, name, initializer):
        return self.add_weight(name=name, shape=(), initializer=initializer,
                               dtype="float32", trainable=False, autocast=False)

    def inference_feature_weight(self):
        """w at inference: the bias-corrected moving average of 1/B (see the docstring)."""
        if self.step is None:  # earlier layout, not loaded yet
            return ops.convert_to_tensor(self.moving_inverse_batch_size)
        return bias_corrected(ops.convert_to_tensor(self.moving_inverse_batch_size),
                              self.step, self.momentum)

    def call(self, inputs, training=None):
        x, axis, rank = self._prepare(inputs)
        dtype = x.dtype
        feature_axes = (tuple(range(1, rank)) if self.feature_statistics == "sample"
                        else (axis,))
        training = self._training(training)
        synchronized = self.synchronized and training

        use = {
            "batch_mean": not training and self.batch_moving_mean,
            "batch_var": not training and self.batch_moving_var,
            "feature_mean": not training and self.feature_moving_mean,
            "feature_var": not training and self.feature_moving_var,
        }
        if not (use["batch_mean"] and use["batch_var"]):
            batch_mean, batch_variance = moments(x, batch_axes(axis, rank), synchronized)
        if not (use["feature_mean"] and use["feature_var"]):
            feature_mean, feature_variance = moments(x, feature_axes)

        if training:
            feature_weight = 1.0 / global_batch_size(x, synchronized)
            every_axis = tuple(range(rank))
            update_moving_average(self.moving_mean, batch_mean, self.momentum)
            update_moving_average(self.moving_variance, batch_variance, self.momentum)
            update_moving_average(
                self.moving_feature_mean,
                reduce_mean(feature_mean, every_axis, synchronized), self.momentum)
            update_moving_average(
                self.moving_feature_variance,
                reduce_mean(feature_variance, every_axis, synchronized), self.momentum)
            update_moving_average(self.moving_inverse_batch_size, feature_weight,
                                  self.momentum)
            if self.step is not None:
                self.step.assign(self.step + 1.0)
        else:
            feature_weight = self.inference_feature_weight()
            if use["batch_mean"]:
                batch_mean = self._vector(self.moving_mean, axis, rank, dtype)
            if use["batch_var"]:
                batch_variance = self._vector(self.moving_variance, axis, rank, dtype)
            if use["feature_mean"]:
                feature_mean = ops.cast(self.moving_feature_mean, dtype)
            if use["feature_var"]:
                feature_variance = ops.cast(self.moving_feature_variance, dtype)

        normalized = batch_layer_normalize(
            x, batch_mean, batch_variance, feature_mean, feature_variance,
            ops.cast(feature_weight, dtype), self.epsilon)
        return ops.cast(self._affine(normalized, axis, rank), inputs.dtype)

    # Files of the earlier layout (the same weights without `step`).

    @classmethod
    def from_config(cls, config):
        # Only the earlier layout's get_config wrote the four flags without
        # feature_statistics.
        earlier = "feature_statistics" not in config and all(
            key in config for key in ("batch_moving_mean", "batch_moving_var",
                                      "feature_moving_mean", "feature_moving_var"))
        layer = super().from_config(config)
        layer.earlier_layout = earlier
        return layer

    def earlier_layout_size(self):
        return len(self._own_variables()) - (0 if self.earlier_layout else 1)

    def adopt_current_layout(self):
        self._tracker.unlock()
        try:
            self.step = self._scalar("step", "zeros")
        finally:
            self._tracker.lock()

    def restore_earlier_values(self, values):
        current = [v for v in self._own_variables() if v is not self.step]
        for variable, value in zip(current, values):
            variable.assign(value)
        self.step.assign(0.0)

    def get_config(self):
        config = super().get_config()
        config.update({
            "feature_statistics": self.feature_statistics,
            "batch_moving_mean": self.batch_moving_mean,
            "batch_moving_var": self.batch_moving_var,
            "feature_moving_mean": self.feature_moving_mean,
            "feature_moving_var": self.feature_moving_var,
        })
        return config
