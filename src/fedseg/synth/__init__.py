"""ModalityBank synthesis: the generator's own training unit (one local round of a site),
its validation, completion of a site's missing modality and sampling of releasable data.
A sibling of ``train`` (segmentation's unit); imports model and data, never train."""
