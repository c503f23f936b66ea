"""problem+json refusals: what their headers may say."""

from __future__ import annotations

import pytest

from stockade.gateway.problem import MAX_RETRY_AFTER, TooManyRequests, Unavailable


@pytest.mark.parametrize("problem", [TooManyRequests, Unavailable])
@pytest.mark.parametrize("wait", [float("inf"), float("nan"), 1e300])
def test_a_retry_after_past_a_day_is_a_day(problem: type[TooManyRequests],
                                          wait: float) -> None:
    # ceil() of an infinite wait raised (a 500); a 300-digit one was sent as it was.
    assert problem("later", wait).headers == [(b"retry-after", str(MAX_RETRY_AFTER).encode())]
