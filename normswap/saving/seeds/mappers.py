"""One mapper per seed layer: its formula, what it becomes, what differs (see __init__)."""

import math

import keras
import numpy as np

from normswap.layers import (
    BatchLayerNormalization,
    BatchRenormalization,
    FilterResponseNormalization,
    Keras2BatchLayerNormalization,
    Keras2GroupNormalization,
    Keras2InstanceNormalization,
    Keras2SwitchNormalization,
    SwitchNormalization,
)
from normswap.layers._axes import channel_axis
from normswap.layers.keras2_batch_layer_normalization import MIX_OFFSET
from normswap.layers.keras2_group_normalization import grouped_affine_channels, own_channels
from normswap.saving.seeds._building import _assign, _built, _present, _weight_options
from normswap.saving.seeds.registry import (
    KERAS_GROUP_NORMALIZATION,
    Mapping,
    SeedRefusal,
    seed_layer,
)


@seed_layer(
    "SwitchNormalization", source="titu1994/keras-switchnorm",
    keys=("axis", "epsilon", "momentum", "center", "scale", "mean_weights_initializer",
          "variance_weights_initializer", "moving_mean_initializer",
          "moving_variance_initializer"),
    weights=("mean_weights", "variance_weights", "moving_mean", "moving_variance"),
    optional=("gamma", "beta"),
)
def switch_normalization(layer):
    """→ normswap SwitchNormalization (rank ≥ 3) or Keras2SwitchNormalization (rank 2), exact.

    The seed: μ = Σ softmax(mean_weights)ₖ μₖ, σ² = Σ softmax(variance_weights)ₖ σ²ₖ over
    (IN, LN, BN) with BN = the moving statistics at inference, y = γ(x − μ)/√(σ² + ε) + β:
    normswap's SwitchNormalization, weights under the same names. At rank 2 the seed mixes
    in the degenerate IN branch (μ = x, σ² = 0), which normswap's layer leaves out.
    The `*_constraints` keys (plural) are its constraint arguments.
    """
    config = layer.config
    rank = len(layer.input_shape)
    options = _weight_options(config, ("beta", "gamma", "moving_mean", "moving_variance"))
    options.update(_weight_options(config, ("mean_weights", "variance_weights"),
                                   constraint_suffix="_constraints"))
    cls = SwitchNormalization if rank > 2 else Keras2SwitchNormalization
    target = _built(cls, layer, axis=config["axis"], momentum=config["momentum"],
                    epsilon=config["epsilon"], center=config["center"],
                    scale=config["scale"], **options)
    _assign(target, layer.weights)
    detail = "" if rank > 2 else (
        "rank-2 input: the seed also mixes in the degenerate instance branch (mean x, "
        "variance 0), which normswap's SwitchNormalization leaves out")
    return Mapping(target, exact=True, detail=detail)


def _schedule(config):
    """normswap's clipping schedule closest to the seed's (training only).

    The seed relaxes r_max = r_max_value / (1 + (r_max_value − 1)e^−t) and d_max =
    d_max_value / (1 + (d_max_value/10⁻³ − 1)e^−2t), t += t_delta a step: with the
    defaults r_max is within 2 % of its final value at t = 5 and d_max within 3 % at
    t = 6, so normswap's linear warm-up over 5/t_delta steps is close (not equal). t_delta
    ≤ 0 never relaxes (r_max 1, d_max 0).
    """
    t_delta = float(config.get("t_delta", 1e-3))
    if t_delta <= 0:
        return {"r_max": 1.0, "d_max": 0.0}
    return {"r_max": config["r_max_value"], "d_max": config["d_max_value"],
            "warmup_steps": max(1, round(5.0 / t_delta))}


@seed_layer(
    "BatchRenormalization", source="titu1994/BatchRenormalization",
    keys=("epsilon", "axis", "momentum", "r_max_value", "d_max_value", "t_delta"),
    weights=("running_mean", "running_std"), optional=("gamma", "beta"),
)
def batch_renormalization(layer):
    """→ normswap BatchRenormalization on the running statistics; not the seed's training=False.

    The seed's `running_std` holds a moving average of σ²_B + ε (a variance). What its
    users got from Keras 2's `model.predict` (learning phase 0) was the running path,
    y = γ(x − running_mean)/√(running_std + ε) + β, which is normswap's
    BatchRenormalization at inference with moving_mean = running_mean and moving_stddev =
    √(running_std + ε) (`set_statistics_from_bn(running_mean, running_std, ε)`). Its
    `call(training=False)` returned the batch path instead, and in any process that
    loaded the file (r_max = 1, d_max = 0: the schedule is not saved) that is BN on the
    batch's own statistics, γ(x − μ_B)/√(σ²_B + ε) + β — batch-dependent, a bug, not
    reproduced: the note says so. Training: `_schedule`; step 0.
    """
    config, weights = layer.config, layer.weights
    epsilon = config["epsilon"]
    options = _weight_options(config, ("moving_mean", "moving_variance", "beta", "gamma"))
    target = _built(BatchRenormalization, layer, axis=config["axis"],
                    momentum=config["momentum"], epsilon=epsilon,
                    center=config.get("center", True), scale=config.get("scale", True),
                    **_schedule(config), **options)
    _assign(target, _present(weights, ("gamma", "beta")))
    target.set_statistics_from_bn(weights["running_mean"], weights["running_std"], epsilon)
    return Mapping(target, exact=False, detail=(
        "inference uses the stored running statistics, gamma*(x - running_mean)/"
        "sqrt(running_std + eps) + beta, as Keras 2's model.predict did; the seed's "
        "call(training=False) normalized each batch with its own statistics after a "
        "reload (its r_max/d_max schedule is not saved), a batch-dependent bug not "
        "reproduced"))


