"""The admin page of the data tasks: status, progress, rate, ETA, last error and history of
each, with pause / resume / cancel / retry behind the `change_datatask` permission."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_POST
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError

from data_tasks import operations
from data_tasks.coordination import unavailable
from data_tasks.database import database_error
from data_tasks.errors import DataTaskError, UnknownVersion
from data_tasks.log import first_line
from data_tasks.overview import TaskView
from data_tasks.runtime import COMMAND_TIMEOUTS, Runtime
from data_tasks.settings import Settings
from data_tasks_django import conf
from data_tasks_django.models import DataTask
from deploy_hooks.formatting import format_seconds, note
from deploy_hooks.publishing import LazyCeleryPublisher

# What each button does, and the statuses it is offered in.
ACTIONS: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = {
    "pause": (operations.pause, ("enqueued", "running")),
    "resume": (operations.resume, ("paused",)),
    "cancel": (operations.cancel, ("pending", "enqueued", "running", "paused", "failed")),
    "retry": (operations.retry, ("failed",)),
}
HISTORY_ROWS = 50

# This process's runtimes for the admin, by the settings they were built with.
_runtimes: dict[Settings, Runtime] = {}
_runtimes_lock = threading.Lock()


def runtime() -> Runtime:
    """This process's runtime for the admin: records only, with the commands' time limits."""
    settings = conf.build_settings()
    with _runtimes_lock:
        if settings not in _runtimes:
            _runtimes[settings] = Runtime.build(
                settings,
                LazyCeleryPublisher(settings),
                connect_timeout=settings.connect_timeout_seconds,
                timeouts=COMMAND_TIMEOUTS,
            )
        return _runtimes[settings]


def row(view: TaskView, statuses: dict[str, str]) -> dict[str, Any]:
    """One task as the page shows it."""
    progress, record = view.progress, view.record
    live = record.state.is_in_flight
    return {
        "version": record.version,
        "name": record.name,
        "status": record.status,
        "processed": progress.processed,
        "total": progress.total,
        "percent": None if progress.percent is None else round(progress.percent, 1),
        "rate": round(progress.rows_per_second) if live and progress.rows_per_second else None,
        "eta": format_seconds(progress.eta_seconds)
        if live and progress.eta_seconds is not None
        else None,
        "note": note(view, statuses),
        "actions": [name for name, (_, allowed) in ACTIONS.items() if record.status in allowed],
    }


@admin.register(DataTask)
class DataTaskAdmin(admin.ModelAdmin):
    """The data tasks page in place of a changelist, and one page per task."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Task files add data tasks, not the admin."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """The records say which changes already ran: never deleted here."""
        return False

    def get_urls(self) -> list[URLPattern]:
        """The list, one task's page, and one POST endpoint per action."""
        wrap = self.admin_site.admin_view
        return [
            path("", wrap(self.list_view), name="data_tasks_datatask_changelist"),
            path("<str:version>/", wrap(self.task_view), name="data_tasks_datatask_change"),
            path(
                "<str:version>/<str:action>/",
                wrap(require_POST(self.action_view)),
                name="data_tasks_datatask_action",
            ),
        ]

    def context(self, request: HttpRequest, **values: Any) -> dict[str, Any]:
        """The admin's own context plus the page's values."""
        return {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "can_operate": self.has_change_permission(request),
            **values,
        }

    def list_view(self, request: HttpRequest) -> HttpResponse:
        """Every data task with its status, progress, rate, ETA and last error."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            views = operations.status(runtime())
        except (DataTaskError, DBAPIError, RedisError) as error:
            messages.error(request, self.one_line(error))
            views = []
        statuses = {view.record.version: view.record.status for view in views}
        rows = [row(view, statuses) for view in views]
        context = self.context(request, title="Data tasks", rows=rows)
        return render(request, "admin/data_tasks_django/list.html", context)

    def task_view(self, request: HttpRequest, version: str) -> HttpResponse:
        """One task's record whole, its lanes and its history."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            view = operations.show(runtime(), version)
            history = operations.history(runtime(), version, HISTORY_ROWS)
        except UnknownVersion:
            raise Http404(f"no data task {version}") from None
        statuses = {version: view.record.status}
        context = self.context(
            request,
            title=f"Data task {version} {view.record.name}",
            task=row(view, statuses),
            record=view.record,
            lanes=view.lanes,
            history=history,
        )
        return render(request, "admin/data_tasks_django/task.html", context)

    def action_view(self, request: HttpRequest, version: str, action: str) -> HttpResponse:
        """Pause, resume, cancel or retry one task, as the signed-in user."""
        if action not in ACTIONS:
            raise Http404(f"no action {action}")
        if not self.has_change_permission(request):
            messages.error(request, "you may not operate data tasks (change_datatask)")
            return HttpResponseRedirect(reverse("admin:data_tasks_datatask_changelist"))
        function, _ = ACTIONS[action]
        actor = f"{request.user.get_username()} (admin)"
        try:
            function(runtime(), version, actor)
        except (DataTaskError, DBAPIError, RedisError) as error:
            messages.error(request, self.one_line(error))
        else:
            messages.success(request, f"{action}: {version} done")
        return HttpResponseRedirect(reverse("admin:data_tasks_datatask_changelist"))

    def one_line(self, error: Exception) -> str:
        """The error as the commands print it."""
        settings = runtime().settings
        if isinstance(error, DBAPIError):
            return str(database_error(settings.database_url, error))
        if isinstance(error, RedisError):
            return str(unavailable(settings, error))
        return first_line(error)
