"""The demo organisation, the traffic simulator and the `careops demo` live panel."""
