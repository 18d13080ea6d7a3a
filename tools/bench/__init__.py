"""Side-by-side benchmark harness: Fabric against Redis Streams and NATS JetStream.

Entry point: ``python tools/bench/run.py`` (see README.md beside this file).

Layout: ``core`` holds the result types and the ``System`` contract every runner implements;
``procs`` owns server and client processes; ``deps`` installs what a run needs; ``report``
renders the table and the JSON; ``scaling`` is the Fabric-only scaling mode; ``systems/`` has one
module per system under test.
"""
