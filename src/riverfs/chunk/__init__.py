"""Block store: object naming, block encoding, disk cache, uploads and downloads."""
