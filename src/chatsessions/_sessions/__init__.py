"""The layers :class:`chatsessions.AsyncChatSessions` is assembled from, one topic per
module, each built on the one below: core, chats, history, answers, tools, turns."""
