"""``harken serve``: a prediction server for thin clients that is, to the fleet, one more device.

``service`` wires it (the agent, a fresh gate per request, wall-clock windows), ``inputs``
decodes request bodies, ``app`` is the HTTP front (FastAPI, the ``serve`` extra), ``metrics``
its Prometheus counters, ``config`` its settings, ``cli`` the command.
"""
