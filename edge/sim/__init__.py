"""The fleet simulator: many real agents on synthesized speech, with scenarios that break it.

    scenarios.py       what happens to a device's audio from an onset (noise, level, band, speakers, faults)
    households.py      who speaks on each device: households from a speaker split's pool
    traffic.py         how often: constant gaps, or a diurnal profile in talking sessions
    audio.py           clip pool from a dataset manifest, per-device streams, babble, the audio source
    world.py           what a worker's devices hear: pool, casting, traffic and scenario in one place
    person.py          a simulated person who confirms or corrects decisions (late labels, audits)
    pacing.py          releases audio at --speed, never far ahead of the agent, no catch-up bursts
    device.py          one device: a real ``edge.agent.Agent`` with a simulated microphone
    fleet.py           N devices over K worker processes through a broker; status and result
    offline_device.py  one device's real pipeline on simulated time (no broker)
    offline.py         N such devices over K processes, their windows merged in time order
    cli.py             ``harken sim``
"""
