"""Approvals: policy tables that choose a chain, the chains' steps with escalation and fallback,
delegation, separation of duties, signed decision links, traces and the what-if tool."""
