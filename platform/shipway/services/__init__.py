"""Use cases of the control plane: what the API and CLI ask for, with validation first."""
