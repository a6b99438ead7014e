"""The simulator: real clusters on real Redis, client populations, fault timelines, reports.

spec (scenario files) -> sim (orchestration: cluster, proxies, clients, workload, nemesis)
-> history -> conformance.checker (verdicts) + analysis (figures) -> report."""
