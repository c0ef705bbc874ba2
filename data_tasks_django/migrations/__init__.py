"""The data tasks app's migrations."""
