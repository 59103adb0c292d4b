"""Synthetic multi-site BraTS data from the SRI24 atlas (see ``generate`` for the API)."""

from fedseg.data.synth.config import BadKind, SiteProfile, SynthConfig
from fedseg.data.synth.generate import (
    SynthCase,
    generate_dataset,
    make_tiny_dataset,
    read_held_out,
    read_record,
    synth_case,
)

__all__ = [
    "BadKind",
    "SiteProfile",
    "SynthCase",
    "SynthConfig",
    "generate_dataset",
    "make_tiny_dataset",
    "read_held_out",
    "read_record",
    "synth_case",
]
