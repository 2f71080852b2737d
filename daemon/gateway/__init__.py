"""The gateway worker: one call's roles, plugin chain, tool dispatch and audit record
(authentication and routing happen before, in the master: daemon/front/)."""
