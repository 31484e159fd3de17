"""Running many command subprocesses of one test module at once."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterable
from typing import TypeVar

Case = TypeVar("Case")
Result = TypeVar("Result")


def run_concurrently(run_case: Callable[[Case], Result], cases: Iterable[Case],
                     workers: int = 4) -> list[Result]:
    """`run_case` of every case, a few at a time, in the cases' order.

    A command subprocess spends most of its time starting Python and TensorFlow on one core;
    one by one they leave the other cores idle.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run_case, cases))
