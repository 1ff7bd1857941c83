"""nmc.client."""
