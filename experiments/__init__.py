"""Experiment configs (`python launch.py --config experiments/<name>.py[:variant]`) and the scaling study
(`python -m experiments.scaling`); each file's docstring gives its command and cost."""
