"""Federation: plans, aggregation math, strategies, and the Flower engine layer."""
