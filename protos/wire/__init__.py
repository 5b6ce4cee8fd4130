"""The node-orchestrator contract beyond the generated messages: what both sides
import and neither owns.

- ``channel``: message limits and channel options of both services;
- ``errors``: gRPC failures mapped to the project's exceptions, at one boundary;
- ``trust``: the deny-list and trust-digest formats;
- ``tasks``: the task kinds a node carries out for the orchestrator;
- ``rules``: the input rules a node applies to what it is asked to run;
- ``nodeclient``: calling a node's NodeService with a capability token;
- ``grants``: long-lived streams end with their grant (token expiry, revocation);
- ``leader``: how a follower sends callers to the leader, and the callers' list of
  orchestrator addresses.

Operation names and their token fields are in ``protos.ops``.
"""
