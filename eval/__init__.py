"""Evaluation: metrics, the compared methods, the ``memory-agent eval`` harness, reports.

Submodules are imported on use (``from eval.metrics import token_f1``) so that
the metrics stay cheap to import for training rewards: ``eval.methods`` and
``eval.harness`` pull in the pipeline and its models.
"""

__all__ = ["metrics", "methods", "harness", "report"]
