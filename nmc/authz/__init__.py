"""nmc.authz."""
