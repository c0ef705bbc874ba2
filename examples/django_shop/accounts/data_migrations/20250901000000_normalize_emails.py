"""Fill in every customer's normalized email: the address, trimmed and lower-cased."""

from accounts.models import Customer
from django.db.models.functions import Lower, Trim

from data_tasks_django import keyset_backfill


@keyset_backfill(Customer.objects.filter(email_normalized=None), batch_size=1000)
def normalize_emails(customers):
    customers.update(email_normalized=Lower(Trim("email")))
