"""The Kubernetes operator (kopf): turns ``ModelDeployment`` resources into Triton
Deployments, Services, HorizontalPodAutoscalers and PodDisruptionBudgets per variant.

Layout: ``crds/`` the CustomResourceDefinition; ``spec`` the typed spec; ``manifests``
and ``status`` pure builders and decisions; ``kube`` the one API adapter; ``errors`` the
map of API failures to kopf's errors; ``reconcile`` the reconcile step; ``handlers`` the
kopf handlers (composition root in its startup handler); ``fetch`` the init container
that fetches http(s) model repositories. ``python -m shipway_operator`` runs it.
"""
