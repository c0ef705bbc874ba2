"""Many small tasks: one-shot data tasks end to end against empty Celery jobs, two processes.

Both sides start from a fresh process: the deploy hook publishes the data tasks, a script
(bench.publish_noops) the empty jobs.
"""

from __future__ import annotations

import subprocess
import sys
import time

from bench.config import Config
from bench.data import ONE_SHOT_SOURCE
from bench.figures import Figure, median
from bench.services import REPO, Services, utc_now, wait_for


def data_tasks(services: Services, count: int, timeout: float) -> float:
    """Deploy `count` one-shot task files at once; seconds until the last has succeeded."""
    services.clear_tasks()
    versions = [services.next_version() for _ in range(count)]
    for index, version in enumerate(versions):
        services.write_task(version, f"bench_small_{index}", ONE_SHOT_SOURCE)
    began = utc_now()
    services.run_hook("--quiet")
    _, finished = services.wait_succeeded(versions, timeout)
    return (finished - began).total_seconds()


def empty_jobs(services: Services, count: int, timeout: float) -> float:
    """Publish `count` empty jobs from a fresh process; seconds until the workers ran them all."""
    from bench.worker_app import noop_counter

    counter = noop_counter(services.settings.key_prefix)
    services.redis.delete(counter)
    began = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "bench.publish_noops", str(count)],
        env=services.environment(),
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=timeout,
    )
    wait_for(lambda: int(services.redis.get(counter) or 0) >= count, timeout, interval=0.01)
    return time.monotonic() - began


def run(services: Services, config: Config) -> list[Figure]:
    """The overhead per data task beyond a bare Celery round trip, in milliseconds."""
    count = config.small_tasks
    ours: list[float] = []
    baseline: list[float] = []
    with services.worker(concurrency=2):
        empty_jobs(services, min(count, 50), config.timeout)  # warm both pool processes
        for repetition in range(config.repetitions):
            pair = [(data_tasks, ours), (empty_jobs, baseline)]
            for measure, samples in pair if repetition % 2 == 0 else pair[::-1]:
                samples.append(measure(services, count, config.timeout))
    services.clear_tasks()
    per_task = [(o - b) / count * 1000 for o, b in zip(ours, baseline, strict=True)]
    return [
        Figure(
            "small_tasks_overhead",
            f"{count} one-shot data tasks, 2 worker processes: overhead per task",
            median(per_task),
            "ms/task",
            None,
            "max",
            f"data tasks {median(ours):.2f} s, empty Celery jobs {median(baseline):.2f} s",
            per_task,
            {"data_task_seconds": ours, "empty_job_seconds": baseline, "tasks": count},
        )
    ]
