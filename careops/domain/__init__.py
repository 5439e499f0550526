"""Records and the rules that keep them valid; no I/O beyond the session."""
