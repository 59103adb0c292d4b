"""Bare Flower app for the deployment tests: averages one small array, no torch."""
