"""The riverfs command line."""
