"""Model layer: networks, losses, metrics, full-volume inference, export.

Modules that need torch import it themselves; ``metrics`` and the numpy inference path do
not, so an exported model segments without torch installed.
"""
