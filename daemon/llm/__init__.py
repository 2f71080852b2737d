"""The AI gateway's parts that know the LLM APIs (OpenAI, Anthropic): their settings,
their wire shapes, and the provider clients a gateway worker uses."""
