"""Our own FUSE transport: the kernel ABI (protocol), the session (device, read loop,
dispatch, notifications) and the request handlers (operations)."""
