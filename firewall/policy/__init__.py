"""Policies: the YAML schema, loading with file:line:column errors, compiling to rules."""

from firewall.policy.compiler import CompiledRule, Policy, compile_policy
from firewall.policy.errors import PolicyError, PolicyProblem
from firewall.policy.loader import load_policy_file, parse_policy, read_policy

__all__ = [
    "CompiledRule",
    "Policy",
    "PolicyError",
    "PolicyProblem",
    "compile_policy",
    "load_policy_file",
    "parse_policy",
    "read_policy",
]
