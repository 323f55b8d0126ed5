"""Where a method's post-processing choice lives and how predict/evaluate resolve their settings.

``metrics/postprocess_select.py`` chooses the settings on validation tiles; this module stores the choice
in the workdir (``<workdir>/postprocess/<method>.json``, a local model's ``local/<client>`` nests a folder)
and resolves, per setting, flag > stored choice > built-in default.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

from fedtransfer_jax.metrics.postprocess_select import (
    BUILTIN_DEFAULTS,
    SETTING_KEYS,
    SOURCE_BUILTIN,
    SOURCE_CHOSEN,
    SOURCE_FLAGS,
    PostprocessSettings,
)
from fedtransfer_jax.runtime import io_utils

def choice_path(workdir: str, method: str) -> str:
    """``<workdir>/postprocess/<method>.json``; a local model's tag ``local/<client>`` nests a folder."""
    parts = method.split("/")
    if not method or any(p in ("", ".", "..") for p in parts) or os.path.isabs(method):
        raise ValueError(f"invalid method name {method!r} for a post-processing choice")
    return os.path.join(workdir, "postprocess", *parts[:-1], parts[-1] + ".json")


def save_choice(workdir: str, method: str, choice: Mapping[str, Any]) -> str:
    """Stores ``choose``'s result for ``method`` atomically; returns the path."""
    PostprocessSettings.from_dict(choice["settings"])  # Never store what load_choice would reject.
    path = choice_path(workdir, method)
    io_utils.write_json_atomic(path, dict(choice, method=method))
    return path


def settings_tag(model_tag: str, client: str | None) -> str:
    """Which stored choice a model uses: a local model's own (`local/<client>`); for a shared model the one
    chosen on `client`'s own validation tiles when a client is named (`<method>/<client>`, falling back to
    the federation's choice), else the federation's (`<method>`)."""
    if "/" in model_tag or not client:
        return model_tag
    return f"{model_tag}/{client}"


def check_client_settings(workdir: str, method: str, client: str) -> None:
    """``--client`` with a shared model names whose post-processing to use: settings chosen on that client's
    own validation tiles must exist, else a name that is not a client would silently get the federation's."""
    path = choice_path(workdir, f"{method}/{client}")
    if os.path.isfile(path):
        return
    base = os.path.dirname(path)
    have = sorted(n[:-5] for n in os.listdir(base) if n.endswith(".json")) if os.path.isdir(base) else []
    raise ValueError(
        f"--client {client!r}: {method} has no post-processing chosen for that client"
        + (f" (clients with their own: {have})" if have else " (it has none per client)")
        + "; leave --client out to use the federation's choice"
    )


def load_choice(workdir: str, method: str) -> dict[str, Any] | None:
    """The stored choice of ``method`` (``<method>/<client>`` falls back to ``<method>``), or None.

    Raises:
      ValueError: the file exists but is not a valid choice (names the file).
    """
    candidates = [choice_path(workdir, method)]
    if "/" in method:
        candidates.append(choice_path(workdir, method.split("/")[0]))
    for path in candidates:
        if not os.path.exists(path):
            continue
        try:
            with open(path) as f:
                choice = json.load(f)
            choice["settings_obj"] = PostprocessSettings.from_dict(choice["settings"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"{path} is not a valid post-processing choice ({type(e).__name__}: {e}); delete it to fall "
                "back to the built-in defaults, or pass every setting as a flag"
            ) from e
        choice["path"] = path
        return choice
    return None


def resolve_settings(
    workdir: str | None,
    method: str | None,
    overrides: Mapping[str, Any] | None = None,
    builtin_threshold: float | None = None,
) -> tuple[PostprocessSettings, dict[str, Any]]:
    """The settings ``predict``/``evaluate`` use, and where each one came from.

    Precedence per setting: an override (a flag given on the command line, i.e. not None) > the
    method's stored choice (``load_choice``) > ``BUILTIN_DEFAULTS`` (with the config's
    ``eval.threshold`` as ``builtin_threshold``).

    Returns:
      ``(settings, provenance)``; provenance is JSON-able: ``settings``, ``source`` (one of
      ``SOURCE_CHOSEN``/``SOURCE_FLAGS``/``SOURCE_BUILTIN``, or e.g. ``"flags (threshold) over chosen on
      validation tiles"``), ``per_setting`` (key -> source) and ``choice_file`` (path or None).
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = set(overrides) - set(SETTING_KEYS)
    if unknown:
        raise ValueError(f"unknown post-processing settings {sorted(unknown)}; known: {SETTING_KEYS}")
    choice = load_choice(workdir, method) if workdir and method else None
    if choice is not None:
        # A choice says where it was made (validation tiles, or a lab's own images: calibrate.py).
        base, base_source = choice["settings_obj"], str(choice.get("source") or SOURCE_CHOSEN)
    else:
        base, base_source = BUILTIN_DEFAULTS, SOURCE_BUILTIN
        if builtin_threshold is not None:
            base = dataclasses.replace(base, threshold=float(builtin_threshold))
    settings = PostprocessSettings.from_dict({**base.to_dict(), **overrides})
    per_setting = {k: (SOURCE_FLAGS if k in overrides else base_source) for k in SETTING_KEYS}
    if not overrides:
        source = base_source
    elif len(overrides) == len(SETTING_KEYS):
        source = SOURCE_FLAGS
    else:
        source = f"flags ({', '.join(k for k in SETTING_KEYS if k in overrides)}) over {base_source}"
    return settings, {
        "settings": settings.to_dict(),
        "source": source,
        "per_setting": per_setting,
        "choice_file": choice["path"] if choice else None,
    }
