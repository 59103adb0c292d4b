"""The Flower engine layer: the only modules that import ``flwr``.

Server and client apps, the app bundle, the message encoding, the processes (SuperLink,
SuperNodes) and the gateway that keeps the Control API off the site-facing port.
"""
