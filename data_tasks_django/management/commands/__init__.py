"""`manage.py data_tasks`."""
