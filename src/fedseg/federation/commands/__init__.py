"""Commands built on the engine and the round loop: the one engine run (``engine_run``:
simulate, resume and server start), the watch of a running federation, deploy (server and
site), compare plans, the demo, and the run folder they create.
"""
