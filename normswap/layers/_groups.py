"""How many channel groups a group-statistics layer uses: the rules, written once.

Group statistics (GroupNormalization, EvoNorm-S0) need a group count G that divides the
channel count C. A fixed request such as 32 (the papers' default) does not divide 24, 72
or 144 channels, so the count is chosen per layer:

- `groups_for(channels, groups, rank)`: the count a layer built with a requested `groups`
  uses (EvoNormS0's `groups_used`): the largest divisor of C not above the request.
- `auto_groups(channels)`: the count normswap picks when none is requested (the
  `groupnorm` target's `groups="auto"`): the largest divisor G ≤ 32 of C that leaves at
  least 16 channels per group.
"""

#: Upper limit of `auto_groups`: the paper's default group count (Wu & He 2018).
MAX_GROUPS = 32
#: `auto_groups` keeps at least this many channels in each group.
MIN_CHANNELS_PER_GROUP = 16


def groups_for(channels, groups, rank):
    """The group count used for `channels` channels when `groups` were requested.

    The largest divisor of `channels` that is ≤ `groups` (so 32 groups over 24 channels
    become 24, over 72 channels 24, over 144 channels 24). On a rank-2 input the
    statistics run over the channels of a group only, so a group of a single channel
    has variance 0 and would divide by √ε: there the group size is kept ≥ 2, i.e. the
    count is the largest divisor ≤ min(groups, channels // 2). Raises ValueError
    when no valid count exists (a rank-2 input with a single channel).
    """
    limit = groups if rank > 2 else min(groups, channels // 2)
    for g in range(min(limit, channels), 0, -1):
        if channels % g == 0:
            return g
    raise ValueError(
        f"Cannot group {channels} channel(s) of a rank-{rank} input: each group's "
        "statistics would be a single number, whose variance is 0. Use a target without "
        "group statistics (e.g. 'frn' or 'frozenbn') for this layer."
    )


def auto_groups(channels):
    """The default group count for `channels` channels, when the user asks for none.

    The largest divisor G of C with G ≤ 32 (`MAX_GROUPS`) and at least 16 channels per
    group (`MIN_CHANNELS_PER_GROUP`): C = 16 → 1, C = 64 → 4, C = 512 → 32, C = 24 → 1,
    C = 96 → 6. Channel counts below 32 give 1 (a per-sample LayerNorm over spatial
    axes and channels), never a group count that would zero a small layer.
    """
    limit = max(1, min(MAX_GROUPS, channels // MIN_CHANNELS_PER_GROUP))
    return max(g for g in range(1, limit + 1) if channels % g == 0)
