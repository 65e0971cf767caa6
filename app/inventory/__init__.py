"""The vSphere estate in Bulwark's database: sync from vCenter, Exchange discovery."""
