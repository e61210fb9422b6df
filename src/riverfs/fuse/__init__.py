"""The pyfuse3 adapter: requests in, vfs calls, replies out."""
