"""ClientApp: adds the site's node-config value `site-value` to the array (one "round")."""

from __future__ import annotations

import time

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    value = float(context.node_config.get("site-value", 1.0))
    delay = float(context.node_config.get("delay-s", 0.0))
    if delay:
        time.sleep(delay)
    updated = [a + value for a in arrays]
    content = RecordDict(
        {
            "arrays": ArrayRecord(updated),
            "metrics": MetricRecord({"num-examples": 1, "site-value": value}),
        }
    )
    return Message(content=content, reply_to=msg)
