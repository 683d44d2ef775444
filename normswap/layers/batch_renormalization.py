"""Batch Renormalization: BatchNormalization corrected towards the moving statistics."""

import keras
from keras import ops

from normswap.layers._batch_stats import BatchStatisticsLayer, moments, update_moving_average


def renorm_clip_limits(step, r_max, d_max, warmup_steps):
    """(r_max, d_max) in force at training step `step` (0-based) of the linear warm-up.

    r_max(t) = 1 + (r_max − 1)·f and d_max(t) = d_max·f with f = min(t / warmup_steps, 1);
    f = 1 from the start when warmup_steps is 0.
    """
    if warmup_steps == 0:
        return r_max, d_max
    fraction = ops.minimum(ops.maximum(step / float(warmup_steps), 0.0), 1.0)
    return 1.0 + (r_max - 1.0) * fraction, d_max * fraction


def renorm_corrections(batch_mean, batch_stddev, mean, stddev, r_max, d_max):
    """r = clip(σ_B/σ, 1/r_max, r_max), d = clip((μ_B − μ)/σ, −d_max, d_max), no gradient."""
    r = ops.clip(batch_stddev / stddev, 1.0 / r_max, r_max)
    d = ops.clip((batch_mean - mean) / stddev, -d_max, d_max)
    return ops.stop_gradient(r), ops.stop_gradient(d)


