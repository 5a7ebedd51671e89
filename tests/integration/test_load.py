"""Load: 100 prompts queued at once by 10 API clients against a master with 3 workers.

The master takes part (share 0 of every prompt), so each prompt makes 4 images of 128x128, one per
participant, each stamped with its seed and held 0.1 s by a sleep node: every image is checked to
arrive exactly once. While the prompts run, two
probes watch the master from outside: its resident memory (psutil on its pid, every 100 ms) and its
event loop, measured as the latency of a cheap route (GET /distributed/workers) polled every 20 ms
from another thread: a request answered late means the loop was busy that long. The figures go to
`load.json` in the run's output folder and are printed; they are never asserted.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import psutil

from tests.conftest import OUTPUT_ROOT, Cluster
from tests.harness import ComfyInstance
from tests.integration.workflows import read_stamp, saved_images, seed_stamp_prompt

CLIENTS = 10
PROMPTS_PER_CLIENT = 10
SEED_STEP = 10
PROBE_INTERVAL = 0.02
SIZE = 128
SHARE_SECONDS = 0.1
"""Each share sleeps this long (DistTestSleep), so the run lasts long enough for the probes to see it."""


class MasterProbe:
    """Samples the master's RSS and the latency of a cheap route on a background thread."""

    def __init__(self, master: ComfyInstance) -> None:
        assert master.process is not None
        self._process = psutil.Process(master.process.pid)
        self._url = master.url + "/distributed/workers"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.latencies: list[float] = []
        self.worst: list[tuple[float, float]] = []
        """The slowest answers as (seconds since the probe started, latency), to tell a one-off from a rhythm."""
        self.rss: list[int] = []

    def __enter__(self) -> MasterProbe:
        self.rss.append(self._process.memory_info().rss)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        last_rss = 0.0
        began = time.perf_counter()
        while not self._stop.is_set():
            started = time.perf_counter()
            with urllib.request.urlopen(self._url, timeout=30) as response:
                response.read()
            latency = time.perf_counter() - started
            self.latencies.append(latency)
            self.worst = sorted([*self.worst, (round(started - began, 2), round(latency * 1000, 1))], key=lambda w: -w[1])[:5]
            if started - last_rss >= 0.1:
                self.rss.append(self._process.memory_info().rss)
                last_rss = started
            self._stop.wait(PROBE_INTERVAL)


def test_hundred_prompts_from_ten_clients_all_complete_with_every_image_once(cluster: Cluster, spare_worker: ComfyInstance) -> None:
    cluster.workers["spare"] = spare_worker
    cluster.use_workers("a", "b", "spare", participate=True, assign_timeout=120)
    cluster.wait_online("a", "b", "spare")
    cluster.run(seed_stamp_prompt(seed=1, prefix="warmup"))
    seeds = [[200_000 + (client * PROMPTS_PER_CLIENT + n) * SEED_STEP for n in range(PROMPTS_PER_CLIENT)] for client in range(CLIENTS)]

    def queue_all(client_seeds: list[int]) -> list[tuple[int, str, float]]:
        queued = []
        for seed in client_seeds:
            started = time.perf_counter()
            prompt_id = cluster.master.queue_prompt(seed_stamp_prompt(seed=seed, width=SIZE, height=SIZE, sleep=SHARE_SECONDS,
                                                                       prefix=f"load-{seed}"))
            queued.append((seed, prompt_id, time.perf_counter() - started))
        return queued

    with MasterProbe(cluster.master) as probe:
        started = time.monotonic()
        with ThreadPoolExecutor(CLIENTS) as pool:
            queued = [item for batch in pool.map(queue_all, seeds) for item in batch]
        queued_in = time.monotonic() - started
        entries = {seed: cluster.master.wait_history(prompt_id, 600) for seed, prompt_id, _ in queued}
        finished_in = time.monotonic() - started

    assert all(entry["status"]["status_str"] == "success" for entry in entries.values())
    missing, extra = [], []
    for seed, entry in entries.items():
        got = sorted(read_stamp(path) for path in saved_images(entry, cluster.master.output_dir))
        wanted = [(seed + k, 0) for k in range(4)]
        if got != wanted:
            missing.append((seed, sorted(set(wanted) - set(got))))
            extra.append((seed, [stamp for stamp in got if got.count(stamp) > 1 or stamp not in wanted]))
    figures = {
        "prompts": len(entries), "clients": CLIENTS, "workers": 3, "master_participates": True,
        "image_size": SIZE, "share_seconds": SHARE_SECONDS,
        "images": sum(len(saved_images(e, cluster.master.output_dir)) for e in entries.values()),
        "seconds_to_queue_all": round(queued_in, 2), "seconds_to_finish_all": round(finished_in, 1),
        "worst_prompt_post_ms": round(max(t for _, _, t in queued) * 1000, 1),
        "master_rss_start_mb": round(probe.rss[0] / 2**20, 1), "master_rss_peak_mb": round(max(probe.rss) / 2**20, 1),
        "master_rss_end_mb": round(probe.rss[-1] / 2**20, 1),
        "loop_probe_samples": len(probe.latencies),
        "loop_probe_worst_ms": round(max(probe.latencies) * 1000, 1),
        "loop_probe_p99_ms": round(sorted(probe.latencies)[int(len(probe.latencies) * 0.99)] * 1000, 1),
        "loop_probe_median_ms": round(sorted(probe.latencies)[len(probe.latencies) // 2] * 1000, 1),
        "loop_probe_worst_5_at_s_ms": probe.worst,
    }
    (OUTPUT_ROOT / "load.json").write_text(json.dumps(figures, indent=2))
    print(f"\nLOAD {figures}")
    assert not [m for m in missing if m[1]], f"images missing: {missing}"
    assert not [e for e in extra if e[1]], f"images duplicated or foreign: {extra}"
