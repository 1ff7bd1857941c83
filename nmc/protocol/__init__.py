"""nmc.protocol."""
