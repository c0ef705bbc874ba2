"""Django's management commands of the data tasks app."""
