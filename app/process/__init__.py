"""Running as a process: settings from flags and the environment, log lines, serving the app
on its port, and the supervisor of ``--workers N``."""
