"""The admin's data tasks page: every task with its figures and history; pause, resume,
cancel and retry behind Django's permissions. With Django's test client, and once in Chromium."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from tests.faults.harness import free_port, log_lines
from tests.processes import wait_for
from tests.services import unavailable
from tests.shop import APPEND, SHOP, Shop

PAGE = "/admin/data_tasks/datatask/"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def user(name: str, *permissions: str, superuser: bool = False) -> Any:
    """A staff user with the given permissions of the data tasks app."""
    from django.contrib.auth.models import Permission, User

    found = User.objects.filter(username=name).first()
    if found is None:
        if superuser:
            found = User.objects.create_superuser(name, f"{name}@example.com", "secret-pw")
        else:
            found = User.objects.create_user(name, f"{name}@example.com", "secret-pw")
            found.is_staff = True
            found.save()
            for codename in permissions:
                found.user_permissions.add(Permission.objects.get(codename=codename))
    return found


def client_for(account: Any) -> Any:
    """Django's test client, signed in."""
    from django.test import Client

    client = Client()
    client.force_login(account)
    return client


def test_the_page_shows_every_task_and_its_actions_follow_the_permissions(
    shop: Shop, shop_in_process: str
) -> None:
    from django.test import override_settings

    shop.add_task("20250801000000_append_x.py")
    shop.add_customers(100)
    assert shop.manage("data_tasks", "enqueue").returncode == 0  # no worker: it stays queued
    admin = client_for(user("root", superuser=True))
    viewer = client_for(user("viewer", "view_datatask"))
    stranger = client_for(user("stranger"))

    with override_settings(DATA_TASKS=shop.data_tasks()):
        page = admin.get(PAGE)
        assert page.status_code == 200
        html = page.content.decode()
        assert f'id="task-{APPEND}" data-status="enqueued"' in html
        assert "normalize_emails" in html and "waiting on 20250801000000" in html
        assert f'{PAGE}{APPEND}/pause/"' in html

        seen = viewer.get(PAGE)
        assert seen.status_code == 200 and "append_x" in seen.content.decode()
        assert f"{APPEND}/pause/" not in seen.content.decode()
        refused = viewer.post(f"{PAGE}{APPEND}/pause/", follow=True)
        assert "may not operate data tasks (change_datatask)" in refused.content.decode()
        assert shop.status(APPEND) == "enqueued"
        assert stranger.get(PAGE).status_code == 403

        paused = admin.post(f"{PAGE}{APPEND}/pause/")
        assert paused.status_code == 302 and shop.status(APPEND) == "paused"
        assert admin.post(f"{PAGE}{APPEND}/retry/", follow=True).status_code == 200
        assert shop.status(APPEND) == "paused"  # retry is for failed tasks: refused in one line
        admin.post(f"{PAGE}{APPEND}/resume/")
        assert shop.status(APPEND) == "enqueued"
        admin.post(f"{PAGE}{APPEND}/cancel/")
        assert shop.status(APPEND) == "cancelled"

        detail = admin.get(f"{PAGE}{APPEND}/").content.decode()
        assert "root (admin)" in detail
        for step in ("paused", "enqueued", "cancelled"):
            assert f"<td>{step}</td>" in detail
        assert admin.get(f"{PAGE}20991231000000/").status_code == 404


def test_pause_clicked_in_chromium_stops_a_running_backfill_after_its_batch(
    shop: Shop, shop_in_process: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user("root", superuser=True)
    shop.add_task("20250801000000_append_x.py")
    shop.add_customers(5_000)
    shop.extra_env["SHOP_BATCH_SLEEP"] = "0.1"
    worker = shop.worker().wait_ready()
    assert shop.manage("data_tasks", "enqueue").returncode == 0
    wait_for(lambda: shop.notes()["x"] >= 200)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=SHOP,
        env=shop.env(),
        stdout=(tmp_path / "server.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium must not look for a driver online
    browser = chromium()
    try:
        wait_for(lambda: port_open(port), timeout=30)
        browser.get(f"http://127.0.0.1:{port}/admin/login/?next={PAGE}")
        browser.find_element(By.NAME, "username").send_keys("root")
        browser.find_element(By.NAME, "password").send_keys("secret-pw")
        browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        row = f"#task-{APPEND}"
        assert browser.find_element(By.CSS_SELECTOR, f"{row} .status").text == "running"
        browser.find_element(By.CSS_SELECTOR, f'{row} button[name="pause"]').click()
        # The form posts, and the page comes back with the task paused.
        WebDriverWait(browser, 30, ignored_exceptions=[StaleElementReferenceException]).until(
            lambda page: page.find_element(By.CSS_SELECTOR, f"{row} .status").text == "paused"
        )
    finally:
        browser.quit()
        server.terminate()
        server.wait(timeout=30)

    # The running chunk finished its batch and stopped: each row it did is applied once.
    wait_for(lambda: log_lines(worker.log(), f"version={APPEND}", "outcome=fenced"))
    applied = shop.notes()
    assert shop.status(APPEND) == "paused"
    assert set(applied) == {"", "x"} and 0 < applied["x"] < 5_000
    assert applied["x"] == shop.lane(APPEND)["processed"]
    worker.stop()


def chromium() -> Any:
    """Debian's headless Chromium through its chromedriver."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(options=options, service=ChromeService(CHROMEDRIVER))
    except Exception as error:
        unavailable("Chromium", error)
    driver.implicitly_wait(10)
    return driver


def port_open(port: int) -> bool:
    """True once something listens on the port."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
