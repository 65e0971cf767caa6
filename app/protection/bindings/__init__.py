"""Bindings to the adapters: open vCenter and array clients from catalog rows."""
