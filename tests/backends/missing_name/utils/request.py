"""The backend's request helpers: built on a prompt type vLLM 0.32.0 moved away."""

from vllm.inputs.data import TokensPrompt


def prompt_of(ids):
    return TokensPrompt(prompt_token_ids=ids)
