"""agent-firewall: a message firewall for multi-agent AI systems.

The public API is small: load a policy, build an engine, inspect exchanges; or run the
proxy in front of an agent stack.

    from firewall import Engine, load_policy_file
    engine = Engine(load_policy_file("policies/default.yaml"))
    decision = engine.inspect(exchange)
"""

from firewall.engine import Engine
from firewall.model import (
    Action,
    Decision,
    DetectorRun,
    Direction,
    Exchange,
    Finding,
    Message,
    Mode,
    Part,
    PartKind,
    Rewrite,
    Span,
    ToolCall,
)
from firewall.policy import Policy, PolicyError, PolicyProblem, load_policy_file

__version__ = "0.1.0"

__all__ = [
    "Action",
    "Decision",
    "DetectorRun",
    "Direction",
    "Engine",
    "Exchange",
    "Finding",
    "Message",
    "Mode",
    "Part",
    "PartKind",
    "Policy",
    "PolicyError",
    "PolicyProblem",
    "Rewrite",
    "Span",
    "ToolCall",
    "load_policy_file",
]
