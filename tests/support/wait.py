"""One bounded wait for every test: poll until something holds, or fail saying what was awaited.

`wait_until` polls a condition and hands back its (truthy) value; `poll` fetches a value until
it is acceptable and hands back that value, naming the last one it saw when time runs out.
Both raise `WaitTimeout`, an `AssertionError`, so a wait that times out fails the test like an
`assert` would, with a message saying what never happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """What a test waited for did not happen in time."""


def wait_until(
    condition: Callable[[], T],
    *,
    what: str,
    timeout: float = 10.0,
    interval: float = 0.05,
    pause: Callable[[float], object] = time.sleep,
    detail: Callable[[], object] | None = None,
) -> T:
    """Call `condition` until it returns something truthy, and return that.

    Between calls, `pause(seconds)` waits (at most `interval`, never past the deadline); a
    test that can be woken early passes a condition variable's `wait` instead of `time.sleep`.
    After `timeout` seconds this raises, naming `what` and adding `detail()` (a log, say).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            message = f"timed out after {timeout:g}s waiting for {what}"
            if detail is not None:
                message += f"\n{detail()}"
            raise WaitTimeout(message)
        pause(min(interval, remaining))


def poll(
    fetch: Callable[[], T],
    *,
    until: Callable[[T], object],
    what: str,
    timeout: float = 10.0,
    interval: float = 0.05,
    describe: Callable[[T], str] = repr,
    detail: Callable[[], object] | None = None,
) -> T:
    """Call `fetch` until `until(value)` holds, and return that value.

    On timeout the message names `what`, the last value fetched (through `describe`) and
    `detail()` if given.
    """
    seen: list[T] = []

    def accepted() -> bool:
        seen[:] = [fetch()]
        return bool(until(seen[0]))

    def last() -> str:
        lines = [f"last seen: {describe(seen[0])}" if seen else "nothing fetched"]
        if detail is not None:
            lines.append(str(detail()))
        return "\n".join(lines)

    wait_until(accepted, what=what, timeout=timeout, interval=interval, detail=last)
    return seen[0]
