"""How weights travel: float32 as they are, or float16 on the wire (plan ``transfer``).

With ``transfer: {weights: float16}`` the global model sent to the sites and the weights
they send back travel as float16 and are cast back to float32 on arrival: training,
aggregation and the checks (``aggregation.check_update``'s dtype check included) see float32
arrays, and the bytes of a round's weights halve. Only float32 arrays are cast, and only
those whose values fit float16 (finite, |x| <= 65504; one that does not travels as float32);
integer, boolean and other floating arrays travel as they are. Optimizer states always
travel as float32: Adam's second moments are often below float16's smallest value.

``to_wire`` gives the arrays to send and the names of those it cast; ``from_wire`` takes
exactly those back to float32 (an array named there that is not float16 is left as it is,
for the checks to reject). The engine sends the names with the arrays (``engine.messages``);
the in-process transport of ``compare`` does the same round trip (``local_transport``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import get_args

import numpy as np

from fedseg.federation.rounds.aggregation import n_bytes
from fedseg.model.weights import Weights
from fedseg.plan import TransferConfig, TransferDtype

TRANSFER_DTYPES: tuple[TransferDtype, ...] = get_args(TransferDtype)
DEFAULT_TRANSFER: TransferDtype = TransferConfig().weights

_F16_MAX = float(np.finfo(np.float16).max)


def transfer_dtype(text: str) -> TransferDtype:
    """``text`` as a transfer dtype; a ValueError naming the choices otherwise."""
    for dtype in TRANSFER_DTYPES:
        if text == dtype:
            return dtype
    choices = ", ".join(TRANSFER_DTYPES)
    raise ValueError(f"transfer dtype {text!r} is unknown; choose one of {choices}")


def to_wire(weights: Mapping[str, np.ndarray], dtype: TransferDtype) -> tuple[Weights, list[str]]:
    """(the arrays to send, the names of those cast from float32 to float16)."""
    if dtype == "float32":
        return dict(weights), []
    out: Weights = {}
    cast: list[str] = []
    for k, v in weights.items():
        if v.dtype == np.float32 and (v.size == 0 or float(np.abs(v).max()) <= _F16_MAX):
            out[k] = v.astype(np.float16)
            cast.append(k)
        else:
            out[k] = v
    return out, cast


def from_wire(arrays: Weights, cast: list[str]) -> Weights:
    """``arrays`` with the float16 arrays named in ``cast`` back in float32 (in place)."""
    for k in cast:
        v = arrays.get(k)
        if v is not None and v.dtype == np.float16:
            arrays[k] = v.astype(np.float32)
    return arrays


def round_trip(weights: Mapping[str, np.ndarray], dtype: TransferDtype) -> tuple[Weights, int]:
    """``weights`` as they arrive after travelling as ``dtype``, and the array bytes sent."""
    wire, cast = to_wire(weights, dtype)
    sent = n_bytes(wire)
    return from_wire(wire, cast), sent
