"""Routing (docs/routing.md): the moves of a conversation between the queue and agents, and the
router that offers waiting conversations to agents and runs the queue's timers."""
