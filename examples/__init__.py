"""Examples of services that work with Switchboard."""
