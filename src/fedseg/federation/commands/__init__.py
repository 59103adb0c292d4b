"""Commands built on the engine and the round loop: simulate, deploy, resume, compare
plans, the demo, and the run folder they create.
"""
