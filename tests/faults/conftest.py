"""The fault ledger's fixture: every fault case writes its line, whether it passed or failed."""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest
from sqlalchemy import Engine

from tests.faults.harness import SHAPES
from tests.faults.ledger import FaultCase, ledger_path
from tests.processes import WorkerProcess

REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the test, so the ledger fixture knows whether it passed."""
    report = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    return report


@pytest.fixture
def faults(request: pytest.FixtureRequest, postgres_engine: Engine) -> Iterator[FaultCase]:
    """The test's fault case; at its end the rows are counted and its line goes to $FAULT_LEDGER.

    This runs before `postgres_engine` is torn down (the next test empties the database), and
    after the test's workers are killed (see `workers` below), so the counts are final.
    """
    case = FaultCase(postgres_engine, request.node.nodeid)
    yield case
    path = ledger_path()
    if path is None:
        return
    reports = request.node.stash.get(REPORTS, {})
    passed = all(when in reports and reports[when].passed for when in ("setup", "call"))
    if not case.case:
        case.describe(request.function.__name__)
    case.write(path, passed)


@pytest.fixture
def workers(faults: FaultCase, workers: list[WorkerProcess]) -> list[WorkerProcess]:
    """The test's worker processes; set up after `faults`, so they are killed before it counts."""
    return workers


@pytest.fixture(params=list(SHAPES))
def shape(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the case once per shape of the workload; the value names the shape for its row."""
    monkeypatch.setenv("FAULTY_SHAPE", request.param)
    return SHAPES[str(request.param)]
