"""Helpers for users' own tests of their data tasks (a pytest plugin, loaded automatically)."""
