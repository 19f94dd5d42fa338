"""Models and inputs that ship with Shipway's dependencies, for the demo, tests and benchmarks."""
