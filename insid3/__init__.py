"""The ``insid3`` command: wires the commands of every area (core, app, workers, evaluation)."""
