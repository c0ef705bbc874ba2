"""Record each user's email domain, read from the normalized email the previous task filled."""

from collections.abc import Sequence
from typing import Any

from sqlalchemy import column, select, table, text
from sqlalchemy.orm import Session

from data_tasks import row_iteration

users = table("users", column("id"), column("email_normalized"))


@row_iteration(select(users.c.id, users.c.email_normalized), key="id", batch_size=1000)
def assign_email_domains(session: Session, rows: Sequence[Any]) -> None:
    session.execute(
        text("UPDATE users SET email_domain = :domain WHERE id = :id"),
        [{"id": row.id, "domain": row.email_normalized.rpartition("@")[2]} for row in rows],
    )
