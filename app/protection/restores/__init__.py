"""Restore modes: one module each, run by the restore job handler."""
