"""chatmemory.langgraph: the LangGraph checkpointer on a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import CapabilityReport

from chatmemory.langgraph import DjangoRedisSaver


class SyncDrivenSaver(DjangoRedisSaver):
    """Its async methods run the sync ones: the conformance suite is async only,
    so this is how it exercises the sync path."""

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self.get_tuple(config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        for item in self.list(config, filter=filter, before=before, limit=limit):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self.put(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self.put_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        self.delete_thread(thread_id)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self.copy_thread(source_thread_id, target_thread_id)

    async def aprune(
        self, thread_ids: Sequence[str], *, strategy: str = "keep_latest", keep: int = 1
    ) -> None:
        self.prune(thread_ids, strategy=strategy, keep=keep)


def failures(report: CapabilityReport) -> dict[str, list[str]]:
    return {
        name: result.failures
        for name, result in report.results.items()
        if result.passed is False
    }


@pytest.mark.parametrize("saver_class", [DjangoRedisSaver, SyncDrivenSaver])
async def test_conformance_suite(saver_class: type[DjangoRedisSaver]) -> None:
    @checkpointer_test(name=saver_class.__name__)
    async def factory() -> AsyncIterator[DjangoRedisSaver]:
        yield saver_class()

    report = await validate(factory)
    assert failures(report) == {}
    tested = {name for name, result in report.results.items() if result.passed}
    assert tested == {
        "put",
        "put_writes",
        "get_tuple",
        "list",
        "delete_thread",
        "copy_thread",
        "prune",
    }


def _unused() -> Iterator[None]:
    yield
