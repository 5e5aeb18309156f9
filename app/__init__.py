"""The Switchboard application: settings, backends, and the root app that mounts the sub-apps."""
