"""The Kubernetes operator (kopf): turns ``ModelDeployment`` resources into Triton
Deployments, Services, autoscalers and routes with the shared rollout engine.

Not written yet: this source root is laid out so the layout stays as DESIGN.md fixes it.
"""
