"""EEG signal pieces (numpy, scipy, pyedflib): no I/O besides files, no asyncio.

- :mod:`media.eeg.ring`: samples of a stream by absolute index, with explicit gaps;
- :mod:`media.eeg.views`: raw, anti-alias decimated, and min/max envelope views;
- :mod:`media.eeg.synth`: a realistic synthetic EEG source;
- :mod:`media.eeg.edf`: EDF+/BDF+ export and reading;
- :mod:`media.eeg.lsl`: a Lab Streaming Layer source (optional ``lsl`` extra).
"""
