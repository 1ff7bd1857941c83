"""nmc.ops."""
