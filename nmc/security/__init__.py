"""nmc.security."""
