"""lab.published_pair_order: Megatron's combined-1F1B layer order, exact in its two limits."""
from __future__ import annotations

import pytest

from lab.published_pair_order import Segments, megatron_period


def test_short_all_to_alls_hide_completely() -> None:
    """Each all-to-all shorter than its compute partner: the pair costs its compute, no idle."""
    seg = Segments(attn_f=3.0, attn_b=5.0, mlp_f=2.0, mlp_b=2.0, mlp_dw=2.0, a2a=1.0)
    period, idle = megatron_period(seg)
    assert period == pytest.approx(14.0)
    assert idle == pytest.approx(0.0)


def test_long_all_to_alls_serialise_on_the_one_comm_stream() -> None:
    """All-to-alls far longer than the compute: the pair costs its four all-to-alls (one stream)
    and the compute stream idles for the rest."""
    seg = Segments(attn_f=0.5, attn_b=0.5, mlp_f=0.5, mlp_b=0.5, mlp_dw=0.5, a2a=10.0)
    period, idle = megatron_period(seg)
    assert period == pytest.approx(40.0)
    assert idle == pytest.approx(40.0 - 2.5)
