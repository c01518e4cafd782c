"""What backends share: nothing here imports a backend.

- :mod:`.intent`: the one translation of a ``ContainerSpec`` into the container's intent;
- :mod:`.engine`: the base of SDK-driven engines (Docker, Podman), split by concern;
- :mod:`.archive`, :mod:`.pipes`, :mod:`.ssh`, :mod:`.cdi`, :mod:`.sdk`, :mod:`.sdk_errors`:
  tar archives, pipe channels, the ssh tunnel, CDI device names, SDK readers and error mapping.
"""
