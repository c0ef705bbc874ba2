"""Fill users.email_normalized with the trimmed, lower-cased email, for case-blind look-ups."""

from sqlalchemy import text
from sqlalchemy.orm import Session

from data_tasks import keyset_backfill


@keyset_backfill("users", key="id", batch_size=2000)
def normalize_user_emails(session: Session, first_id: int, last_id: int) -> None:
    session.execute(
        text(
            "UPDATE users SET email_normalized = lower(trim(email)), "
            "backfill_runs = backfill_runs + 1 WHERE id BETWEEN :first AND :last"
        ),
        {"first": first_id, "last": last_id},
    )


@normalize_user_emails.check
def every_email_normalized(session: Session) -> str | None:
    missing = session.execute(
        text("SELECT count(*) FROM users WHERE email_normalized IS NULL")
    ).scalar_one()
    return f"{missing} users still have no email_normalized" if missing else None
