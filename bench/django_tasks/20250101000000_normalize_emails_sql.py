"""The example's email backfill written with the SQLAlchemy session instead of the ORM."""

from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from data_tasks import keyset_backfill


@keyset_backfill("accounts_customer", where="email_normalized IS NULL", batch_size=1000)
def normalize_emails_sql(session: Session, first: Any, last: Any) -> None:
    session.execute(
        text(
            "UPDATE accounts_customer SET email_normalized = lower(trim(email)) "
            "WHERE id BETWEEN :first AND :last AND email_normalized IS NULL"
        ),
        {"first": first, "last": last},
    )
