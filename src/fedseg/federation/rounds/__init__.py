"""The round loop and its math, engine-free: coordinator, a site's side, strategies,
aggregation, optimizer state, participation, and the task values they exchange.
"""
