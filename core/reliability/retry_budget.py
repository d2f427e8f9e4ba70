"""A per-process retry budget: retries stay a fraction of the traffic.

Without a budget, an outage multiplies the load on the provider that is down
by the number of attempts per request.  :class:`RetryBudget` is a token
bucket: every request deposits ``ratio`` of a token, every retry withdraws a
whole one, and a reserve of ``minimum_per_second`` tokens a second keeps
retries possible when traffic is thin.  The bucket holds at most ``burst``
tokens.  One budget serves every route stage of the process (on
``Services``); it is not shared between processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class RetryBudget:
    """See the module docstring."""

    def __init__(
        self,
        ratio: float = 0.2,
        minimum_per_second: float = 5.0,
        burst: float = 100.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ratio = ratio
        self.minimum_per_second = minimum_per_second
        self.burst = burst
        self._clock = clock
        self._last = clock()
        self._balance = min(burst, max(1.0, minimum_per_second))

    def deposit(self) -> None:
        """One request arrived."""
        self._refill()
        self._balance = min(self.burst, self._balance + self.ratio)

    def withdraw(self) -> bool:
        """Whether one retry may go ahead (it is then paid for)."""
        self._refill()
        if self._balance < 1.0:
            return False
        self._balance -= 1.0
        return True

    @property
    def balance(self) -> float:
        self._refill()
        return self._balance

    def _refill(self) -> None:
        now = self._clock()
        elapsed, self._last = max(0.0, now - self._last), now
        self._balance = min(
            self.burst, self._balance + elapsed * self.minimum_per_second
        )
