"""Route tables of the two sub-apps: chatbot (customer side) and workbench (agent side)."""
