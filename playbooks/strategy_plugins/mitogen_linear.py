"""Ansible's ``linear`` strategy run over Mitogen (ansible.cfg ``strategy``).

Mitogen (https://mitogen.networkgenomics.com, pinned in requirements-ansible.txt) keeps one
Python interpreter per host for the whole run and sends it each module once, instead of
ansible-core's copy-and-start of a fresh interpreter per task. On the virtual Pi (software
emulation, where Python starts about ten times slower) a task that changes nothing went
from 2.4-5.5 s to 0.1-0.7 s; the figures are in docs/virtual-pi.md (a Pi is not measured).

Mitogen ships its strategies as plugins inside its package, whose path depends on where
the virtual environment lives and on its Python version. This file gives them a fixed
path beside the playbooks: it builds the same class Mitogen's own ``mitogen_linear``
plugin builds, from the installed ``ansible_mitogen`` package.
"""

from __future__ import annotations

import ansible_mitogen.loaders
import ansible_mitogen.strategy

_linear = ansible_mitogen.loaders.strategy_loader.get("linear", class_only=True)


class StrategyModule(ansible_mitogen.strategy.StrategyMixin, _linear):  # type: ignore[misc,valid-type]
    """ansible-core's linear strategy with Mitogen's connection and module execution."""
