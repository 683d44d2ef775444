"""What a swap target is: a name, the layer it builds from a BN site, and its carry rule.

A target is one small module under `normswap/targets/` that defines a `Target` subclass and
registers an instance with `@register`. The engine looks targets up by name (or by the layer
class a user passes) and never names a normalization itself.
"""

import dataclasses

import numpy as np

IDENTITY = "identity"  # a replacement that removes the layer: its call returns its input


@dataclasses.dataclass
class Skip:
    """Why a target cannot take a site, and optionally the target that takes it instead."""

    reason: str
    fallback: str = None


@dataclasses.dataclass
class Replacement:
    """What a target does to one site.

    `layers` maps original layers (the BN, and any neighbour the target changes, such as
    the conv a BN is folded into or a ReLU a TLU absorbs) to their new built layers, or to
    IDENTITY when the layer disappears. `carried` names what came over from the BN.
    """

    layers: dict
    carried: list
    notes: list = dataclasses.field(default_factory=list)


class Target:
    """Base class of swap targets. Subclasses set the class attributes and `replace`."""

    name = None  # registry key, lower case, as typed on the command line
    summary = ""  # one line for `normswap targets`
    exact = False  # the carried model reproduces the BN model at inference
    layer_classes = ()  # layer classes that select this target in swap(model, Class)
    options = {}  # target-specific swap options and their defaults
    normalizes = True  # a normalization layer remains in the BN's place (False for fold)

    def exact_options(self, options):
        """Options that make this target reproduce the BN at inference (exact=True), or
        None when it cannot. Targets with an exact mode (e.g. switchnorm) override it."""
        return options if self.exact else None

    def is_exact(self, params):
        """Whether the site converted with `params` reproduces the BN at inference."""
        return self.exact

    def check(self, site, options):
        """None if this target can take `site`, else a `Skip`."""
        return None

    def warnings(self, site):
        """Plan notes that flag a likely loss of accuracy at `site` (none by default)."""
        return []

    def parameters(self, site, options):
        """The per-site parameters (e.g. the group count) shown in the plan."""
        return {}

    def replace(self, site, params):
        """Build the new layer(s) for `site`, carry the BN's weights, return a Replacement."""
        raise NotImplementedError

    # Calibration hooks (see calibrate.py); the defaults suit a layer whose output is
    # γ·(normalized input) + β with per-channel weights named gamma and beta.

    def calibration_weights(self, layer):
        """(γ variable or None, β variable or None, [(variable, value that switches it off
        while the normalized response is measured), ...])."""
        return getattr(layer, "gamma", None), getattr(layer, "beta", None), []

    def calibration_target(self, site, params, bn_output):
        """What the replacement's output should match: by default the BN's output."""
        return bn_output

    def calibration_choices(self, site, params):
        """Parameter sets calibration may choose between; the first is the planned one."""
        return [params]

    def rank_choices(self, site, layer, choices, inputs, outputs):
        """The index of the best of several `calibration_choices`, found without running the
        layer once per choice, or None to let calibration try each (the default).
        `inputs` / `outputs`: per batch, the new layer's inputs and what it should output."""
        return None

    def apply_params(self, layer, params):
        """Make a built replacement use `params` (one of `calibration_choices`)."""

    def carry_statistics(self, site, layer):
        """Copy the BN's γ, β and moving statistics into a batch-dependent replacement
        (through `set_statistics`); returns the names carried."""
        _, _, mean, variance = bn_numbers(site.layer)
        carried = carry_affine(site, layer)
        self.set_statistics(layer, mean, variance, site.epsilon)
        return carried + ["moving_mean", "moving_variance", "epsilon"]

    def set_statistics(self, layer, mean, variance, epsilon):
        """Set the moving statistics of a batch-dependent replacement; True if it has any."""
        if not hasattr(layer, "moving_mean") or not hasattr(layer, "moving_variance"):
            return False
        assign(layer.moving_mean, mean)
        assign(layer.moving_variance, variance)
        return True


ALL_STATISTICS = ["gamma", "beta", "moving_mean", "moving_variance", "epsilon"]
POOLING_WARNING = ("warning: a global pooling reads this output; per-sample, per-channel "
                   "statistics remove the channel energy it measures")


def bn_numbers(layer):
    """The BN's γ, β, moving mean and variance as float64 arrays (γ=1, β=0 where absent)."""
    mean = np.asarray(layer.moving_mean.numpy(), dtype=np.float64)
    var = np.asarray(layer.moving_variance.numpy(), dtype=np.float64)
    gamma = (np.asarray(layer.gamma.numpy(), dtype=np.float64) if layer.scale
             else np.ones_like(mean))
    beta = (np.asarray(layer.beta.numpy(), dtype=np.float64) if layer.center
            else np.zeros_like(mean))
    return gamma, beta, mean, var


def bn_affine(layer):
    """The per-channel (scale, offset) a BN applies at inference, in float64."""
    gamma, beta, mean, var = bn_numbers(layer)
    scale = gamma / np.sqrt(var + float(layer.epsilon))
    return scale, beta - mean * scale


def affine_names(layer):
    """Names of the BN weights that exist, for the report's 'carried' column."""
    return [name for name, present in (("gamma", layer.scale), ("beta", layer.center))
            if present]


def like_bn(site):
    """Constructor arguments that make a new layer take the BN's place: its name, dtype
    policy and trainable flag."""
    layer = site.layer
    return {"name": layer.name, "dtype": layer.dtype_policy, "trainable": layer.trainable}


def keras_axis(site):
    """The BN's channel axis as Keras layers spell it: -1 when last, else its index."""
    return -1 if site.axis == site.rank - 1 else site.axis


def built(site, new_layer):
    """`new_layer` built for the BN's input shape, ready for weights."""
    new_layer.build(site.input_shape)
    return new_layer


def assign(variable, value):
    """Set a Keras variable from a NumPy value, in the variable's own dtype."""
    variable.assign(np.asarray(value).astype(variable.dtype))


def carry_affine(site, new_layer, gamma_name="gamma", beta_name="beta"):
    """Copy the BN's γ and β (those it has) into the new layer's per-channel weights."""
    gamma, beta, _, _ = bn_numbers(site.layer)
    carried = []
    for name, value, present in ((gamma_name, gamma, site.scale), (beta_name, beta, site.center)):
        variable = getattr(new_layer, name, None)
        if present and variable is not None:
            assign(variable, value)
            carried.append(name)
    return carried
