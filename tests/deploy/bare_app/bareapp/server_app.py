"""ServerApp: FedAvg over a 3-value array for a few rounds, then writes the result as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    rounds = int(context.run_config["num-server-rounds"])
    min_nodes = int(context.run_config["min-nodes"])
    strategy = FedAvg(
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_train_nodes=min_nodes,
        min_available_nodes=min_nodes,
    )
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord([np.zeros(3, dtype=np.float32)]),
        num_rounds=rounds,
        train_config=ConfigRecord({"lr": 1.0}),
    )
    final = result.arrays.to_numpy_ndarrays()[0]
    out = str(context.run_config["result-file"])
    if out:
        Path(out).write_text(
            json.dumps(
                {
                    "final": final.tolist(),
                    "rounds": rounds,
                    "train_metrics": {
                        str(k): dict(v) for k, v in result.train_metrics_clientapp.items()
                    },
                }
            )
        )
