"""Entry points run at deploy time and by operators: the deploy hook and the operator CLI."""
