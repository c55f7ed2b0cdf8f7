"""The model lab: synthesize speech data, split it, train, evaluate and export one signed bundle.

Pipeline (each step is one module):
``synth`` → ``dataset`` / ``check`` → ``splits`` → ``windows`` (the device's gate + placement)
→ ``features`` → ``train`` → ``graph`` + ``export`` (ONNX bundle) → ``evaluate`` / ``slices``
→ ``runs`` (experiment store).
"""
