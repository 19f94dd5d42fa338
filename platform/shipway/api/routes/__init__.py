"""Route modules, one per resource; each stays thin: parse, call a service, return."""
