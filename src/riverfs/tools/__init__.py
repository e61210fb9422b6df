"""The maintenance and inspection tools, below the CLI: gc and fsck take a Volume and only
orchestrate (the scans and repairs they run are Meta's: meta/inventory.py, public Meta
methods); bench runs on any directory; stats and profile read a mount's `.riverfs/` files.
`riverfs info` and `riverfs warmup` ask a mount's daemon through virtual xattrs, whose
daemon side is vfs/introspect.py, vfs/info.py and vfs/warmup.py (the mount serves them).

tools/ sits above vfs/ and below cli/ in the import order, so the mount never imports a tool.
"""
