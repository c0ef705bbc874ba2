"""The example shop's own settings, with the data tasks' options the tests give (short budgets,
a task folder of their own) in TEST_DATA_TASKS as JSON."""

import json
import os

from shop.settings import *  # noqa: F403
from shop.settings import DATA_TASKS as SHOP_DATA_TASKS

DATA_TASKS = {**SHOP_DATA_TASKS, **json.loads(os.environ.get("TEST_DATA_TASKS", "{}"))}
