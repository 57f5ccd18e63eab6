"""Chat: conversations, ordered persisted messages, history, resume, receipts, typing."""
