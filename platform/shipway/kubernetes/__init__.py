"""Kubernetes mode of the control plane (``SHIPWAY_RUNTIME=kubernetes``).

Deploy and status write and read ``ModelDeployment`` resources (``shipway.io/v1alpha1``)
that the operator (``operators/shipway_operator``) reconciles into Triton workloads:

- ``resource``: pure — a deployment request to the resource's body, and the resource
  (with its pods) back to the API's view of a deployment;
- ``model_deployments``: the adapter to the API server (the ``kubernetes`` client);
- ``archives``: a build's Triton model repository as the ``.tar.gz`` pods fetch;
- ``service``: deploy / get / list / delete in this mode, for ``services.deployments``.
"""
