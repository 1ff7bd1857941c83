"""The read-only web console (`nmc serve console`, docs/console.md).

`data` reads the registry, NMC_JOBS, NMC_AUDIT and NMC_EVENTS with the console's own
certificate (role ``console``: reads only, runs nothing; nmc.security.permissions);
`app` serves them as HTML pages and a JSON API with aiohttp and Jinja2, behind a
random access token. Only `nmc serve console` and `nmc dev up` import this package:
the client commands load neither aiohttp's server nor Jinja2 for it.
"""
