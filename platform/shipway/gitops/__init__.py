"""GitOps: ``shipway.yaml``, the declarative release spec kept in a model's Git repository.

``spec`` parses and validates it (pure), ``plan`` compares it with what the platform
holds and says what to do (pure); ``shipway.services.gitops`` carries the plan out.
"""
