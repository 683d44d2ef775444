"""Data files shipped with normswap: the demo model and its held-out digits."""
