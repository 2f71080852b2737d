"""The gateway worker: auth, routing, permissions, plugin chain, dispatch."""
