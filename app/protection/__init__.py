"""Protecting and restoring Exchange servers, in four groups:

- ``handlers``: the job handlers (backup, restore, verify, expire) that the job engine
  (app.jobs) runs; they join the engine to the strategies (app.strategies) and the catalog.
- ``restores``: the restore modes, one module each, that the restore handler runs.
- ``bindings``: opening the adapters (vCenter, arrays) from the catalog's connection rows.
- ``catalog``: the catalog's rules about restore points and their copies.

The inventory sync job lives beside the inventory, in app.inventory.sync_job.
"""
