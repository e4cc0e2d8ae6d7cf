"""The Ollama client: the one stage that speaks Ollama's wire format."""
