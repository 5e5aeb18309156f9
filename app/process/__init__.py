"""Running as a process: settings from flags and the environment, log lines, and the
supervisor of ``--workers N``."""
