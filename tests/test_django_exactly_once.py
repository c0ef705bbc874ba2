"""Tasks written with the Django ORM, run by the shop's own `celery -A shop worker`: each
batch's ORM writes commit with its cursor, exactly once, whatever happens to the runner."""

from __future__ import annotations

import signal

import pytest

from tests.processes import wait_for
from tests.shop import APPEND, Shop

pytestmark = pytest.mark.e2e


def test_a_batch_that_raises_after_an_orm_write_leaves_no_trace(shop: Shop) -> None:
    shop.add_task("20250801000000_append_x.py")
    shop.add_customers(2_000)
    flag = shop.tasks_dir.parent / "fail"
    flag.touch()
    shop.extra_env["SHOP_FAIL_FLAG"] = str(flag)
    worker = shop.worker().wait_ready()

    hook = shop.manage("data_tasks", "enqueue")
    assert hook.returncode == 0, hook.stderr
    assert shop.wait_status(APPEND, "failed") == "failed"

    # Three attempts wrote and raised: none of their writes stayed.
    assert shop.notes() == {"": 2_000}
    assert shop.record(APPEND)["attempts"] == 3
    flag.unlink()
    retried = shop.manage("data_tasks", "retry", APPEND)
    assert retried.returncode == 0, retried.stderr
    shop.wait_status(APPEND, "succeeded")
    assert shop.notes() == {"x": 2_000}
    worker.stop()


def test_orm_and_session_writes_to_the_same_rows_share_the_batch(shop: Shop) -> None:
    shop.add_task("20250802000000_session_then_orm.py")
    shop.add_customers(300)

    run = shop.manage("data_tasks", "run", "20250802000000", "--inline")

    assert run.returncode == 0, run.stdout + run.stderr
    assert shop.notes() == {"yx": 300}


def test_a_worker_killed_mid_run_leaves_every_row_applied_once(shop: Shop) -> None:
    shop.add_task("20250801000000_append_x.py")
    shop.add_customers(3_000)
    shop.extra_env["SHOP_BATCH_SLEEP"] = "0.05"
    first = shop.worker().wait_ready()
    assert shop.manage("data_tasks", "enqueue").returncode == 0
    wait_for(lambda: shop.notes()["x"] >= 500)

    first.kill()
    second = shop.worker().wait_ready()
    shop.sweep_until_done(APPEND)

    assert shop.notes() == {"x": 3_000}
    second.stop()


def test_a_runner_frozen_mid_run_is_rolled_back_and_every_row_applied_once(shop: Shop) -> None:
    shop.add_task("20250801000000_append_x.py")
    shop.add_customers(3_000)
    # Most of a batch's time is after its write: a freeze nearly always lands inside one.
    shop.extra_env["SHOP_BATCH_SLEEP"] = "0.2"
    frozen = shop.worker().wait_ready()
    assert shop.manage("data_tasks", "enqueue").returncode == 0
    wait_for(lambda: shop.notes()["x"] >= 300)

    frozen.signal(signal.SIGSTOP, whole_group=True)
    lane = shop.lane(APPEND)
    shop.extra_env["SHOP_BATCH_SLEEP"] = "0"
    other = shop.worker().wait_ready()
    shop.sweep_until_done(APPEND)
    assert shop.notes() == {"x": 3_000}

    frozen.signal(signal.SIGCONT, whole_group=True)
    if lane["status"] == "running":
        # Revived, the old chunk finds its batch gone with its session, or its lane taken.
        wait_for(
            lambda: [
                line
                for line in frozen.log().splitlines()
                if f"lane=0 epoch={lane['epoch']} " in line + " "
                and ("event=fenced" in line or "event=batch_failed" in line)
            ],
            timeout=30,
        )
    assert shop.notes() == {"x": 3_000}
    assert shop.status(APPEND) == "succeeded"
    frozen.stop()
    other.stop()
