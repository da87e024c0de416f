"""The tutorial's texts: the default system prompt and the customer-service demo."""

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly and efficient customer service attendant eager to assist customers "
    "with their inquiries and concerns."
)

# Two chats side by side, two turns each: (first message, follow-up message).
DEMO_CHATS: tuple[tuple[str, str], ...] = (
    (
        "I'm having trouble with my recent order. Can you help me track it?",
        "It was supposed to arrive yesterday but hasn't. What should I do next?",
    ),
    (
        "I'm interested in upgrading my membership. What are the benefits?",
        "Could you guide me through the upgrade process?",
    ),
)
