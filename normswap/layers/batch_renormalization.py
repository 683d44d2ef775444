"""Batch Renormalization: BatchNormalization corrected towards its moving statistics."""

import keras
import numpy as np
from keras import ops

from normswap.layers._axes import batch_axes
from normswap.layers._batch_stats import (
    BatchStatisticsLayer,
    moments,
    update_moving_average,
)
from normswap.layers._checks import check_count, check_epsilon, check_momentum
from normswap.layers._layouts import EarlierLayouts
from normswap.layers._weights import add_configured_weight


def relaxation(step, start, end):
    """How far a clipping limit has moved towards its final value at `step`, in [0, 1].

    0 until `start`, then linear, 1 from `end` on (a jump at `start` when end == start):
    f(t) = clip((t − start) / (end − start), 0, 1).
    """
    if end <= start:
        return ops.where(step >= start, 1.0, 0.0)
    return ops.clip((step - start) / float(end - start), 0.0, 1.0)


def renorm_clip_limits(step, r_max, d_max, plain_steps, r_max_steps, d_max_steps):
    """(r_max, d_max) in force at training step `step` (0-based) of the schedule.

    Plain BN (r_max = 1, d_max = 0) for the first `plain_steps` steps, then each limit
    grows linearly to its final value, reached at step `r_max_steps` / `d_max_steps`:
    r_max(t) = 1 + (r_max − 1)·f_r(t), d_max(t) = d_max·f_d(t), f as in `relaxation`.
    """
    return (1.0 + (r_max - 1.0) * relaxation(step, plain_steps, r_max_steps),
            d_max * relaxation(step, plain_steps, d_max_steps))


def renorm_corrections(batch_mean, batch_stddev, mean, stddev, r_max, d_max):
    """r = clip(σ_B/σ, 1/r_max, r_max), d = clip((μ_B − μ)/σ, −d_max, d_max), no gradient."""
    r = ops.clip(batch_stddev / stddev, 1.0 / r_max, r_max)
    d = ops.clip((batch_mean - mean) / stddev, -d_max, d_max)
    return ops.stop_gradient(r), ops.stop_gradient(d)


