"""Commands built on the engine and the round loop: the one engine run (``engine_run``:
simulate, resume and server start), the watch of a running federation, deploy (server and
site), compare plans, leave-one-site-out runs, the demo, the run folder they create, and the
federation's baseline, centralized training (``central_training``: ``fedseg train``), which
writes the same run store as a federation.
"""
