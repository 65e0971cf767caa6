"""Bulwark: data protection for Microsoft Exchange on VMware vSphere."""

__version__ = "0.1.0"
