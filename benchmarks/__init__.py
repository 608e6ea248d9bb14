"""batchfsm's benchmarks: each case beside its peer, in one process, as ratios.

Run ``tox -e bench`` or ``python -m benchmarks [--json PATH] [--only NAME]``.
Timing is the median of repeated ``timeit`` runs after a warm-up; a ratio below
1.0 means batchfsm is faster than the peer.
"""
