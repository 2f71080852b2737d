"""A2A, the agent gateway: peers' settings and cards, the JSON-RPC binding, the peer
client and the task ownership store (see daemon/front/a2a_http.py for the routes and
daemon/gateway/a2a_calls.py for a message's governance)."""
