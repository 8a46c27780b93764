from __future__ import annotations

from chatmemory import chains, exceptions, llm, records, turn


def test_the_old_module_names_the_new_homes() -> None:
    # chatmemory.chains was split into llm and turn; its names keep working.
    assert chains.ChatTurn is turn.ChatTurn
    assert chains.chat is turn.chat
    assert chains.achat is turn.achat
    assert chains.build_prompt is turn.build_prompt
    assert chains.ModelFailed is exceptions.ModelFailed is turn.ModelFailed
    assert chains.INTERRUPTED == records.INTERRUPTED == "interrupted"
    assert chains.DemoChatModel is llm.DemoChatModel
    assert chains.build_chat_model is llm.build_chat_model
    assert chains.get_chat_model is llm.get_chat_model
    assert chains.describe_failure is llm.describe_failure
    assert chains.demo_reply is llm.demo_reply
    assert chains.is_demo_model is llm.is_demo_model
    assert chains.model_name is llm.model_name
    assert set(chains.__all__) <= set(dir(chains))
