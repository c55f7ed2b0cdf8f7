"""The fleet simulator: many real agents on synthesized speech, with scenarios that break it.

    scenarios.py   what happens to a device's audio from an onset (noise, level, band, speakers, faults)
    audio.py       clip pool from a dataset manifest, per-device streams, babble, the audio source
    person.py      a simulated person who confirms or corrects decisions (late labels)
    pacing.py      releases audio at --speed, never far ahead of the agent, no catch-up bursts
    device.py      one device: a real ``edge.agent.Agent`` with a simulated microphone
    fleet.py       N devices over K worker processes; status and result
    cli.py         ``harken sim``
"""
