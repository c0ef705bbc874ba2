"""`python -m deploy_hooks`: the operator commands."""

import sys

from deploy_hooks.cli import main

sys.exit(main())