@keras.saving.register_keras_serializable(package="normswap")
class BatchRenormalization(EarlierLayouts, BatchStatisticsLayer):
    """Batch Renormalization: BN whose training output is corrected towards the moving stats.

    The layer keeps one set of statistics, as the paper does: a moving mean μ
    (`moving_mean`) and a moving *standard deviation* σ (`moving_stddev`).

    Training (`training=True` and `trainable`), per channel over the batch and spatial
    axes, with μ_B and var_B the batch mean and biased variance:

        σ_B = √(var_B + ε)
        r = stop_gradient(clip(σ_B / σ, 1/r_max(t), r_max(t)))
        d = stop_gradient(clip((μ_B − μ) / σ, −d_max(t), d_max(t)))
        y = γ · ((x − μ_B) / σ_B · r + d) + β

    then, with α = 1 − momentum, μ ← μ + α(μ_B − μ) and σ ← σ + α(σ_B − σ).

    Inference: y = γ · (x − μ) / σ + β, with the same μ and σ.

    Hence the defining property: while r and d are not clipped, r = σ_B/σ and
    d = (μ_B − μ)/σ, and the training output is exactly γ·(x − μ)/σ + β — the inference
    output of the statistics before the update — at any batch size, 2 included; only the
    gradient differs (it flows through μ_B and σ_B). (Keras's
    `BatchNormalization(renorm=True)` infers from a separate moving variance instead;
    the mean of σ_B is not √(mean of σ_B²): up to ~25 % apart at batch size 2, so its
    training and inference outputs differ.) σ is floored at √ε in both modes; it is
    never below that anyway, as σ_B ≥ √ε.

    Clipping schedule: r_max(t) = 1 + (r_max − 1)·f_r(t), d_max(t) = d_max·f_d(t), where
    t = `step`, a non-trainable weight counting the training calls, and f rises linearly
    from 0 at step `plain_steps` to 1 at step `r_max_steps` (f_r) or `d_max_steps` (f_d):

        f(t) = clip((t − plain_steps) / (steps − plain_steps), 0, 1)

    (a jump to 1 at `plain_steps` when steps = plain_steps). The first `plain_steps`
    steps are therefore plain BatchNormalization (r = 1, d = 0). `r_max_steps` and
    `d_max_steps` default to `warmup_steps`, so the default schedule is one linear
    warm-up of both limits over the first 5000 steps (f = min(t / warmup_steps, 1)); the
    paper's ImageNet schedule is `plain_steps=5000, r_max_steps=40000,
    d_max_steps=25000` (plain BN for 5k steps, then r_max reaches 3 at 40k and d_max
    reaches 5 at 25k). `warmup_steps=0` (with the defaults of the others) applies the
    full limits from the first step. Because `step` is a weight it is saved with the
    model and the schedule resumes after reloading; it is a float32 counter, exact up to
    2^24 steps, far beyond any schedule.

    Carrying a trained BatchNormalization over (μ_BN, v_BN, ε_BN its moving mean,
    moving variance and epsilon): copy γ, β, keep ε = ε_BN, and call
    `set_statistics_from_bn(μ_BN, v_BN)`, which sets moving_mean = μ_BN and moving_stddev
    = √(v_BN + ε). Inference then equals the BN's; training equals the BN's training
    output while fully clipped (step < plain_steps) and the BN's *inference* output
    while r and d are not clipped. Leaving the statistics at their initial values gives
    huge r and d on the first unclipped steps. Set `step` to skip the schedule.

    Files saved by the earlier layout of this layer (weights moving_mean,
    moving_variance, renorm_mean, moving_stddev, step; config key renorm_momentum)
    load as the function they inferred: μ = their moving_mean, σ = √(moving_variance
    + ε), step kept; their renorm_mean and moving_stddev (the statistics r and d were
    measured against) and renorm_momentum are dropped. This works for `.keras` files and
    `.weights.h5` weights, and for legacy `.h5` files through `keras.models.load_model`
    (the old config tells the layer to expect the old weights); loading old legacy
    `.h5` *weights* into a model built by this version fails on the weight count.

    Args:
        axis: the channel axis (-1 for channels_last, 1 for channels_first).
        momentum: momentum of μ and σ (α = 1 − momentum). Defaults to 0.99 (the paper's
            α = 0.01).
        epsilon: added to the batch variance. Defaults to 1e-3.
        center, scale: whether to add β / multiply by γ.
        r_max: final upper clip of r (lower clip 1/r_max), ≥ 1. Defaults to 3.
        d_max: final clip of |d|, ≥ 0. Defaults to 5.
        warmup_steps: the step at which r_max and d_max reach their final values when
            `r_max_steps` / `d_max_steps` are not given; 0 for no warm-up. Defaults to
            5000.
        plain_steps: training steps of plain BatchNormalization (r = 1, d = 0) before
            the limits start to grow. Defaults to 0.
        r_max_steps, d_max_steps: the step at which r_max / d_max reach their final
            value, ≥ plain_steps. Default None: `warmup_steps`.
        beta_initializer, gamma_initializer, moving_mean_initializer: initializers,
            zeros / ones / zeros.
        moving_variance_initializer: σ starts at √(this + ε) (ones: √(1 + ε)), as
            Keras's renorm initialises its moving stddev, so a fresh layer infers what a
            fresh BatchNormalization infers.
        beta_regularizer, gamma_regularizer, beta_constraint, gamma_constraint: as in
            Keras BatchNormalization.
        synchronized: with the TensorFlow backend under a tf.distribute strategy, compute
            the batch statistics over the global batch. Raises a ValueError on other
            backends.
        renorm_momentum: deprecated, from the earlier layout (a momentum for separate
            renorm statistics). Accepted only when equal to `momentum`; not in the config.
        **kwargs: base Layer arguments (name, dtype, ...).

    Weights: `gamma`, `beta` (when scale/center); non-trainable `moving_mean`,
    `moving_stddev` (both (C,)) and `step` (scalar).

    Reference: Ioffe, "Batch Renormalization: Towards Reducing Minibatch Dependence in
    Batch-Normalized Models", NeurIPS 2017, arXiv:1702.03275.
    """

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True, r_max=3.0,
                 d_max=5.0, warmup_steps=5000, plain_steps=0, r_max_steps=None,
                 d_max_steps=None, synchronized=False, renorm_momentum=None, **kwargs):
        super().__init__(axis=axis, momentum=momentum, epsilon=epsilon, center=center, scale=scale,
                         synchronized=synchronized, **kwargs)
        name = type(self).__name__
        if renorm_momentum is not None and (
                check_momentum(renorm_momentum, name, "renorm_momentum") != self.momentum):
            raise ValueError(
                f"{name} keeps one set of moving statistics (the paper's), updated with "
                "`momentum`; the separate `renorm_momentum` of the earlier layout is gone. "
                f"Pass momentum={renorm_momentum} instead. Received: "
                f"renorm_momentum={renorm_momentum}, momentum={momentum}"
            )
        self.r_max = float(r_max)
        if not self.r_max >= 1.0:
            raise ValueError(
                f"{name}: `r_max` must be at least 1 (r is clipped to [1/r_max, r_max]; "
                f"the paper uses 3). Received: r_max={r_max}"
            )
        self.d_max = float(d_max)
        if not self.d_max >= 0.0:
            raise ValueError(
                f"{name}: `d_max` must be non-negative (d is clipped to [-d_max, d_max]; "
                f"the paper uses 5). Received: d_max={d_max}"
            )
        self.warmup_steps = check_count(warmup_steps, name, "warmup_steps",
                                        meaning=" (0 for no warm-up)")
        self.plain_steps = check_count(plain_steps, name, "plain_steps")
        for key, value in (("r_max_steps", r_max_steps), ("d_max_steps", d_max_steps)):
            if value is not None:
                check_count(value, name, key, meaning=" or None (warmup_steps)")
            steps = self.warmup_steps if value is None else int(value)
            if steps < self.plain_steps:
                raise ValueError(
                    f"{name}: `{key}` (the step at which the limit reaches its final "
                    f"value; None means warmup_steps={self.warmup_steps}) must be at least "
                    f"plain_steps={self.plain_steps}. Received: {key}={value!r}"
                )
        self.r_max_steps = None if r_max_steps is None else int(r_max_steps)
        self.d_max_steps = None if d_max_steps is None else int(d_max_steps)

    def build_statistics(self, channels):
        shape = (channels,)
        variance_config = keras.initializers.serialize(self.moving_variance_initializer)
        epsilon = self.epsilon

        def stddev_initializer(shape, dtype=None):
            variance = keras.initializers.get(variance_config)(shape, dtype=dtype)
            return ops.sqrt(variance + epsilon)

        self.moving_mean = add_configured_weight(self, "moving_mean", shape, trainable=False)
        if self.earlier_layout:  # the earlier layout's weights, in their order
            self.moving_variance = add_configured_weight(
                self, "moving_variance", shape, trainable=False)
            self.renorm_mean = self.add_weight(
                name="renorm_mean", shape=shape, initializer=self.moving_mean_initializer,
                trainable=False, autocast=False,
            )
        self.moving_stddev = self.add_weight(
            name="moving_stddev", shape=shape, initializer=stddev_initializer,
            trainable=False, autocast=False,
        )
        self.step = self.add_weight(
            name="step", shape=(), initializer="zeros", dtype="float32",
            trainable=False, autocast=False,
        )

    def clip_limits(self, step):
        """(r_max, d_max) in force at training step `step` (a number or a tensor)."""
        def steps(value):
            return self.warmup_steps if value is None else value

        step = ops.convert_to_tensor(step)
        return renorm_clip_limits(step, self.r_max, self.d_max, self.plain_steps,
                                  steps(self.r_max_steps), steps(self.d_max_steps))

    def set_statistics_from_bn(self, mean, variance, epsilon=None):
        """Set μ and σ from a BatchNormalization's moving mean and variance.

        moving_mean = `mean`, moving_stddev = √(`variance` + ε) (computed in float64),
        where ε = `epsilon`, by default this layer's own (it should be the BN's: build
        this layer with the BN's epsilon). Inference then equals the BN's exactly (up
        to float32 rounding). The layer must be built; γ, β and `step` are left alone.
        """
        if not self.built:
            raise ValueError(
                f"{type(self).__name__} '{self.name}': build the layer (for the BN's input "
                "shape) before setting its statistics."
            )
        epsilon = self.epsilon if epsilon is None else check_epsilon(
            epsilon, type(self).__name__)
        mean = np.asarray(ops.convert_to_numpy(mean), np.float64)
        variance = np.asarray(ops.convert_to_numpy(variance), np.float64)
        shape = tuple(self.moving_mean.shape)
        for label, value in (("mean", mean), ("variance", variance)):
            if value.shape != shape or not np.isfinite(value).all():
                raise ValueError(
                    f"{type(self).__name__} '{self.name}': `{label}` must hold {shape[0]} "
                    f"finite values, one per channel. Received shape {value.shape}."
                )
        if (variance < 0).any():
            raise ValueError(
                f"{type(self).__name__} '{self.name}': a variance cannot be negative. "
                f"Received: variance min {variance.min()}"
            )
        self.moving_mean.assign(mean.astype(self.moving_mean.dtype))
        self.moving_stddev.assign(np.sqrt(variance + epsilon).astype(self.moving_stddev.dtype))

    def call(self, inputs, training=None):
        x, axis, rank = self._prepare(inputs)
        dtype = x.dtype
        mean = self._vector(self.moving_mean, axis, rank, dtype)
        stddev = ops.maximum(self._vector(self.moving_stddev, axis, rank, dtype),
                             self.epsilon ** 0.5)
        if self._training(training):
            batch_mean, batch_variance = moments(x, batch_axes(axis, rank),
                                                 self.synchronized)
            batch_stddev = ops.sqrt(batch_variance + self.epsilon)
            r_max, d_max = self.clip_limits(ops.cast(self.step, dtype))
            r, d = renorm_corrections(batch_mean, batch_stddev, mean, stddev, r_max, d_max)
            # y = γ·((x − μ_B)/σ_B·r + d) + β folded into one per-channel affine map,
            # y = x·scale + offset, so the full-size activations see two elementwise
            # ops. μ_B and σ_B stay differentiable inside scale and offset (the paper's
            # gradient); r and d are constants.
            scale = r / batch_stddev
            offset = d - batch_mean * scale
            update_moving_average(self.moving_mean, batch_mean, self.momentum)
            update_moving_average(self.moving_stddev, batch_stddev, self.momentum)
            self.step.assign(self.step + 1.0)
        else:
            scale = 1.0 / stddev
            offset = -mean * scale
        # γ·(x·scale + offset) + β, still per channel.
        if self.gamma is not None:
            gamma = self._vector(self.gamma, axis, rank, dtype)
            scale, offset = scale * gamma, offset * gamma
        if self.beta is not None:
            offset = offset + self._vector(self.beta, axis, rank, dtype)
        return ops.cast(x * scale + offset, inputs.dtype)

    # Files of the earlier layout (moving_variance, renorm_mean beside the others).

    @classmethod
    def from_config(cls, config):
        # Only the earlier layout's get_config wrote renorm_momentum.
        config = dict(config)
        earlier = config.pop("renorm_momentum", None) is not None
        layer = super().from_config(config)
        layer.earlier_layout = earlier
        return layer

    def _affine_count(self):
        return int(self.scale) + int(self.center)

    def earlier_layout_size(self):
        # γ, β (those that exist), moving_mean, moving_variance, renorm_mean,
        # moving_stddev, step.
        return self._affine_count() + 5

    def adopt_current_layout(self):
        del self.moving_variance
        del self.renorm_mean

    def restore_earlier_values(self, values):
        a = self._affine_count()
        affine = [w for w in (self.gamma, self.beta) if w is not None]
        for variable, value in zip(affine, values[:a]):
            variable.assign(value)
        self.set_statistics_from_bn(values[a], np.maximum(values[a + 1], 0.0))
        self.step.assign(values[a + 4])

    def get_config(self):
        config = super().get_config()
        config.update({
            "r_max": self.r_max,
            "d_max": self.d_max,
            "warmup_steps": self.warmup_steps,
            "plain_steps": self.plain_steps,
            "r_max_steps": self.r_max_steps,
            "d_max_steps": self.d_max_steps,
        })
        return config
