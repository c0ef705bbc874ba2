"""A project-level task: note, on each customer whose email had capitals, what it was."""

from accounts.models import Customer

from data_tasks_django import row_iteration


@row_iteration(Customer.objects.filter(email__regex="[A-Z]"), batch_size=500)
def note_mixed_case_emails(customers):
    for customer in customers:
        customer.note = f"signed up as {customer.email}"
    Customer.objects.bulk_update(customers, ["note"])
