"""The admin's data tasks page: every task with its figures and history; pause, resume,
cancel and retry behind Django's permissions. With Django's test client, and once in Chromium."""

from __future__ import annotations

from typing import Any

from tests.shop import APPEND, Shop

PAGE = "/admin/data_tasks/datatask/"


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
