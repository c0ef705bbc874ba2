"""The accounts app."""

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Customers."""

    name = "accounts"
