"""The bare Flower app of ``benchmarks/federation.py``: a node's error reply stops the
exchange at once with one line (the benchmark then exits instead of waiting its timeout)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Error, Message, Metadata, RecordDict

APP = Path(__file__).resolve().parents[2] / "benchmarks" / "bare_flower_app" / "bare_exchange.py"


def load_app():
    spec = importlib.util.spec_from_file_location("bare_exchange", APP)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def reply(content: RecordDict | Error, src: int = 7) -> Message:
    md = Metadata(run_id=1, message_id="", src_node_id=src, dst_node_id=1,
                  reply_to_message_id="m1", group_id="0", created_at=0.0, ttl=60.0,
                  message_type="train")  # fmt: skip
    return Message(content, metadata=md)


def test_an_echo_counts_its_bytes() -> None:
    app = load_app()
    rec = ArrayRecord(array_dict={"a": Array(np.zeros(16, np.float32))})
    assert app.reply_bytes(reply(RecordDict({"w": rec}))) == rec.count_bytes()


def test_an_error_reply_stops_the_exchange_with_one_line() -> None:
    app = load_app()
    refusal = "fedseg site site1: REFUSED run 5: fedseg/fedseg-bare-exchange 1.0.0\nis not ..."
    with pytest.raises(app.BareExchangeError) as exc:
        app.reply_bytes(reply(Error(code=3, reason=refusal), src=42))
    msg = str(exc.value)
    assert "\n" not in msg
    assert "node 42" in msg and "error 3" in msg and "REFUSED" in msg
