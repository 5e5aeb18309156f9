"""What a conversation is, apart from HTTP: sessions and their transitions (the store), the bot
that answers customers, and the signed tokens that say who a request speaks for."""
