"""Venue profiles: how the simulated venue behaves (order latency, feed latency, fills, queue
position, depth of size-less quotes), one profile per venue × kind, versioned on its own.

A profile is a property of the venue, not of a strategy: no strategy parameter and no critic
suggestion can change it (:data:`profile.VENUE_SETTINGS` names what a suggestion may not touch).
``profile.py`` holds the settings, their validation and versions; ``latency.py`` turns a
profile's order latency into what each engine takes; ``sensitivity.py`` the realism scenarios
(latency ×0/×2/×5, fees ×1.5) a slice is re-run under. Plain Python: no Dagster, no engine
imports at module load.
"""
