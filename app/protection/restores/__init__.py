"""Restore modes: one module each, registered in app.protection.restores.registry and run by
the restore job handler. Importing this package registers them all. No two modes take the
same request (a mode name for the kind of point it applies to), so their order is free."""

from app.protection.restores import agent as agent
from app.protection.restores import array as array
from app.protection.restores import disk as disk
from app.protection.restores import mailbox as mailbox
from app.protection.restores import new_vm as new_vm
from app.protection.restores import revert as revert
from app.protection.restores import whole_vm as whole_vm
