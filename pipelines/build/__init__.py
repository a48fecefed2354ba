"""A build as a whole: its plan (inputs by content, the no-op decision) and its case cache."""
