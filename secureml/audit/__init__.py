"""Audits: membership inference, empirical privacy, the data audit and the risk scorecard.

    from secureml.audit import audit_dataset, anonymize_texts, load_policy
    from secureml.audit.membership import audit_membership   # imports TensorFlow

`secureml audit RUN_DIR` runs them on a finished run folder; as an evaluation stage,
`evaluation: {membership: {...}}` in a run config audits every variant. See docs/audit.md.
"""
from .data_audit import DataAuditOptions, audit_dataset
from .empirical import epsilon_from_rates, epsilon_lower_bound, one_run_epsilon_lower_bound
from ..data.pii import anonymize_dataset, anonymize_texts, scan_texts
from .scorecard import Policy, load_policy, score

__all__ = ["DataAuditOptions", "Policy", "anonymize_dataset", "anonymize_texts", "audit_dataset",
           "epsilon_from_rates", "epsilon_lower_bound", "load_policy",
           "one_run_epsilon_lower_bound", "scan_texts", "score"]
