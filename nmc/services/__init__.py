"""nmc.services."""