@seed_layer(
    "FRN", source="philipperemy/keras-frn",
    keys=("epsilon", "tau_initializer"), weights=("tau", "gamma", "beta"),
)
def filter_response_normalization(layer):
    """→ normswap FilterResponseNormalization (rank 4, channels last), exact.

    The seed: ν² = mean of x² over axes 1 and 2 (hard-coded), z = max(γx/√(ν² + |ε|) + β,
    τ): normswap's FRN with its TLU for an (N, H, W, C) input. Other ranks are refused:
    the seed then also averages over the channels (rank 3) or leaves out an axis (rank 5),
    which no normswap layer computes. ε = 0 is kept exactly as a learned ε_l set to 0.
    """
    config = layer.config
    rank = len(layer.input_shape)
    if rank != 4:
        raise SeedRefusal(
            f"layer '{layer.name}' (FRN of philipperemy/keras-frn) gets a rank-{rank} input "
            f"{layer.input_shape}; that FRN averages x^2 over axes 1 and 2 whatever the "
            "rank, which here is not a per-channel statistic and no normswap layer "
            "computes: only rank-4 (N, H, W, C) inputs are loaded")
    epsilon = abs(float(config["epsilon"]))
    target = _built(FilterResponseNormalization, layer, axis=-1, epsilon=epsilon,
                    learned_epsilon=epsilon == 0, use_tlu=True,
                    **_weight_options(config, ("beta", "gamma", "tau")))
    _assign(target, layer.weights)
    if epsilon == 0:
        target.epsilon_l.assign(0.0)
    return Mapping(target, exact=True, detail="" if epsilon else (
        "epsilon 0: kept as a learned epsilon_l set to 0"))


def _group_norm_applies(version, group_norm_seed):
    """A third-party GroupNormalization: a file older than tf.keras's own, or the caller
    says which library wrote it."""
    return group_norm_seed is not None or version is None or version < KERAS_GROUP_NORMALIZATION


def _affine_agrees(layer, axis, groups):
    """Whether titu1994's per-channel γ/β and keras-contrib's grouped-layout γ/β are the
    same numbers at every position of the layer's input (static shape only)."""
    sample = layer.input_shape[1:]
    if any(size is None for size in sample):
        return False
    own = own_channels(sample, axis)
    grouped = grouped_affine_channels(sample, axis, groups)
    return all(np.array_equal(vector[own], vector[grouped])
               for vector in _present(layer.weights, ("gamma", "beta")).values())


@seed_layer(
    "GroupNormalization", source="titu1994/Keras-Group-Normalization or keras-contrib",
    keys=("groups", "axis", "epsilon", "center", "scale"), optional=("gamma", "beta"),
    applies=_group_norm_applies, exclusive=True,
)
def group_normalization(layer):
    """→ keras GroupNormalization where the seeds compute GN, else Keras2GroupNormalization.

    Both seeds normalize contiguous runs of each sample's memory (see
    `Keras2GroupNormalization`): channel groups when the channels lead the sample (axis 1)
    or G = 1, which Keras's GroupNormalization computes exactly; elsewhere titu1994's or
    keras-contrib's own function, exact, chosen by `group_norm_seed`, or either when they
    agree for these weights; refused otherwise (see the module docstring).
    """
    config = layer.config
    rank = len(layer.input_shape)
    groups = int(config["groups"])
    axis = channel_axis(config["axis"], rank)
    common = dict(groups=groups, axis=config["axis"], epsilon=config["epsilon"],
                  center=config["center"], scale=config["scale"],
                  **_weight_options(config, ("beta", "gamma")))
    weights = _present(layer.weights, ("gamma", "beta"))
    if axis == 1 or groups == 1:
        target = _built(keras.layers.GroupNormalization, layer, **common)
        _assign(target, weights)
        return Mapping(target, exact=True, detail=(
            "the seed's groups are channel groups here (channels on axis 1, or one group): "
            "group normalization, as Keras's layer computes it"))
    seed = layer.group_norm_seed
    agree = _affine_agrees(layer, axis, groups)
    if seed is None and not agree:
        raise SeedRefusal(
            f"layer '{layer.name}' is a Keras 2 GroupNormalization of titu1994/"
            "Keras-Group-Normalization or of keras-contrib, which compute different "
            f"functions on its input {layer.input_shape} with these weights, and the file "
            "does not say which library wrote it: pass --group-norm-seed titu1994 or "
            "--group-norm-seed keras-contrib (Python: group_norm_seed=...)")
    seed = seed or "titu1994"
    target = _built(Keras2GroupNormalization, layer,
                    grouped_affine=seed == "keras-contrib", **common)
    _assign(target, weights)
    source = "titu1994/Keras-Group-Normalization" if seed == "titu1994" else "keras-contrib"
    detail = (f"{seed}'s function: statistics over contiguous runs of each sample's memory "
              "(for channels-last input, bands of rows with all channels), not over "
              "channel groups; Keras's GroupNormalization, which plain Keras 3 loads this "
              "layer as, computes something else")
    if agree:
        detail += "; titu1994's and keras-contrib's layers agree for these weights"
    return Mapping(target, exact=True, detail=detail, source=source)


