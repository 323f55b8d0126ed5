"""Orchestration of a training job: assembly from the config (engine), the federation loop, the method
runners, the style-sharing protocol, evaluation, the summary and figures, and loading a finished workdir's
models (inference).

Layering (tests/test_layering.py): engine -> federation -> federated_training -> style_protocol -> runners ->
train -> sweep; each module imports only those before it.
"""
