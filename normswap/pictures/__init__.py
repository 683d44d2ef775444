"""Pictures: `normswap plot` (SwitchNorm's learned switch, per-site fidelity) and
`normswap inspect --graph` (the layer graph with BN sites highlighted).

matplotlib is an optional extra (`pip install 'normswap[plot]'`); without it, a picture
that needs it fails with one line saying so.
"""

from normswap.errors import UsageError


def pyplot():
    """matplotlib.pyplot on a file-only backend, or a UsageError saying how to get it."""
    try:
        import matplotlib
    except ImportError:
        raise UsageError("pictures need matplotlib: pip install 'normswap[plot]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt
