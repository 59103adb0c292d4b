"""Tracking layer: the SQLite run store, model selection, alarms, reports."""
