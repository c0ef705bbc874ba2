"""A customer, whose normalized email a data task fills in."""

from django.db import models


class Customer(models.Model):
    """One customer account."""

    email = models.CharField(max_length=254)
    # Filled in by the data task 20250901000000_normalize_emails after the deploy that adds it.
    email_normalized = models.CharField(max_length=254, null=True, blank=True)
    note = models.TextField(default="", blank=True)

    def __str__(self) -> str:
        return self.email
