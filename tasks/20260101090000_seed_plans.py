"""Create the three billing plans every account can choose from."""

from sqlalchemy import text
from sqlalchemy.orm import Session

from data_tasks import one_shot


@one_shot()
def seed_plans(session: Session) -> None:
    session.execute(
        text("INSERT INTO plans (code, name, monthly_cents) VALUES (:code, :name, :cents)"),
        [
            {"code": "free", "name": "Free", "cents": 0},
            {"code": "team", "name": "Team", "cents": 2900},
            {"code": "business", "name": "Business", "cents": 9900},
        ],
    )
