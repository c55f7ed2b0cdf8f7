"""Field samples in the cloud: assembled from the devices' chunks, stored by content hash, labelled, exported.

    files.py     the sample directory: one WAV file per sample, named by its sha256
    assemble.py  staged chunks → a verified file and a row; stale pieces and retention
    labels.py    labelling rules: a model's labels, who labelled, conflicts
    export.py    a folder-per-label tree of WAVs plus samples.json (what `harken data import` reads)
    control.py   the collector's switches and requests to devices (desired state ``config``)

The wire format is ``shared.samples``; the rows live in the store (``cloud.store.samples`` and
``cloud.store.sample_rows``).
"""
