"""``sunbox web``: Sunbox's own live display for the touchscreen and LAN browsers.

Modules, one job each: :mod:`.config` (``/etc/sunbox/web.yaml``), :mod:`.live` (the
latest reading of every device, from MQTT payloads; pure), :mod:`.feed` (the broker
connection), :mod:`.history` (history and daily energy from InfluxDB), :mod:`.server`
(the aiohttp application: pages, JSON API, WebSocket). The front end is built from
``collector/web/`` into ``static/`` (see ``docs/web.md``).
"""
