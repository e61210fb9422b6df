"""The maintenance tools: each takes a Volume (vfs/volume.py) and only orchestrates: gc,
fsck, and later bench, info and warmup.

The scans and repairs they run are Meta's (meta/inventory.py, public Meta methods); tools/
sits above vfs/ and below cli/ in the import order, so the mount never imports a tool.
"""
