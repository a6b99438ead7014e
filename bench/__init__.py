"""`scopehub bench`: throughput and latency of the reference hub against a measured floor.

Modules:
- `stats`      latency histograms (log buckets, mergeable across processes) and percentiles
- `frames`     the benchmark event frame (`sent_at`, step tag) and how receivers parse it
- `loadgen`    subscriber connections spread over spawned worker processes
- `publisher`  open-loop publishing at a given rate through the control API
- `targets`    the systems under test: nodes we start (Cluster, redis-server) or nodes given by URL
- `floor`      the floor: a bare aiohttp send loop (`floor_server`) and raw Redis round trips
- `workloads`  the workloads and the step loop (rising publish rate until delivery stops keeping up)
- `report`     rich tables, bench.json and latency_throughput.png
"""

from __future__ import annotations