@keras.saving.register_keras_serializable(package="normswap")
class BatchRenormalization(BatchStatisticsLayer):
    """Batch Renormalization: BN whose training output is corrected towards the moving stats.

    Training (`training=True` and `trainable`), per channel over the batch and spatial
    axes, with μ_B and var_B the batch mean and biased variance:

        σ_B = √(var_B + ε)
        r = stop_gradient(clip(σ_B / σ, 1/r_max(t), r_max(t)))
        d = stop_gradient(clip((μ_B − μ̃) / σ, −d_max(t), d_max(t)))
        y = γ · ((x − μ_B) / σ_B · r + d) + β

    where μ̃ = `renorm_mean` and σ = `moving_stddev` are the paper's moving mean and
    moving *standard deviation* (σ is floored at √ε), both updated after the output with
    `renorm_momentum`: μ̃ ← μ̃·m + μ_B·(1 − m), σ ← σ·m + σ_B·(1 − m).

    Inference: plain BatchNormalization with the moving statistics, ε added once,

        y = γ · (x − moving_mean) / √(moving_variance + ε) + β

    where moving_mean and moving_variance are updated in training exactly as Keras
    BatchNormalization updates its own (`momentum`, biased batch variance).

    Why two pairs of statistics: inference must be a plain BN of (moving_mean,
    moving_variance) so that a BN carries over exactly, while the paper's r and d use a
    moving average of σ_B — and the average of √(var_B + ε) is not √(average var_B + ε).
    Separate training statistics also let `renorm_momentum` differ from `momentum`
    (as in Keras BatchNormalization(renorm=True)). The paper's single set of statistics
    is renorm_momentum = momentum.

    Warm-up of the clipping (the paper keeps r_max = 1, d_max = 0 for its first steps,
    then relaxes them): r_max(t) = 1 + (r_max − 1)·f, d_max(t) = d_max·f with
    f = min(t / warmup_steps, 1), where t = `step`, a non-trainable weight counting the
    training calls. Because it is a weight, it is saved with the model and the schedule
    resumes after reloading. At t = 0, r = 1 and d = 0: training starts as plain BN.
    The default warmup_steps=5000 is the paper's plain-BN phase (5k steps) merged with a
    linear ramp; the paper reached r_max = 3 after 40k and d_max = 5 after 25k ImageNet
    steps. 0 disables the warm-up (full r_max and d_max from the first step). `step` is a
    float32 counter, exact up to 2^24 steps, far beyond any warm-up.

    Carrying a trained BatchNormalization over (μ, v, ε its moving mean, moving
    variance and epsilon): copy γ, β; set moving_mean = renorm_mean = μ,
    moving_variance = v, moving_stddev = √(v + ε); keep ε. Then inference equals the BN
    exactly; in training, when r and d are not clipped the output equals the BN's
    *inference* output (x − μ)/√(v + ε) (the gradient differs: it flows through the
    batch statistics), and while fully clipped (step 0 of the warm-up) it equals the BN's
    training output. Leaving renorm_mean/moving_stddev at their initial 0/√(1+ε) gives
    huge r and d on the first steps. Set `step` to warmup_steps to skip the warm-up.

    Args:
        axis: the channel axis (-1 for channels_last, 1 for channels_first).
        momentum: momentum of moving_mean / moving_variance (inference). Defaults to 0.99.
        epsilon: added to the batch and moving variances. Defaults to 1e-3.
        center, scale: whether to add β / multiply by γ.
        r_max: final upper clip of r (lower clip 1/r_max), ≥ 1. Defaults to 3.
        d_max: final clip of |d|, ≥ 0. Defaults to 5.
        warmup_steps: training steps over which r_max and d_max grow linearly from 1 and
            0 to their final values; 0 for none. Defaults to 5000.
        renorm_momentum: momentum of renorm_mean / moving_stddev (the statistics r and d
            are measured against). Defaults to 0.99 (the paper's rate α = 0.01).
        beta_initializer, gamma_initializer, moving_mean_initializer,
            moving_variance_initializer: initializers, zeros / ones / zeros / ones.
            renorm_mean starts as moving_mean_initializer, moving_stddev as
            √(moving_variance_initializer + ε).
        beta_regularizer, gamma_regularizer, beta_constraint, gamma_constraint: as in
            Keras BatchNormalization.
        synchronized: with the TensorFlow backend under a tf.distribute strategy, compute
            the batch statistics over the global batch. Raises a ValueError on other
            backends.
        **kwargs: base Layer arguments (name, dtype, ...).

    Weights: `gamma`, `beta` (when scale/center); non-trainable `moving_mean`,
    `moving_variance`, `renorm_mean`, `moving_stddev` (all (C,)) and `step` (scalar).

    Reference: Ioffe, "Batch Renormalization: Towards Reducing Minibatch Dependence in
    Batch-Normalized Models", NeurIPS 2017, arXiv:1702.03275.
    """

    def __init__(
        self,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        center=True,
        scale=True,
        r_max=3.0,
        d_max=5.0,
        warmup_steps=5000,
        renorm_momentum=0.99,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_variance_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        synchronized=False,
        **kwargs,
    ):
        super().__init__(
            axis=axis, momentum=momentum, epsilon=epsilon, center=center, scale=scale,
            beta_initializer=beta_initializer, gamma_initializer=gamma_initializer,
            moving_mean_initializer=moving_mean_initializer,
            moving_variance_initializer=moving_variance_initializer,
            beta_regularizer=beta_regularizer, gamma_regularizer=gamma_regularizer,
            beta_constraint=beta_constraint, gamma_constraint=gamma_constraint,
            synchronized=synchronized, **kwargs,
        )
        name = type(self).__name__
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
        if isinstance(warmup_steps, bool) or int(warmup_steps) != warmup_steps \
                or warmup_steps < 0:
            raise ValueError(
                f"{name}: `warmup_steps` must be a non-negative integer (0 for no "
                f"warm-up). Received: warmup_steps={warmup_steps!r}"
            )
        self.warmup_steps = int(warmup_steps)
        self.renorm_momentum = float(renorm_momentum)
        if not 0.0 <= self.renorm_momentum <= 1.0:
            raise ValueError(
                f"{name}: `renorm_momentum` must be between 0 and 1. "
                f"Received: renorm_momentum={renorm_momentum}"
            )

    def build_statistics(self, channels):
        shape = (channels,)
        mean_config = keras.initializers.serialize(self.moving_mean_initializer)
        variance_config = keras.initializers.serialize(self.moving_variance_initializer)
        epsilon = self.epsilon

        def stddev_initializer(shape, dtype=None):
            variance = keras.initializers.get(variance_config)(shape, dtype=dtype)
            return ops.sqrt(variance + epsilon)

        self.renorm_mean = self.add_weight(
            name="renorm_mean", shape=shape,
            initializer=keras.initializers.get(mean_config), trainable=False,
            autocast=False,
        )
        self.moving_stddev = self.add_weight(
            name="moving_stddev", shape=shape, initializer=stddev_initializer,
            trainable=False, autocast=False,
        )
        self.step = self.add_weight(
            name="step", shape=(), initializer="zeros", dtype="float32",
            trainable=False, autocast=False,
        )

    def call(self, inputs, training=None):
        x, axis, rank = self._prepare(inputs)
        dtype = x.dtype
        if training and self.trainable:
            reduction = tuple(a for a in range(rank) if a != axis)
            batch_mean, batch_variance = moments(x, reduction, self.synchronized)
            batch_stddev = ops.sqrt(batch_variance + self.epsilon)
            stddev = ops.maximum(self._vector(self.moving_stddev, axis, rank, dtype),
                                 self.epsilon ** 0.5)
            r_max, d_max = renorm_clip_limits(
                ops.cast(self.step, dtype), self.r_max, self.d_max, self.warmup_steps)
            r, d = renorm_corrections(
                batch_mean, batch_stddev, self._vector(self.renorm_mean, axis, rank, dtype),
                stddev, r_max, d_max)
            # y = γ·((x − μ_B)/σ_B·r + d) + β folded into one per-channel affine map,
            # y = x·scale + offset, so the full-size activations see two elementwise
            # ops. μ_B and σ_B stay differentiable inside scale and offset (the paper's
            # gradient); r and d are constants.
            scale = r / batch_stddev
            if self.gamma is not None:
                gamma = self._vector(self.gamma, axis, rank, dtype)
                scale = scale * gamma
                d = d * gamma
            offset = d - batch_mean * scale
            if self.beta is not None:
                offset = offset + self._vector(self.beta, axis, rank, dtype)
            outputs = x * scale + offset
            update_moving_average(self.moving_mean, batch_mean, self.momentum)
            update_moving_average(self.moving_variance, batch_variance, self.momentum)
            update_moving_average(self.renorm_mean, batch_mean, self.renorm_momentum)
            update_moving_average(self.moving_stddev, batch_stddev, self.renorm_momentum)
            self.step.assign(self.step + 1.0)
            return ops.cast(outputs, inputs.dtype)
        # Inference: the very op Keras BatchNormalization uses, so a carried-over BN
        # gives the same numbers.
        outputs = ops.batch_normalization(
            x,
            mean=ops.cast(self.moving_mean, dtype),
            variance=ops.cast(self.moving_variance, dtype),
            axis=axis,
            offset=None if self.beta is None else ops.cast(self.beta, dtype),
            scale=None if self.gamma is None else ops.cast(self.gamma, dtype),
            epsilon=self.epsilon,
        )
        return ops.cast(outputs, inputs.dtype)

    def get_config(self):
        config = super().get_config()
        config.update({
            "r_max": self.r_max,
            "d_max": self.d_max,
            "warmup_steps": self.warmup_steps,
            "renorm_momentum": self.renorm_momentum,
        })
        return config
