"""Sunbox collector: reads batteries and solar chargers over BLE and publishes to MQTT."""

__version__ = "0.1.0"
