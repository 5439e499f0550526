"""The HTTP API: thin routers that parse, authorise, call one service and shape the answer."""
