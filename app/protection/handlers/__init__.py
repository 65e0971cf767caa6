"""Job handlers: what a backup, restore, verify or expire job does (see app.jobs.handlers)."""
