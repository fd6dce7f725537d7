"""Running independent tasks on local processes or on a Dask cluster.

The simulator's replications (:mod:`~fleetopt_milp.simulator`) and the what-if sweeps
(:mod:`~fleetopt_milp.sweep`) share this: :func:`dask_client` connects to a scheduler
address (or uses a given ``dask.distributed.Client``) with a one-line error when it cannot,
and :func:`as_completed_map` yields results as tasks finish, serially, on a local process
pool, or on Dask. Workers need fleetopt_milp importable.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import as_completed as _local_completed
from contextlib import contextmanager
from typing import Any

from .errors import FleetOptError

__all__ = ["dask_client", "as_completed_map"]


@contextmanager
def dask_client(scheduler):
    """A ``dask.distributed.Client`` for ``scheduler`` (address ``tcp://host:port`` or a
    Client, which is used as is and left open); spill files go to a private temp dir."""
    try:
        import dask
        from dask.distributed import Client
    except ImportError:  # pragma: no cover - dask is a dependency
        raise FleetOptError("scheduler: dask[distributed] is not installed; "
                            "pip install 'dask[distributed]' or drop --scheduler") from None
    with tempfile.TemporaryDirectory(prefix="fleetopt-dask-") as tmp, \
            dask.config.set({"temporary-directory": tmp}):
        own = isinstance(scheduler, str)
        if own:
            try:
                client = Client(scheduler, timeout="20s", set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise FleetOptError(f"scheduler={scheduler}: cannot reach the Dask scheduler "
                                    f"({exc}); start one with `dask scheduler` or drop "
                                    "--scheduler") from None
        else:
            client = scheduler
        try:
            yield client
        finally:
            if own:
                client.close()


def as_completed_map(fn: Callable[[Any], Any], items: Iterable[Any], workers: int = 1,
                     scheduler=None) -> Iterator[Any]:
    """``fn(item)`` for every item, yielded in completion order (not input order).

    ``scheduler`` (address or Client): on Dask. Else ``workers`` local processes, or in
    this process when ``workers == 1``.
    """
    items = list(items)
    if scheduler is not None:
        from dask.distributed import as_completed

        with dask_client(scheduler) as client:
            for fut in as_completed(client.map(fn, items, pure=False), loop=client.loop):
                yield fut.result()
        return
    if workers < 1:
        raise FleetOptError(f"workers={workers}: need at least one worker process")
    if workers == 1 or len(items) <= 1:
        for item in items:
            yield fn(item)
        return
    with ProcessPoolExecutor(max_workers=min(workers, len(items))) as pool:
        for fut in _local_completed([pool.submit(fn, item) for item in items]):
            yield fut.result()
