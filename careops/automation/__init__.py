"""Automation: declarative rules (trigger, condition, actions) in versioned YAML workflow templates
with location overlays, run by an engine that reads the audit chain, sweeps timers by due time and
fires scheduled actions once per tick. See docs/automation.md."""
