"""The teacher stage's rules, apart from its engines: which prompts fit the context, and how an engine's
outputs become trace rows. Pure Python, no vLLM, torch or Ray."""