@seed_layer(
    "InstanceNormalization", source="keras-contrib",
    keys=("axis", "epsilon", "center", "scale"), optional=("gamma", "beta"),
)
def instance_normalization(layer):
    """→ Keras2InstanceNormalization, exact: y = γ(x − μ)/(σ + ε) + β (ε on σ, no Keras
    layer computes it); axis None: statistics over the whole sample, scalar γ, β."""
    config = layer.config
    target = _built(Keras2InstanceNormalization, layer, axis=config["axis"],
                    epsilon=config["epsilon"], center=config["center"],
                    scale=config["scale"], **_weight_options(config, ("beta", "gamma")))
    _assign(target, layer.weights)
    return Mapping(target, exact=True)


_BLN_FLAGS = ("batch_moving_mean", "batch_moving_var", "feature_moving_mean",
              "feature_moving_var")


@seed_layer(
    "bln_layer", source="A2Amir/Batch-Layer-Normalization",
    keys=("stateful", "self.batchsize") + _BLN_FLAGS,
    weights=("scale1", "shift1", "Variable", "moving_Bmean", "moving_Bvar", "moving_Fmean",
             "moving_Fvar"),
    optional=("batchcount",),
)
def batch_layer_normalization(layer):
    """→ normswap BatchLayerNormalization (rank 2, no moving feature statistics) or
    Keras2BatchLayerNormalization, exact.

    The seed: y = γ[x_f·a + x_b·b]/√C + β with a = 1/B − 10⁻⁴, b = 1 − (1/B + 10⁻⁴), B the
    configured batch size, batch statistics per position, feature statistics per sample
    and position (over C), ε = the stored `Variable`. At rank 2 a position is a channel,
    so normswap's layer (feature_statistics="position") computes it with the feature
    weight w = a/(a + b) (moving_inverse_batch_size, step 0) and γ·(a + b)/√C. Moving
    feature statistics are kept per row of a batch of B (shape (B, …, 1)), which only the
    compatibility layer reproduces; so are per-position batch statistics (rank ≥ 3).
    `batchcount` (the training callback's counter) is dropped.
    """
    config, weights = layer.config, layer.weights
    batch_size = int(config["self.batchsize"])
    epsilon = float(np.asarray(weights["Variable"]).reshape(()))
    flags = {flag: bool(config[flag]) for flag in _BLN_FLAGS}
    rank = len(layer.input_shape)
    if rank == 2 and not (flags["feature_moving_mean"] or flags["feature_moving_var"]):
        feature = 1.0 / batch_size - MIX_OFFSET
        total = feature + 1.0 - (1.0 / batch_size + MIX_OFFSET)
        channels = layer.input_shape[-1]
        target = _built(BatchLayerNormalization, layer, axis=-1, epsilon=epsilon,
                        feature_statistics="position", **flags)
        _assign(target, {
            "gamma": np.float64(weights["scale1"]) * total / math.sqrt(channels),
            "beta": weights["shift1"],
            "moving_mean": weights["moving_Bmean"].reshape(-1),
            "moving_variance": weights["moving_Bvar"].reshape(-1),
            "moving_feature_mean": np.mean(weights["moving_Fmean"], dtype=np.float64),
            "moving_feature_variance": np.mean(weights["moving_Fvar"], dtype=np.float64),
            "moving_inverse_batch_size": feature / total,
        })
        return Mapping(target, exact=True, detail=(
            "the seed's division by sqrt(C) and its mixing weights, which do not sum to 1, "
            "are folded into gamma and the feature weight"))
    target = _built(Keras2BatchLayerNormalization, layer, batch_size=batch_size,
                    epsilon=epsilon, **flags)
    _assign(target, {
        "gamma": weights["scale1"], "beta": weights["shift1"],
        "moving_batch_mean": weights["moving_Bmean"],
        "moving_batch_variance": weights["moving_Bvar"],
        "moving_feature_mean": weights["moving_Fmean"],
        "moving_feature_variance": weights["moving_Fvar"],
    })
    reason = ("moving feature statistics kept per row of a batch of "
              f"{batch_size}" if flags["feature_moving_mean"] or flags["feature_moving_var"]
              else "batch statistics kept per position")
    return Mapping(target, exact=True, detail=f"{reason}: the seed's function, reproduced")
