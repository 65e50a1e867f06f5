"""Small utilities: environment report, registry."""
