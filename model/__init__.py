"""microturn models: encoders, interaction models, speech synthesis, the embedded LLM."""
