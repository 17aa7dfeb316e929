"""Named random streams: every random draw of a training run comes from its own stream.

``generator(stream, seed, i)`` is a fresh ``torch.Generator`` seeded by ``seed * K + i`` with
a distinct large prime-like ``K`` per stream, so the draw at step (or epoch) ``i`` is a pure
function of (seed, i): a resumed run sees exactly what the uninterrupted run saw, and two
streams of one seed never share a seed for realistic step counts.
"""

from __future__ import annotations

import torch

STREAMS = {
    "batch_order": 1_000_003,  # the permutation of epoch i (BatchStream)
    "augment": 7_000_001,  # flips / jitter of the batch at step i
    "routing": 9_000_011,  # Gumbel noise or random routing at step i
    "prior_mask": 5_000_011,  # the masked-token pattern of the prior at step i
    "jitter": 3_000_017,  # the feature-jitter noise of the autoencoder's input at step i
}


def stream_seed(stream: str, seed: int, i: int) -> int:
    """The integer seed of draw ``i`` of ``stream`` for training seed ``seed``."""
    if stream not in STREAMS:
        raise KeyError(f"unknown random stream {stream!r}; streams are {', '.join(STREAMS)}")
    return int(seed) * STREAMS[stream] + int(i)


def generator(stream: str, seed: int, i: int) -> torch.Generator:
    """A CPU generator for draw ``i`` of ``stream``."""
    return torch.Generator().manual_seed(stream_seed(stream, seed, i))
