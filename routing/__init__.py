"""Pure routing decisions: dial plan, outgoing decisions, incoming call plans, feature codes.

Floor 1: plain values in, plain values out; no sockets, no clock, no SIP parsing. See docs/routing.md.
"""

from sipcore.speedups import compiled_first

compiled_first(__name__, __path__)  # before the imports below: the mypyc build of the plan (setup.py)

from routing.authorise import Authorisation, Authoriser, AuthoriseRequest, allow_all
from routing.feature_codes import ForwardingChange
from routing.forwarding_store import ForwardingStore, JsonForwardingStore, MemoryForwardingStore
from routing.model import (
    AccountRoute,
    CustomerRoute,
    DialingRules,
    Did,
    DidKind,
    FeatureCode,
    FollowMe,
    ForwardKind,
    ForwardRule,
    ForwardTarget,
    Group,
    GroupMember,
    GroupStrategy,
    RoutingSetup,
    ShowCaller,
    Trunk,
)
from routing.numbering import normalise
from routing.outgoing import Decision, DecisionKind, route_outgoing, route_to_account
from routing.plan import Caller, CallPlan, plan_did, plan_incoming
from routing.plan_events import (
    BranchAnswered,
    BranchBusy,
    BranchFailed,
    BranchNotAnswered,
    BranchUnreachable,
    CancelBranch,
    ConnectBranch,
    Diversion,
    DiversionReason,
    FailCall,
    RingBranch,
)
from routing.refusals import Refusal, RefusalCause
from routing.state import CallState
from routing.trunks import TrunkChoice, format_number, order_trunks

__all__ = [
    "AccountRoute",
    "Authorisation",
    "AuthoriseRequest",
    "Authoriser",
    "BranchAnswered",
    "BranchBusy",
    "BranchFailed",
    "BranchNotAnswered",
    "BranchUnreachable",
    "CallPlan",
    "CallState",
    "Caller",
    "CancelBranch",
    "ConnectBranch",
    "CustomerRoute",
    "Decision",
    "DecisionKind",
    "DialingRules",
    "Did",
    "DidKind",
    "Diversion",
    "DiversionReason",
    "FailCall",
    "FeatureCode",
    "FollowMe",
    "ForwardKind",
    "ForwardRule",
    "ForwardTarget",
    "ForwardingChange",
    "ForwardingStore",
    "Group",
    "GroupMember",
    "GroupStrategy",
    "JsonForwardingStore",
    "MemoryForwardingStore",
    "Refusal",
    "RefusalCause",
    "RingBranch",
    "RoutingSetup",
    "ShowCaller",
    "Trunk",
    "TrunkChoice",
    "allow_all",
    "format_number",
    "normalise",
    "order_trunks",
    "plan_did",
    "plan_incoming",
    "route_outgoing",
    "route_to_account",
]
