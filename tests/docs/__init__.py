"""The documentation: README quick start, recipes, version and changelog."""
