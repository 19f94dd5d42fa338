"""Model code that Shipway copies into Triton model repositories (runs inside Triton)."""
