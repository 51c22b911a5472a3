"""Ansible's ``linear`` strategy run over Mitogen (ansible.cfg ``strategy``).

Mitogen (https://mitogen.networkgenomics.com, pinned in requirements-ansible.txt) keeps one
Python interpreter per host for the whole run and sends it each module once, instead of
ansible-core's copy-and-start of a fresh interpreter per task. A task on a Pi then costs a
fraction of a second instead of 1-2 s, and the whole play on the virtual Pi (software
emulation, where Python starts about ten times slower) several minutes less; measured
figures in docs/virtual-pi.md.

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
