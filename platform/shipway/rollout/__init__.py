"""Progressive delivery, shared by local mode and the Kubernetes operator.

The pure engine (``canary``, ``experiment``, ``checks``, ``shadow``, ``counts``,
``state``, ``codec``), the controller around it (``controller``, over the ports of
``ports``, a rollout's whole memory in ``status``), and in-memory fakes of the ports
(``testing``). No control-plane part is imported here (an import contract in the
tests keeps it so).
"""
