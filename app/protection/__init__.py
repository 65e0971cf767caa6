"""Job handlers that protect and restore: backup, restore, sync. They join the job engine
(app.jobs) to the strategies (app.strategies) and the catalog (app.db)."""
