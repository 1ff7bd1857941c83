"""Configuration: MCollective-style `server.cfg`/`client.cfg` with `plugin.d/*.cfg` drop-ins.

`parse` reads the key = value format (pure), `files` finds and merges the files
with each value's origin, `settings` turns a merged config into typed settings.
"""
