"""Shared test helpers: brute-force references computed class by class, with no prefix sums."""

from __future__ import annotations

import numpy as np
import pytest

from fleetopt_milp.hardware import load_catalog, resolve_profile
from fleetopt_milp.workload import workload_from_requests


@pytest.fixture(scope="session")
def catalog():
    return load_catalog()


@pytest.fixture(scope="session")
def paper_h100(catalog):
    return resolve_profile(catalog, "paper-H100")


def brute_force_pools(workload, profile, windows, gammas, p_c, latency_s=0.0):
    """Route every class by docs/model.md §4 and return per-pool dicts of
    mass, E[S], E[S^2] and the TTFT floor distribution {floor_s: share of all requests}."""
    pools = [dict(mass=0.0, s1=0.0, s2=0.0, floors={}) for _ in windows]

    def add(k, p, lin, lout, window, extra):
        s = float(profile.service_s(lin, lout, window))
        f = round(float(profile.prefill_s(lin)) + extra, 12)
        d = pools[k]
        d["mass"] += p
        d["s1"] += p * s
        d["s2"] += p * s * s
        d["floors"][f] = d["floors"].get(f, 0.0) + p

    for lin, lout, p in zip(workload.input_tokens, workload.output_tokens, workload.weights):
        total = int(lin + lout)
        k = next(i for i, w in enumerate(windows) if total <= w)
        if k > 0:
            b = windows[k - 1]
            if total <= int(np.floor(gammas[k - 1] * b + 1e-9)) and lout < b and p_c > 0:
                add(k - 1, p * p_c, b - int(lout), int(lout), b, latency_s)
                p = p * (1 - p_c)
        if p > 0:
            add(k, p, int(lin), int(lout), windows[k], 0.0)
    return pools


@pytest.fixture
def small_trace():
    """A hand-made trace of 400 requests with a long tail, outputs of all sizes."""
    rng = np.random.default_rng(7)
    lin = np.concatenate([rng.integers(20, 3000, 300), rng.integers(3000, 30000, 100)])
    lout = np.concatenate([rng.integers(1, 800, 380), rng.integers(2000, 9000, 20)])
    return workload_from_requests(lin, lout, name="small")
