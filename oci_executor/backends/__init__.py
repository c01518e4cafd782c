"""The built-in backends, one package each, over one shared floor.

``docker/``, ``podman/``, ``slurm/`` and ``local.py`` are the rooms: each renders the
container's intent in its engine's terms and registers itself. ``shared/`` is the floor they
stand on (archives, the ssh tunnel, pipe channels, CDI devices, the container intent, the
engine base by concern); it imports no backend, and no backend imports another
(``tests/test_architecture.py`` checks both).
"""
