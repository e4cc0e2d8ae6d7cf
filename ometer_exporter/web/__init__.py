"""The HTTP side: the aiohttp app and its lifecycle, routes, auth."""
