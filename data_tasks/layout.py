"""The version of the runner's table layout, readable without the ORM that defines the tables."""

# 1: 0.1.0 (the cursor on task_records, parallel shards in task_shards); 2: lanes;
# 3: notices sent at least once (task_history.notice_sent_at, notice_attempts).
SCHEMA_VERSION = 3
