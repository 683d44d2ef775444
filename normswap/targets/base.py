"""What a swap target is: a name, the layer it builds from a BN site, and its carry rule.

A target is one small module under `normswap/targets/` that defines a `Target` subclass and
registers it with `@register`. The engine looks targets up by name (or by the layer class
a user passes) and never names a normalization itself. A target plans (`check`,
`parameters`, `warnings`) and replaces (`replace`, which never changes the parameters it
is given); how calibration re-fits what it built is a separate protocol, its
`calibration` hooks (`normswap.calibration.hooks`). The carry math comes from
`normswap.carry`.
"""

import dataclasses

from normswap.calibration.hooks import AffineCalibration
from normswap.replay import IDENTITY  # noqa: F401 - re-exported for target modules


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
    options = {}  # target-specific swap options and their defaults (the one place)
    normalizes = True  # a normalization layer remains in the BN's place (False for fold)
    calibration = AffineCalibration()  # how calibration re-fits the built layer
    per_sample_channel_statistics = False  # normalizes each sample's channels on their own
    needs_bn_statistics = False  # carries a BN's moving statistics (exact or batch targets)

    def option(self, options, name):
        """The value of option `name` in `options`, else this target's declared default."""
        return options[name] if name in options else self.options[name]

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
        """Plan notes that flag a likely loss of accuracy at `site`: by default, that a
        global pooling reads the output of per-sample, per-channel statistics."""
        if self.per_sample_channel_statistics and site.pooled:
            return [POOLING_WARNING]
        return []

    def parameters(self, site, options):
        """The per-site parameters (e.g. the group count) shown in the plan."""
        return {}

    def replace(self, site, params):
        """Build the new layer(s) for `site`, carry the BN's weights, return a Replacement.
        `params` (from `parameters`) is read, never changed."""
        raise NotImplementedError


POOLING_WARNING = ("warning: a global pooling reads this output; per-sample, per-channel "
                   "statistics remove the channel energy it measures")


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
