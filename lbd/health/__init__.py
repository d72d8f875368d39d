"""Health checks, as HAProxy does them.

- ``state``: the rise/fall counter and the clock-driven check loop (decides UP/DOWN, when to check).
- ``probes``: tcp, http, mysql and galera checks; each reports a result with HAProxy's check status.
- ``mysql``: the small part of the MySQL client protocol the mysql and galera checks speak.
- ``checker``: ``make_checker(reactor, server)``, one ``ServerChecker`` per checked server, wiring
  a probe and the loop to the pool (``Backend.set_operational``) and the server's check fields.
"""
