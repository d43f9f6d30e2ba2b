"""ONI's asynchronous annotation server: actors submit messages, an LLM labels them in batches, labels persist."""
