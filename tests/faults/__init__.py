"""Fault injection against real PostgreSQL, Redis and celery worker processes."""
