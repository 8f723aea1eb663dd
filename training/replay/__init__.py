"""Counterfactual Noise Replay in the study (seed 002 §4; issue 21; plan ``replay``, D10).

- ``plan``: the plan's ``replay`` section as a typed object;
- ``segment``: a base run's segment regenerated, as a ``gradnoise.replay.Trajectory``;
- ``candidates``: the registered candidate noises, maps of the recorded draws;
- ``metrics``: the metrics replay predicts, functions of a parameter dict;
- ``retrain``: the segment retrained with a candidate's noise (what a prediction stands for);
- ``case``: one base run and switch point: predictions and retrains as tidy tables;
- ``python -m training.replay``: the command (``predict`` and ``validate``).

What a base run saves for replay is ``training.recording`` (the loop imports it). The
mathematics is in the noise library, ``gradnoise.replay``.
"""
