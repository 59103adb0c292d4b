"""The aggregator names deployed nodes by their enrolled key, never by the name they claim."""

from __future__ import annotations

import json
from pathlib import Path

from fedseg.federation.security.enrollment import enrolled_nodes
from fedseg.run_folder import ENROLLED_NODES_FILE


def test_enrolled_nodes_map_node_ids_to_enrolled_names(tmp_path: Path) -> None:
    assert enrolled_nodes(tmp_path) is None  # a simulation has no enrollment record
    registry = {
        "hospital-a": {"node_id": 11, "public_key": "ecdsa-sha2-nistp384 AAAA"},
        "hospital-b": {"node_id": 42, "public_key": "ecdsa-sha2-nistp384 BBBB"},
    }
    (tmp_path / ENROLLED_NODES_FILE).write_text(json.dumps(registry))
    assert enrolled_nodes(tmp_path) == {11: "hospital-a", 42: "hospital-b"}
