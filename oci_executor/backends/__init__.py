"""Built-in backends: ``local``, ``docker`` and ``podman``, one module each."""
