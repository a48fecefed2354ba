"""Tools over published versions: validate, inspect, diff, export, report."""
