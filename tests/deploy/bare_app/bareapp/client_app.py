"""ClientApp: adds the number in ``<data-dir>/value.txt`` to the array (one "round").

``<data-dir>`` comes from the SuperNode's node config (``fedseg site start --data``), so the
result proves which site folders took part. A ``delay.txt`` there makes training that long
(seconds), after writing ``training.started``: the tests kill a site at that moment.
"""

from __future__ import annotations

import time
from pathlib import Path

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    data_dir = Path(str(context.node_config["data-dir"]))
    value = float((data_dir / "value.txt").read_text())
    delay_file = data_dir / "delay.txt"
    if delay_file.exists():
        (data_dir / "training.started").write_text(str(time.time()))
        time.sleep(float(delay_file.read_text()))
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    content = RecordDict(
        {
            "arrays": ArrayRecord([a + value for a in arrays]),
            "metrics": MetricRecord({"num-examples": 1, "site-value": value}),
        }
    )
    return Message(content=content, reply_to=msg)
