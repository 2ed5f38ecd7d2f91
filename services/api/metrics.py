"""Prometheus metrics, registered on a registry owned by one app (tests build many apps)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes and friends
        self.latency = Histogram(
            "unmask_request_seconds",
            "End-to-end request latency",
            ["route"],
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.queue_depth = Gauge("unmask_queue_depth", "Requests waiting for a slot in the running batch", registry=r)
        self.active = Gauge("unmask_active_requests", "Requests in the running batch", registry=r)
        self.batch_rows = Histogram(
            "unmask_batch_rows", "Rows (samples) per forward pass", registry=r, buckets=(1, 2, 4, 8, 16, 32, 64, 128)
        )
        self.steps = Counter(
            "unmask_denoising_steps", "Forward passes run by the engine (rate() gives steps/s)", registry=r
        )
        self.frames_dropped = Counter(
            "unmask_frames_dropped", "Intermediate frames coalesced for slow stream readers", registry=r
        )
        self.tokens = Counter("unmask_generated_tokens", "Tokens generated", registry=r)
        self.errors = Counter("unmask_errors", "Error responses by type", ["type"], registry=r)
        self.reloads = Counter(
            "unmask_model_reloads", "Checkpoint swaps, by result (swapped, refused)", ["result"], registry=r
        )
